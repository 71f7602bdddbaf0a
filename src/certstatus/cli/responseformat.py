"""`certstatus response-format`: how the signers store and pregenerate responses, one setting
for the whole deployment, kept in the database (store/responseformat.py)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from certstatus.cli import config_option, load, user_errors
from certstatus.store.base import ResponseFormat


def _lines(current: ResponseFormat) -> list[str]:
    once = "on" if current.certs_stored_once else "off (whole responses)"
    sha256 = "signed on request" if current.sha256_on_request else "pregenerated"
    return [f"responder certificate stored once: {once}", f"SHA-256 CertID responses: {sha256}"]


@click.command("response-format", short_help="Show or switch how responses are stored.")
@config_option
@click.option(
    "--certs-stored-once",
    type=click.Choice(["on", "off"]),
    help="on: store each response without its responder certificate (kept once). Only once "
    "no process of a release before schema 10 reads responses.",
)
@click.option(
    "--sha256",
    type=click.Choice(["pregenerate", "on-request"]),
    help="on-request: pregenerate only SHA-1 CertID responses; a SHA-256 one is signed once a "
    "client asks for it (that client gets tryLater first). Only once every process that reads "
    "responses runs schema 12 or later.",
)
def response_format(config_path: Path, certs_stored_once: str | None, sha256: str | None) -> None:
    """Show how signers store and pregenerate responses, or switch it. One setting for every
    signer, web node and monitor of the deployment; running signers follow from their next
    batch, the monitor within 30 s. Each change is an entry in the audit log."""
    from certstatus.ingest.api import operator_actor
    from certstatus.store import open_existing_store
    from certstatus.store.base import AuditContext

    with user_errors():
        config = load(config_path)
        store = open_existing_store(config.database, config.base_dir)
        where = getattr(store, "where", config.database)
        try:
            current = store.response_format()
            wanted = ResponseFormat(
                current.certs_stored_once
                if certs_stored_once is None
                else certs_stored_once == "on",
                current.sha256_on_request if sha256 is None else sha256 == "on-request",
            )
            if wanted != current:
                context = AuditContext(operator_actor(), action="response-format")
                store.set_response_format(wanted, context, int(time.time()))
        finally:
            store.close()
    click.echo(f"database: {where}")
    for line in _lines(wanted):
        click.echo(line)
    if wanted != current:
        click.echo("changed: signers follow from their next batch")
    elif certs_stored_once is not None or sha256 is not None:
        click.echo("unchanged: it was already so")
