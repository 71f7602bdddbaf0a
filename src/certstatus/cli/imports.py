"""`certstatus import crl`: moving from another system, whose last CRL brings the revocations."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click

from certstatus.cli import config_option, load, note, user_errors
from certstatus.cli.records import open_ingest
from certstatus.crl.reading import CrlReadError, read_crl
from certstatus.ingest.api import IngestError
from certstatus.ingest.crlimport import import_crl


@click.group("import", short_help="Import another system's records (its CRL).")
def import_group() -> None:
    """Bring what another status system knows into certstatus. Certificates come first
    (`certstatus add` or the API), then the revocations of the issuer's last CRL."""


def _when(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@import_group.command("crl", short_help="Record the revocations an issuer's CRL lists.")
@config_option
@click.option("--issuer", required=True, help="Issuer name from the configuration.")
@click.argument("file", type=click.Path(path_type=Path))
def crl_command(config_path: Path, issuer: str, file: Path) -> None:
    """Record the revocations listed in FILE (a PEM or DER CRL), which must be signed by the
    configured issuer's key. Each entry is revoked with its revocationDate and its CRLReason
    (unspecified when it has none), by the rules of `certstatus revoke` (R7), audit-logged as
    import-crl. Every entry is checked before anything is written: a CRL of another issuer, an
    altered one, or an entry the rules refuse writes nothing.

    Serials the CRL lists that are not recorded here are reported, not invented: add their
    certificates and import the CRL again (what is already revoked is counted unchanged)."""
    with user_errors():
        config = load(config_path)
        ingest = open_ingest(config, existing=True)
        material = ingest.material(issuer)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise IngestError(f"{file}: cannot read: {exc.strerror or exc}") from None
        try:
            listing = read_crl(data, material.certificate, issuer)
        except CrlReadError as exc:
            raise IngestError(f"{file}: {exc}; nothing recorded") from None
        try:
            result = import_crl(ingest, issuer, listing, int(time.time()))
        except IngestError as exc:
            raise IngestError(f"{file}: {exc}") from None
    number = "without a CRLNumber" if listing.number is None else f"number {listing.number}"
    click.echo(
        f"CRL {number} of {issuer!r} (thisUpdate {_when(listing.this_update)}): "
        f"{result.listed} entries; revoked {result.revoked}, unchanged {result.unchanged}, "
        f"not recorded {result.unknown}"
    )
    if result.unknown:
        shown = ", ".join(f"{s:x}" for s in result.unknown_examples)
        more = ", ..." if result.unknown > len(result.unknown_examples) else ""
        note(
            f"{result.unknown} serials on the CRL are not recorded here and were not revoked "
            f"({shown}{more}); add their certificates, then import the CRL again"
        )
