"""`certstatus monitor`: the outside view of a deployment, run apart from the responders."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from certstatus.cli import config_option, load, note, user_errors


@click.command(short_help="Watch responders and CRLs from outside.")
@config_option
def monitor(config_path: Path) -> None:
    """The outside view: the 15-minute watchdog, older-serial sampling, replication and CRL
    checks, a status page and /metrics (run it apart from the responders)."""
    from certstatus.monitor.service import Monitor

    with user_errors():
        config = load(config_path)
        watcher = Monitor(config)
        watcher.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    targets = ", ".join(f"{t.name} {t.url}" for t in watcher.targets)
    note(f"monitor watching {targets}; status page {watcher.url} — Ctrl-C stops")
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    watcher.stop()
