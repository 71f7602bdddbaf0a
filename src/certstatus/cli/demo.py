"""`certstatus demo`: the whole status service on SQLite in one process (body in demo/run.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from certstatus.cli import note, progress_bar, user_errors


@click.command(short_help="A whole status service on SQLite, for a laptop.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("certstatus-demo"),
    show_default=True,
    help="Directory of the demo CA, certificates, config and database; reused if it exists.",
)
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    help="host:port the responder serves OCSP and CRLs on (a new directory only).",
)
@click.option(
    "--certs",
    "count",
    type=click.IntRange(1, 10_000_000),
    default=1000,
    show_default=True,
    help="Leaf certificates to issue (1% revoked) when the directory is new.",
)
@click.option(
    "--cache",
    is_flag=True,
    help="Also put a local Varnish in front (needs varnish and varnish-modules).",
)
@click.option(
    "--api-listen",
    default="127.0.0.1:8443",
    show_default=True,
    help="host:port of the issuance API (mutual TLS; a new directory only).",
)
@click.option(
    "--pkcs11",
    is_flag=True,
    help="Keep the CA and responder keys in a SoftHSM2 token in DIR/hsm (needs softhsm2).",
)
def demo(
    directory: Path, listen: str, count: int, cache: bool, api_listen: str, pkcs11: bool
) -> None:
    """A whole status service on SQLite in one process: CA, certificates, signing, OCSP, CRLs
    and the monitor's status page, until Ctrl-C."""
    from certstatus.cache.varnish import CacheError
    from certstatus.demo.run import DemoError, Terminal, run_demo
    from certstatus.demo.softhsm import SoftHsmMissing

    term = Terminal(say=note, show=click.echo, progress=progress_bar)

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C: what was started is stopped, not left

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with user_errors(DemoError, CacheError, SoftHsmMissing):
            run_demo(directory, listen, count, cache, term, api_listen, pkcs11)
    except KeyboardInterrupt:
        note("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
    note("stopped cleanly")
