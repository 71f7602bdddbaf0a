"""`certstatus add`, `revoke` and `stats`: what the CA tells the status system, and its counts."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click

from certstatus.cli import config_option, load, user_errors
from certstatus.config import Config, load_issuer_material
from certstatus.ingest.api import Ingest, IngestError, parse_serial
from certstatus.ocsp.reasons import NAMES
from certstatus.store import open_store


def _ingest(config: Config) -> Ingest:
    materials = load_issuer_material(config)
    return Ingest(open_store(config.database, config.base_dir), materials)


@click.command(short_help="Record certificates and precertificates.")
@config_option
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def add(config_path: Path, files: tuple[Path, ...]) -> None:
    """Record certificates and precertificates (PEM, multi-PEM or DER) before they are
    published (F2). Every file is checked before anything is recorded."""
    with user_errors():
        ingest = _ingest(load(config_path))
        result = ingest.add_files(list(files), int(time.time()))
    click.echo(f"added {result.added}, already known {result.existing}")


def parse_time(value: str | None, option: str = "--time") -> int | None:
    """`--time` as Unix seconds: ISO 8601 with a timezone, so no operator's clock is guessed."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise IngestError(
            f"{option} {value!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise IngestError(f"{option} needs a timezone, e.g. 2026-01-31T12:00:00Z")
    return int(parsed.timestamp())


@click.command(short_help="Revoke a recorded certificate by serial.")
@config_option
@click.option("--issuer", required=True, help="Issuer name from the configuration.")
@click.option("--reason", required=True, help="keyCompromise, superseded, ... (R7).")
@click.option("--time", "when", help="Revocation time, ISO 8601 with timezone; default now.")
@click.argument("serial")
def revoke(config_path: Path, issuer: str, reason: str, when: str | None, serial: str) -> None:
    """Revoke a recorded certificate by serial (hex). A revoked certificate's reason may later
    be raised to keyCompromise, and its time moved earlier with --time."""
    with user_errors():
        number = parse_serial(serial)
        revocation_time = parse_time(when)
        ingest = _ingest(load(config_path))
        row = ingest.revoke(issuer, number, reason, int(time.time()), revocation_time)
    name = NAMES.get(row.reason or 0, str(row.reason))
    click.echo(f"revoked {row.serial:x} ({name}); re-signed on the next signer pass")


@click.command(short_help="Counts of certificates, responses, due rows.")
@config_option
def stats(config_path: Path) -> None:
    """Counts of certificates, revocations, responses, due rows and pending cache purges."""
    with user_errors():
        config = load(config_path)
        store = open_store(config.database, config.base_dir)
        counts = store.counts()
        due = store.due_count(int(time.time()))
        backlog = store.purge_backlog()
    for name, value in counts.items():
        click.echo(f"{name:>16}: {value}")
    for priority, value in due.items():
        click.echo(f"{'due ' + priority.name.lower():>16}: {value}")
    click.echo(f"{'purges unsigned':>16}: {backlog.unready}")
    click.echo(f"{'purges pending':>16}: {backlog.pending}")
