"""`certstatus audit verify` and `certstatus audit export`: the audit log (R23) checked and read."""

from __future__ import annotations

import json
from pathlib import Path

import click

from certstatus.cli import config_option, fail, load, user_errors
from certstatus.cli.records import parse_time
from certstatus.store import open_existing_store
from certstatus.store.audit import all_entries, as_json, parse_anchor, verify


@click.group(short_help="Verify or export the audit log.")
def audit() -> None:
    """The audit log of every recorded certificate, revocation and refused API request (R23)."""


@audit.command("verify", short_help="Check the audit log's hash chain.")
@config_option
@click.option(
    "--anchor",
    help="SEQ:HASH from an earlier `audit head`, kept outside the database: it must still be "
    "in the chain.",
)
def verify_command(config_path: Path, anchor: str | None) -> None:
    """Recompute the whole chain: exit 0 when intact (printing the head to keep elsewhere as an
    anchor), exit 1 naming the first entry that was modified, deleted or reordered, or that no
    longer has the hash --anchor recorded (a chain rewritten and rehashed after the anchor)."""
    with user_errors(ValueError):
        kept = None if anchor is None else parse_anchor(anchor)
        config = load(config_path)
        store = open_existing_store(config.database, config.base_dir)
        head = store.audit_head()
        count, broken = verify(all_entries(store), head, kept)
    if broken is not None:
        click.echo(f"audit log broken at entry {broken.seq}: {broken.problem}", err=True)
        raise SystemExit(1)
    held = "" if kept is None else f", anchor {kept[0]} held"
    click.echo(f"audit log intact: {count} entries, head {head[0]} {head[1]}{held}")


@audit.command("head", short_help="Print the chain's head, to keep outside the database.")
@config_option
def head_command(config_path: Path) -> None:
    """Print SEQ:HASH of the last entry. Store it where the database's writers cannot (the CA's
    own log, a ticket, a WORM bucket); `audit verify --anchor SEQ:HASH` later proves the chain
    still contains it, which a rewrite of the chain from that entry on cannot fake."""
    with user_errors():
        config = load(config_path)
        seq, digest = open_existing_store(config.database, config.base_dir).audit_head()
    if seq == 0:
        fail("the audit log is empty; nothing to anchor yet")
    click.echo(f"{seq}:{digest}")


@audit.command("export", short_help="The audit log as JSON lines.")
@config_option
@click.option("--since", help="Only entries at or after this time (ISO 8601 with timezone).")
def export_command(config_path: Path, since: str | None) -> None:
    """Every entry (or those since a time) as one JSON object per line, in chain order."""
    with user_errors():
        start = parse_time(since, "--since") or 0
        config = load(config_path)
        store = open_existing_store(config.database, config.base_dir)
        entries = all_entries(store, start)
        try:
            for record in entries:
                click.echo(json.dumps(as_json(record), separators=(",", ":")))
        except BrokenPipeError:  # `| head`
            fail("output closed")
