"""`certstatus sign`, `signer` and `serve`: signing responses ahead of time and serving them."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import click

from certstatus.cli import config_option, load, note, progress_bar, user_errors
from certstatus.store import open_existing_store
from certstatus.wiring import background_signer, register_issuers


@click.command(short_help="Sign every response that is due, once.")
@config_option
def sign(config_path: Path) -> None:
    """Sign every response that is due, once, with a progress bar."""
    from certstatus.signer import Signer

    with user_errors():
        config = load(config_path)
        materials, ids = register_issuers(config, existing=True)
        store = open_existing_store(config.database, config.base_dir)
        total = sum(store.due_count(int(time.time())).values())
        with (
            progress_bar(total, "signing") as advance,
            Signer(store, materials, ids, config.signing) as signer,
        ):
            stored = signer.sign_due(progress=advance)
    click.echo(f"stored {stored} response pairs (SHA-1 and SHA-256 CertIDs)")


@click.command(short_help="Keep signing, forever (the signer alone).")
@config_option
def signer(config_path: Path) -> None:
    """Keep signing: new and revoked certificates within a second, refreshes on schedule."""
    with user_errors():
        config = load(config_path)
        materials, ids = register_issuers(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with background_signer(config, materials, ids):
        note("signer running; Ctrl-C stops it")
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass


@click.command(short_help="Serve OCSP and CRLs (and sign, if configured).")
@config_option
def serve(config_path: Path) -> None:
    """Serve OCSP and CRLs (and run the signing roles beside the server when the
    configuration says run_signer = true)."""
    from certstatus.responder.server import (
        CompanionDied,
        ensure_companion_addresses_free,
        ensure_listen_address_free,
    )
    from certstatus.responder.server import serve as run

    with user_errors(CompanionDied):
        config = load(config_path)
        ensure_listen_address_free(config)  # before saying "serving": it may not
        ensure_companion_addresses_free(config, with_monitor=False)
        r = config.responder
        serving = (
            f"serving OCSP on http://{r.listen_host}:{r.listen_port}/ "
            f"({r.server}, {r.process_count} worker(s)"
            f"{', with signer' if r.run_signer else ''})"
            + (f"; /metrics and /sources on http://{r.admin_listen}/" if r.admin_listen else "")
        )
        run(config, announce=lambda: note(serving))  # once the database and keys are checked
