"""The periodic queries (issue 15 item 5): what each costs at N certificates, on either engine.

Every few seconds the signing roles, the CRL builder, the purger, the monitor and housekeeping
each ask the database something. Each must cost what is due, not what is stored: this times
every one of them on a database of N certificates, and, for the queries v9 replaced, the old
statement on the same rows ("before"), so the ratio is measured in one run.

`periodic_query_times(store, now)` is the measurement (seconds per query, best of a few runs);
benchmarks.scale calls it on its own database. Run alone, this fills a database with N rows
written straight in SQL (narrow DER blobs of 100 bytes, not a real 800: the plans and the index
walks are what is measured, and a narrower table only flatters the old full scans):

  .venv/bin/python -m benchmarks.queries --engine sqlite|postgres --certs 100000 1000000

--write-cost ROWS measures instead what v9's three indexes cost the write path (ingest and
storing signed responses), with and without them, in alternating rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certstatus.store.base import Store
from certstatus.store.expiry import START

DAY = 86400
RETENTION = 10 * DAY
CRL_PERIOD = DAY
PARTITIONS = 4

# The statements v9 replaced, kept to measure against (store/monitoring.py has today's), each
# with its parameters for a time `now`.
_OLD_SAMPLE = (
    "SELECT issuer_id, serial FROM certificates WHERE serial >= ? AND not_after > ? "
    "ORDER BY issuer_id, serial LIMIT ?"
)
BEFORE: dict[str, list[tuple[str, Callable[[int], tuple[Any, ...]]]]] = {
    "metrics.freshness": [
        (
            "SELECT min(due_at) FROM certificates WHERE due_at IS NOT NULL AND due_at <= ?",
            lambda now: (now,),
        ),
        (
            "SELECT min(r.this_update), min(r.next_update) FROM responses r JOIN certificates c "
            "ON c.issuer_id = r.issuer_id AND c.serial = r.serial WHERE c.not_after > ?",
            lambda now: (now,),
        ),
    ],
    "watchdog.sample_certificates": [(_OLD_SAMPLE, lambda now: ("8", now, 20))],
}


def _best(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def periodic_query_times(store: Store, now: int, repeat: int = 3) -> dict[str, float]:
    """Seconds per periodic query (the best of `repeat` runs) on this store, as each role
    asks it. Mutating ones leave the store as a pass of their role would (claims released,
    purges already settled pruned, expired rows retired or pruned)."""
    issuers = store.issuers()
    issuer = issuers[0].id if issuers else 1
    cutoff = now - CRL_PERIOD

    def claim() -> None:
        claimed = store.claim_due(now, 256, 300)
        store.release_claims(claimed, now)

    queries: dict[str, Callable[[], Any]] = {
        "signer.claim_due": claim,
        "signer.due_count": lambda: store.due_count(now),
        "metrics.freshness": lambda: store.freshness(now),
        "crl.partitions_in_use": lambda: store.crl_partitions_in_use(issuer),
        "crl.dirty_since": lambda: store.crl_dirty_since(issuer),
        "crl.revoked_entries": lambda: store.revoked_entries(issuer, 0, cutoff),
        "crl.revoked_recorded_before": lambda: store.revoked_recorded_before(
            issuer, 0, now - 300, cutoff
        ),
        "watchdog.new_certificates": lambda: store.new_certificates((now - 60, -1, ""), 2000),
        "watchdog.sample_certificates": lambda: store.sample_certificates("8", now, 20),
        "purge.mark_ready": lambda: store.mark_purges_ready(now),
        "purge.pending": lambda: store.pending_purges("cdn", 0, now, 200),
        "purge.backlog": store.purge_backlog,
        "purge.prune": lambda: store.prune_purges(now - DAY),
        "housekeeping.retire_batch": lambda: store.retire_expired(now, 10_000),
        "housekeeping.prune_batch": lambda: store.prune_expired(
            START, now - RETENTION, CRL_PERIOD, now, 10_000
        ),
    }
    # a housekeeping batch that deletes is timed once: its repeats would find nothing left
    once = {"housekeeping.prune_batch"}
    return {name: _best(run, 1 if name in once else repeat) for name, run in queries.items()}


def before_times(store: Store, now: int, repeat: int = 3) -> dict[str, float]:
    """The replaced statements on the same rows (seconds, best of `repeat`)."""
    found = {}
    for name, statements in BEFORE.items():

        def run(
            statements: list[tuple[str, Callable[[int], tuple[Any, ...]]]] = statements,
        ) -> None:
            with store._reading() as db:  # type: ignore[attr-defined]
                for sql, parameters in statements:
                    db.execute(store._sql(sql), parameters(now)).fetchall()  # type: ignore[attr-defined]

        found[name] = _best(run, repeat)
    return found


# --- filling a database ---------------------------------------------------------------------
# Row i: serial 1000000000 + i in hex; notAfter spread over [now - 30d, now + 90d), so a quarter
# is expired (and retired, as housekeeping leaves them), a sixth for longer than the retention
# (the first housekeeping.prune_batch runs delete up to 10 000 of those, each a batch, as a pass
# would); every response signed (an expired one's a day before notAfter), refresh due at
# a spread time in the next 3 days, except the last 100 rows (new, due now); 1% revoked over
# PARTITIONS partitions, the last 10 revoked ones recorded a minute ago; ingested over the
# last 90 days. Purges: one per certificate (a day of mass revocation), all settled (delivered
# to one cache) but the
# last 50.
_CERTIFICATES = """
INSERT INTO certificates (issuer_id, serial, kind, not_after, ingested_at, revoked, revoked_at,
    reason, version, priority, due_at, crl_partition, revoked_recorded_at)
SELECT {issuer}, {hex}, 'cert', {now} - 30 * 86400 + ({i} * 7919) % (120 * 86400),
    {now} - 90 * 86400 + ({i} * 104729) % (90 * 86400),
    CASE WHEN {i} % 100 = 7 THEN 1 ELSE 0 END,
    CASE WHEN {i} % 100 = 7 THEN {now} - 86400 END,
    CASE WHEN {i} % 100 = 7 THEN 1 END, 1,
    CASE WHEN {i} >= {n} - 100 THEN 0 ELSE 2 END,
    CASE WHEN {now} - 30 * 86400 + ({i} * 7919) % (120 * 86400) <= {now} THEN NULL
         WHEN {i} >= {n} - 100 THEN {now} ELSE {now} + 60 + ({i} * 31) % (3 * 86400) END,
    ({i} / 100) % {partitions},
    CASE WHEN {i} % 100 = 7 THEN
        CASE WHEN {i} >= {n} - 1000 THEN {now} - 60 ELSE {now} - 86400 END END
FROM {rows}
"""
_RESPONSES = """
INSERT INTO responses (issuer_id, serial, version, this_update, next_update, refresh_at,
    der_sha1, der_sha256, retired)
SELECT issuer_id, serial, 1, {base} - 3600 - ({modulo}), {base} + 6 * 86400 - ({modulo}),
    {base} + 2 * 86400 - ({modulo}), {blob}, {blob}, CASE WHEN not_after <= {now} THEN 1 ELSE 0 END
FROM certificates WHERE priority = 2
"""
# an expired certificate's last response was signed a day before its notAfter
_SIGNED_AT = "CASE WHEN not_after <= {now} THEN not_after - 86400 ELSE {now} END"
_PURGES = """
INSERT INTO purges (kind, issuer_id, serial, version, created_at, ready_at, settled_at)
SELECT 'ocsp', {issuer}, {hex}, 1, {now} - 3600, {now} - 3590,
    CASE WHEN {i} < {n} - 50 THEN {now} - 3000 END
FROM {rows}
"""


def _dialect(store: Store) -> dict[str, str]:
    from certstatus.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return {
            "hex": "printf('%x', 1000000000 + i)",
            "blob": "zeroblob(100)",
            "sqlite": "",
            "series": "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s "
            "WHERE i < {count} - 1) SELECT i FROM s) AS s",
        }
    return {
        "postgres": "",
        "hex": "to_hex(1000000000 + i)",
        "blob": "decode(repeat('00', 100), 'hex')",
        "series": "generate_series(0::bigint, {count} - 1) AS s(i)",
    }


def populate(store: Store, n: int, now: int) -> int:
    """Fill an empty store with n certificates (see above); returns the issuer id."""
    issuer = store.ensure_issuer("bench", b"bench issuer (not a certificate)")
    d = _dialect(store)
    rows = d["series"].format(count=n)
    purge_rows = d["series"].format(count=n)
    fields = {"issuer": issuer, "hex": d["hex"], "i": "i", "n": n, "now": now}
    with store._writing() as db:  # type: ignore[attr-defined]
        if "postgres" in d:
            db.execute("SET LOCAL statement_timeout = 0")  # a million rows take a while
        db.execute(_CERTIFICATES.format(**fields, partitions=PARTITIONS, rows=rows))
        db.execute(
            _RESPONSES.format(
                now=now,
                base=f"({_SIGNED_AT.format(now=now)})",
                modulo="not_after % 86400",
                blob=d["blob"],
            )
        )
        db.execute(_PURGES.format(**fields, rows=purge_rows))
        db.execute(
            "INSERT INTO purge_deliveries (purge_id, cache, pass, delivered_at) "
            f"SELECT id, 'cdn', 0, {now} - 3000 FROM purges WHERE settled_at IS NOT NULL"
        )
        for partition in range(PARTITIONS):
            db.execute(
                store._sql(  # type: ignore[attr-defined]
                    "INSERT INTO crl_state (issuer_id, crl_partition, dirty_since) "
                    "VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
                ),
                (issuer, partition, now - 60 if partition == 0 else None),
            )
        db.execute(
            store._sql(  # type: ignore[attr-defined]
                "UPDATE housekeeping SET retired_not_after = ?, retired_issuer = ?, "
                "retired_serial = ''"
            ),
            (now, issuer),
        )
    analyze(store)
    return issuer


def analyze(store: Store) -> None:
    """Fresh planner statistics and (PostgreSQL) a visibility map, as autovacuum or SQLite's
    ANALYZE would keep them."""
    from certstatus.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        with store._connection() as conn:  # autocommit: VACUUM runs outside a transaction
            conn.execute("SET statement_timeout = 0")
            conn.execute("VACUUM ANALYZE")
            conn.execute("RESET statement_timeout")
        return
    with store._reading() as db:  # type: ignore[attr-defined]
        db.execute("ANALYZE")


def _measure(engine: str, n: int, directory: Path, postgres_url: str | None) -> dict[str, Any]:
    from certstatus.store import open_store

    now = int(time.time())
    url = postgres_url if engine == "postgres" else str(directory / f"q{n}.db")
    assert url is not None
    store = open_store(url)
    try:
        started = time.perf_counter()
        populate(store, n, now)
        filled = time.perf_counter() - started
        after = periodic_query_times(store, now)
        before = before_times(store, now)
        return {"engine": engine, "certs": n, "fill_s": round(filled, 1), "after_s": after,
                "before_s": before}  # fmt: skip
    finally:
        store.close()


V9_INDEXES = ("certificates_expiry", "responses_this_update", "responses_next_update")


def write_cost(store: Store, count: int, drop_v9: bool) -> dict[str, float]:
    """Rows per second of ingest (add_certificates, 10 000 a call) and of storing signed
    responses (store_signed, 256 a call, as the signer does; twice: insert, then a refresh that
    rewrites them), with v9's indexes or without them: what the indexes cost the write path."""
    import os

    from benchmarks.common import bulk_records
    from certstatus.store.base import SignedResponse

    if drop_v9:
        with store._writing() as db:  # type: ignore[attr-defined]
            for index in V9_INDEXES:
                db.execute(f"DROP INDEX {index}")
    issuer = store.ensure_issuer("bench", b"bench issuer (not a certificate)")
    records = bulk_records(issuer, count)
    now = int(time.time())
    started = time.perf_counter()
    for start in range(0, count, 10_000):
        store.add_certificates(records[start : start + 10_000], now)
    rates = {"ingest_per_s": count / (time.perf_counter() - started)}
    # a delegated responder's response: ~300 bytes of its own, its ~500-byte certificate once
    der, certs = os.urandom(300), os.urandom(500)
    for label, shift in (("store_insert_per_s", 0), ("store_refresh_per_s", 3 * DAY)):
        responses = [
            SignedResponse(
                issuer,
                r.serial,
                1,
                der,
                der,
                now + shift,
                now + shift + 7 * DAY,
                now + shift + 3 * DAY,
                certs,
            )
            for r in records
        ]
        started = time.perf_counter()
        for start in range(0, count, 256):
            store.store_signed(responses[start : start + 256], now)
        rates[label] = count / (time.perf_counter() - started)
    return rates


def _write_costs(engine: str, count: int, directory: Path, admin: str | None) -> None:
    from certstatus.store import open_store

    found = {}
    for rounds in range(2):  # alternate, so drift on a shared machine hits both alike
        for drop in (False, True):
            name = f"w{rounds}{int(drop)}"
            url = str(directory / f"{name}.db")
            if admin is not None:
                url = _postgres_database(admin, name)
            store = open_store(url)
            try:
                rates = write_cost(store, count, drop)
            finally:
                store.close()
            for key, value in rates.items():
                found.setdefault((key, drop), []).append(value)
    print(f"{engine} write path, {count} rows, best of 2 alternating rounds:")
    for key in ("ingest_per_s", "store_insert_per_s", "store_refresh_per_s"):
        with_v9, without = max(found[(key, False)]), max(found[(key, True)])
        print(f"  {key:22s} v9 {with_v9:9.0f}/s   without v9 indexes {without:9.0f}/s   "
              f"ratio {with_v9 / without:.2f}")  # fmt: skip


def _postgres_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"'.encode())
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return admin_url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--certs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--json", action="store_true", help="one JSON object per N")
    parser.add_argument(
        "--write-cost", type=int, metavar="ROWS", help="instead: what v9's indexes cost writes"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        directory = Path(tmp)
        cluster = None
        if args.engine == "postgres":
            from certstatus.cluster.local import Cluster

            directory.chmod(0o755)  # the postgres user must reach the cluster inside
            cluster = Cluster.up(directory / "cluster", replicas=0, shared_buffers_mb=256)
        try:
            if args.write_cost:
                admin = None
                if cluster is not None:
                    admin = cluster.primary.url.rsplit("/", 1)[0] + "/postgres"
                _write_costs(args.engine, args.write_cost, directory, admin)
                return
            for n in args.certs:
                url = None
                if cluster is not None:
                    admin = cluster.primary.url.rsplit("/", 1)[0] + "/postgres"
                    url = _postgres_database(admin, f"queries_{n}")
                result = _measure(args.engine, n, directory, url)
                if args.json:
                    print(json.dumps(result))
                else:
                    _print(result)
                sys.stdout.flush()
        finally:
            if cluster is not None:
                cluster.down()


def _print(result: dict[str, Any]) -> None:
    print(f"{result['engine']} N={result['certs']} (filled in {result['fill_s']} s)")
    for name, seconds in result["after_s"].items():
        line = f"  {name:32s} {seconds * 1000:9.2f} ms"
        if name in result["before_s"]:
            old = result["before_s"][name]
            line += f"   before v9: {old * 1000:9.2f} ms ({old / max(seconds, 1e-9):.0f}x)"
        print(line)


if __name__ == "__main__":
    main()
