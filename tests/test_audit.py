"""The audit log (R23): every recorded certificate and revocation, and every refused request,
appended in the transaction of the change, hash-chained; `certstatus audit verify` finds and
names a modified, deleted or reordered entry; the CLI's add/revoke write the same trail. On
SQLite and PostgreSQL (the engine fixture). Also the notBefore rule of revocation times."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import time

import pytest

from certstatus.ingest.api import IngestError, Revocation
from certstatus.store import sqlite_path
from certstatus.store.base import AuditContext
from tests.conftest import fresh_now

NOW = int(time.time())


_now_at_test_start = fresh_now()


def cli(deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certstatus.cli", *args, "--config", str(deployment.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def execute(deployment, sql: str) -> None:
    """Raw SQL on the deployment's database, as someone with write access to it would."""
    database = deployment.config.database
    if database.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.encode())
    else:
        with sqlite3.connect(sqlite_path(database, deployment.dir)) as conn:
            conn.execute(sql)


def test_changes_are_chained_and_tampering_is_named_r23(engine) -> None:
    store = engine.store()
    ingest = engine.ingest(store)
    a, b = engine.leaf(), engine.leaf(precertificate=True)
    ingest.add_certificates([(a, "a"), (b, "b")], NOW, AuditContext("api:issuer-1", "req-7"))
    ingest.add_certificates([(a, "a")], NOW)  # known again: no change, no entry
    ingest.revoke("demo", a.serial_number, "keyCompromise", NOW)
    entries = store.audit_entries(0, 0, 100)
    assert [(e.seq, e.action, e.actor) for e in entries] == [
        (1, "record", "api:issuer-1"),
        (2, "record", "api:issuer-1"),
        (3, "revoke", ingest.audit.actor),
    ]
    assert ingest.audit.actor.startswith("cli:")
    assert entries[0].request_id == "req-7" and entries[0].serial == f"{a.serial_number:x}"
    revoked = entries[2]
    assert json.loads(revoked.before)["status"] == "good"
    assert json.loads(revoked.after) == {
        "status": "revoked",
        "reason": 1,
        "time": NOW,
        "kind": "cert",
    }
    assert store.audit_head() == (3, revoked.hash)

    intact = cli(engine, "audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "3 entries" in intact.stdout and revoked.hash in intact.stdout

    execute(engine, "UPDATE audit SET actor = 'api:someone-else' WHERE seq = 2")
    broken = cli(engine, "audit", "verify")
    assert broken.returncode == 1
    assert broken.stderr.strip() == (
        "audit log broken at entry 2: its content does not match its hash (modified)"
    )


def test_deleted_entry_and_deleted_tail_are_named(engine) -> None:
    store = engine.store()
    ingest = engine.ingest(store)
    ingest.add_certificates([(engine.leaf(), str(n)) for n in range(4)], NOW)
    assert store.audit_head()[0] == 4
    execute(engine, "DELETE FROM audit WHERE seq = 4")
    tail = cli(engine, "audit", "verify")
    assert tail.returncode == 1 and "entry 4" in tail.stderr
    execute(engine, "DELETE FROM audit WHERE seq = 2")
    gap = cli(engine, "audit", "verify")
    assert gap.returncode == 1
    assert "broken at entry 2: entry 2 is missing (next stored is 3)" in gap.stderr


def test_refused_batch_writes_no_change_and_no_entry(engine) -> None:
    store = engine.store()
    ingest = engine.ingest(store)
    a, b = engine.leaf(), engine.leaf()
    ingest.add_certificates([(a, "a"), (b, "b")], NOW)
    head = store.audit_head()
    items = [
        Revocation("demo", a.serial_number, "keyCompromise", source="line 1"),
        Revocation("demo", b.serial_number, "noSuchReason", source="line 2"),
    ]
    with pytest.raises(IngestError, match=r"^line 2: "):
        ingest.revoke_many(items, NOW)
    items[1] = Revocation("demo", 0xDEAD, "superseded", source="line 2")
    with pytest.raises(IngestError, match=r"^line 2: serial dead is not known"):
        ingest.revoke_many(items, NOW)
    assert store.audit_head() == head
    assert not store.certificate(ingest.issuer_id("demo"), a.serial_number).revoked
    store.audit_refusal(AuditContext("api:x", "r1"), "403: no permission revoke", NOW)
    refused = store.audit_entries(head[0], 0, 10)
    assert [(e.action, e.detail) for e in refused] == [("refused", "403: no permission revoke")]


def test_a_repeated_batch_is_unchanged_and_not_logged_again(engine) -> None:
    store = engine.store()
    ingest = engine.ingest(store)
    a = engine.leaf()
    ingest.add_certificates([(a, "a")], NOW)
    items = [Revocation("demo", a.serial_number, "superseded")]
    assert [o.changed for o in ingest.revoke_many(items, NOW)] == [True]
    head = store.audit_head()
    assert [o.changed for o in ingest.revoke_many(items, NOW + 5)] == [False]
    assert store.audit_head() == head
    with pytest.raises(IngestError, match="already revoked"):  # the CLI still tells
        ingest.revoke("demo", a.serial_number, "superseded", NOW)


def test_revocation_before_not_before_is_refused(engine) -> None:
    """The demo CA's leaves start 5 minutes back; a revocation an hour back is refused, by the
    library and by `certstatus revoke --time`, with nothing written."""
    store = engine.store()
    ingest = engine.ingest(store)
    leaf = engine.leaf()
    ingest.add_certificates([(leaf, "a")], NOW)
    row = store.certificate(ingest.issuer_id("demo"), leaf.serial_number)
    assert row.not_before == int(leaf.not_valid_before_utc.timestamp())
    with pytest.raises(IngestError, match="before the certificate's notBefore"):
        ingest.revoke("demo", leaf.serial_number, "keyCompromise", NOW, NOW - 3600)
    earlier = dt.datetime.fromtimestamp(NOW - 3600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    serial = f"{leaf.serial_number:x}"
    refused = cli(
        engine, "revoke", "--issuer", "demo", "--reason", "keyCompromise", "--time", earlier, serial
    )
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"error: serial {serial}: revocation time is before the certificate's notBefore"
    ]
    assert not store.certificate(ingest.issuer_id("demo"), leaf.serial_number).revoked
    now = int(time.time())  # NOW is the module's import: minutes back in a long session
    ok = ingest.revoke("demo", leaf.serial_number, "keyCompromise", now, now - 120)
    assert ok.revoked_at == now - 120


def test_cli_add_and_revoke_write_the_trail_and_export_since(engine) -> None:
    leaf = engine.leaf()
    path = engine.write_leaf(leaf)
    assert cli(engine, "add", str(path)).returncode == 0
    serial = f"{leaf.serial_number:x}"
    revoked = cli(engine, "revoke", "--issuer", "demo", "--reason", "superseded", serial)
    assert revoked.returncode == 0, revoked.stderr
    exported = cli(engine, "audit", "export")
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(e["action"], e["serial"]) for e in lines] == [("record", serial), ("revoke", serial)]
    assert all(e["actor"].startswith("cli:") for e in lines)
    assert lines[1]["after"]["status"] == "revoked" and lines[1]["prev_hash"] == lines[0]["hash"]
    future = cli(engine, "audit", "export", "--since", "2999-01-01T00:00:00Z")
    assert future.returncode == 0 and future.stdout == ""
    bad = cli(engine, "audit", "export", "--since", "yesterday")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --since 'yesterday'")


def test_an_anchor_kept_outside_detects_a_rehashed_rewrite(engine) -> None:
    """Someone who can write the database rewrites entry 2 and recomputes every hash after it
    and the head: the chain is consistent again and plain `audit verify` passes, but the head
    taken earlier with `audit head` and kept elsewhere is no longer in it (R23)."""
    from certstatus.store.audit import entry_hash

    store = engine.store()
    empty = cli(engine, "audit", "head")
    assert empty.returncode == 2 and empty.stderr.startswith("error: the audit log is empty")
    ingest = engine.ingest(store)
    a, b = engine.leaf(), engine.leaf()
    ingest.add_certificates([(a, "a"), (b, "b")], NOW)
    head = cli(engine, "audit", "head")
    assert head.returncode == 0, head.stderr
    anchor = head.stdout.strip()
    assert anchor == f"2:{store.audit_head()[1]}"
    ingest.revoke("demo", a.serial_number, "superseded", NOW)
    held = cli(engine, "audit", "verify", "--anchor", anchor)
    assert held.returncode == 0 and held.stdout.strip().endswith("anchor 2 held"), held.stderr

    entries = store.audit_entries(0, 0, 100)
    prev = entries[0].hash
    for entry in entries[1:]:  # the rewrite: entry 2's actor, every hash from there on
        actor = "cli:someone-else" if entry.seq == 2 else entry.actor
        fields = (entry.seq, entry.at, actor, entry.action, entry.issuer_id, entry.serial,
                  entry.request_id, entry.before, entry.after, entry.detail)  # fmt: skip
        digest = entry_hash(fields, prev)
        execute(
            engine,
            f"UPDATE audit SET actor = '{actor}', prev_hash = '{prev}', hash = '{digest}' "
            f"WHERE seq = {entry.seq}",
        )
        prev = digest
    execute(engine, f"UPDATE audit_head SET hash = '{prev}' WHERE id = 1")
    assert cli(engine, "audit", "verify").returncode == 0  # consistent in itself
    caught = cli(engine, "audit", "verify", "--anchor", anchor)
    assert caught.returncode == 1
    assert caught.stderr.strip() == (
        "audit log broken at entry 2: its hash is not the anchor's "
        "(the chain was rewritten from here or before)"
    )
    beyond = cli(engine, "audit", "verify", "--anchor", f"9:{'0' * 64}")
    assert beyond.returncode == 1 and "anchor's entry is missing" in beyond.stderr
    bad = cli(engine, "audit", "verify", "--anchor", "two:abc")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --anchor 'two:abc': expected")
