"""`certstatus add`, `revoke` and `stats`: what the CA tells the status system, and its counts."""

from __future__ import annotations

import csv
import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from certstatus.cli import config_option, load, user_errors
from certstatus.client import ApiClient, ApiError
from certstatus.config import Config, load_issuer_certificates
from certstatus.ingest.api import (
    Ingest,
    IngestError,
    Revocation,
    parse_serial,
    read_certificate_file,
)
from certstatus.ocsp.reasons import NAMES
from certstatus.store import open_existing_store, open_store


def open_ingest(config: Config, existing: bool = False) -> Ingest:
    """Ingest over the configured store, acting as the operator who runs the command.
    existing: for commands that change what is recorded (revoke, import crl), which refuse a
    SQLite file that does not exist rather than create an empty one at a mistyped path."""
    materials = load_issuer_certificates(config)  # recording needs no key (R25)
    opener = open_existing_store if existing else open_store
    return Ingest(opener(config.database, config.base_dir), materials)


def api_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--api URL and the client identity: send to a running `certstatus api` instead of
    writing the database (no config or database password on this host)."""
    for option in reversed(
        (
            click.option("--api", "api_url", help="Issuance API URL, e.g. https://host:8443/"),
            click.option("--client-cert", type=click.Path(path_type=Path), help="PEM."),
            click.option("--client-key", type=click.Path(path_type=Path), help="PEM."),
            click.option(
                "--api-ca", type=click.Path(path_type=Path), help="CA bundle of the API's server."
            ),
        )
    ):
        function = option(function)
    return function


def _client(api_url: str, cert: Path | None, key: Path | None, ca: Path | None) -> ApiClient:
    if cert is None and api_url.startswith("https://"):
        raise IngestError("--api needs --client-cert and --client-key")
    return ApiClient(api_url, cert, key, ca)


@click.command(short_help="Record certificates and precertificates.")
@config_option
@api_options
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def add(
    config_path: Path,
    api_url: str | None,
    client_cert: Path | None,
    client_key: Path | None,
    api_ca: Path | None,
    files: tuple[Path, ...],
) -> None:
    """Record certificates and precertificates (PEM, multi-PEM or DER) before they are
    published (F2). Every file is checked before anything is recorded."""
    with user_errors(ApiError):
        if api_url is not None:
            client = _client(api_url, client_cert, client_key, api_ca)
            added = known = 0
            for path in files:
                read_certificate_file(path)  # the same one-line refusal as without --api
                answer = client.record(path.read_bytes())
                added, known = added + answer["added"], known + answer["known"]
            click.echo(f"added {added}, already known {known}")
            return
        with open_ingest(load(config_path)) as ingest:  # stops its checking processes
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


FROM_CHUNK = 10_000


def read_revocations(path: Path) -> Iterator[Revocation]:
    """Revocations from a file, one per line, read lazily (a million lines, flat memory): JSON
    lines ({"issuer", "serial", "reason", "time"}) or CSV (issuer,serial,reason[,time], an
    optional header line). Each names its line in an error."""
    from certstatus.api.bodies import BadRequest, ndjson_revocation, revocation

    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                if text.startswith("{"):
                    yield ndjson_revocation(text.encode(), number)
                    continue
                (fields,) = list(csv.reader([text]))
                if number == 1 and [f.strip().lower() for f in fields[:3]] == [
                    "issuer", "serial", "reason",
                ]:  # fmt: skip
                    continue
                if len(fields) not in (3, 4):
                    raise IngestError(
                        f"{path}: line {number}: expected issuer,serial,reason[,time]"
                    )
                item = dict(zip(("issuer", "serial", "reason", "time"), fields, strict=False))
                if not item.get("time"):
                    item.pop("time", None)
                yield revocation(item, f"line {number}")
            except BadRequest as exc:
                raise IngestError(f"{path}: {exc.message}") from None


def _chunks(items: Iterator[Revocation], size: int) -> Iterator[list[Revocation]]:
    chunk: list[Revocation] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@click.command(short_help="Revoke recorded certificates by serial, or a file of them.")
@config_option
@api_options
@click.option("--issuer", help="Issuer name from the configuration.")
@click.option(
    "--reason",
    help="keyCompromise, affiliationChanged, superseded, cessationOfOperation, "
    "privilegeWithdrawn or unspecified (R7).",
)
@click.option("--time", "when", help="Revocation time, ISO 8601 with timezone; default now.")
@click.option(
    "--from",
    "from_file",
    type=click.Path(path_type=Path),
    help="Mass revocation: CSV or JSON lines of issuer, serial, reason[, time].",
)
@click.argument("serial", required=False)
def revoke(
    config_path: Path,
    api_url: str | None,
    client_cert: Path | None,
    client_key: Path | None,
    api_ca: Path | None,
    issuer: str | None,
    reason: str | None,
    when: str | None,
    from_file: Path | None,
    serial: str | None,
) -> None:
    """Revoke a recorded certificate by serial (hex). A revoked certificate's reason may later
    be raised to keyCompromise, and its time moved earlier with --time.

    --from FILE revokes many (R24): applied in chunks of 10000 lines, each checked whole and
    committed in one transaction, in order; the first bad line stops it (its chunk writes
    nothing) and the error says through which line everything is committed. A revocation
    already in place is counted unchanged, so the same file can be run again."""
    with user_errors(ApiError):
        if from_file is not None:
            if serial or issuer or reason or when:
                raise IngestError("--from takes no SERIAL, --issuer, --reason or --time")
            _revoke_from(config_path, from_file, api_url, client_cert, client_key, api_ca)
            return
        if not (serial and issuer and reason):
            raise IngestError("give SERIAL with --issuer and --reason, or --from FILE")
        number = parse_serial(serial)
        revocation_time = parse_time(when)
        if api_url is not None:
            client = _client(api_url, client_cert, client_key, api_ca)
            item: dict[str, Any] = {"issuer": issuer, "serial": f"{number:x}", "reason": reason}
            if when is not None:
                item["time"] = when
            answer = client.revoke(item)["revocations"][0]
            click.echo(
                f"revoked {answer['serial']} ({answer['reason']}; {answer['outcome']}); "
                "re-signed on the next signer pass"
            )
            return
        ingest = open_ingest(load(config_path), existing=True)
        row = ingest.revoke(issuer, number, reason, int(time.time()), revocation_time)
    name = NAMES.get(row.reason or 0, str(row.reason))
    click.echo(f"revoked {row.serial:x} ({name}); re-signed on the next signer pass")


def _revoke_from(
    config_path: Path,
    path: Path,
    api_url: str | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
) -> None:
    if api_url is not None:
        client = _client(api_url, cert, key, ca)

        def items() -> Iterator[dict[str, Any]]:
            for r in read_revocations(path):
                item: dict[str, Any] = {"issuer": r.issuer, "serial": f"{r.serial:x}"}
                item["reason"] = r.reason
                if r.time is not None:
                    item["time"] = dt.datetime.fromtimestamp(r.time, dt.UTC).isoformat()
                yield item

        answer = client.revoke_stream(items())
        click.echo(
            f"revoked {answer['revoked']}, unchanged {answer['unchanged']} "
            f"({answer['lines']} lines)"
        )
        return
    ingest = open_ingest(load(config_path), existing=True)
    revoked = unchanged = lines = 0
    through = "line 0"
    for chunk in _chunks(read_revocations(path), FROM_CHUNK):
        try:
            outcomes = ingest.revoke_many(chunk, int(time.time()))
        except IngestError as exc:
            raise IngestError(
                f"{path}: {exc}; committed through {through} ({lines} revocations), nothing after"
            ) from None
        revoked += sum(o.changed for o in outcomes)
        unchanged += sum(not o.changed for o in outcomes)
        lines += len(outcomes)
        through = chunk[-1].source
    click.echo(f"revoked {revoked}, unchanged {unchanged} ({lines} lines)")


@click.command(short_help="Counts of certificates, responses, due rows.")
@config_option
def stats(config_path: Path) -> None:
    """Counts of certificates, revocations, responses, due rows and pending cache purges."""
    with user_errors():
        config = load(config_path)
        store = open_existing_store(config.database, config.base_dir)
        counts = store.counts()
        due = store.due_count(int(time.time()))
        backlog = store.purge_backlog()
        schema = store.schema_version()
    for name, value in counts.items():
        click.echo(f"{name:>16}: {value}")
    for priority, value in due.items():
        click.echo(f"{'due ' + priority.name.lower():>16}: {value}")
    click.echo(f"{'purges unsigned':>16}: {backlog.unready}")
    click.echo(f"{'purges pending':>16}: {backlog.pending}")
    click.echo(f"{'schema':>16}: {schema}")
