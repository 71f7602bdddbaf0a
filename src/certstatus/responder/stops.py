"""Stop signals (SIGTERM, SIGINT) held across the fork of each granian worker and released
once the worker's loop runs: see server.py, _default_stop_signals. Its own module so that the
workers' app (rsgi.py) needs nothing else of the server."""

from __future__ import annotations

import signal

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def hold_stop_signals() -> None:
    """Before the server forks a worker: stops are held (blocked) across the fork."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def release_stop_signals() -> None:
    """Stops held meanwhile reach their handler now: in the server after each fork, and in a
    worker once its event loop runs (RsgiResponder.__rsgi_init__ schedules it there)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
