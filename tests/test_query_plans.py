"""Every periodic query reads an index, not a table (issue 15 item 5), on both engines.

The signer's due scan, the freshness metrics (F4), the CRL builder's reads (R16, R18), the
watchdog's new-serial scan (F2), the purge queue and expiry housekeeping run every few seconds
whatever the database holds; a sequential scan there costs O(N) at every tick. Each test runs
the real store method against a real server holding 50 000 certificates (ANALYZEd, so the
planner chooses on real statistics; enable_seqscan is left on), records every statement it
sent, and asks PostgreSQL how it would run each: no Seq Scan on certificates, responses or
the purge tables, and the index the query was written for is the one used. The rows come from
benchmarks/queries.py, which times the same queries. SQLite's EXPLAIN QUERY PLAN is checked the
same way (no bare SCAN of those tables): it is how a full scan of responses in the retiring
UPDATE was found.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from benchmarks.queries import CRL_PERIOD, DAY, RETENTION, populate

from certstatus.store.expiry import START
from certstatus.store.postgres import PostgresStore
from certstatus.store.sqlite import SqliteStore
from tests.conftest import _fresh_postgres_database

N = 50_000
BIG_TABLES = ("certificates", "responses", "purges", "purge_deliveries")


class Recording:
    """A connection that notes every statement and its parameters, then runs it."""

    def __init__(self, db: Any, log: list[tuple[str, Sequence[Any]]]) -> None:
        self.db = db
        self.log = log

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        self.log.append((sql, parameters))
        return self.db.execute(sql, parameters)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any:
        rows = list(rows)
        if rows:
            self.log.append((sql, rows[0]))
        return self.db.executemany(sql, rows)


Store = PostgresStore | SqliteStore


@contextmanager
def recorded(store: Store) -> Iterator[list[tuple[str, Sequence[Any]]]]:
    """The statements the store sends inside the block (one row each of an executemany)."""
    log: list[tuple[str, Sequence[Any]]] = []
    reading, writing, many = store._reading, store._writing, store._executemany

    @contextmanager
    def recording_reads() -> Iterator[Recording]:
        with reading() as db:
            yield Recording(db, log)

    @contextmanager
    def recording_writes(durable: bool = True) -> Iterator[Recording]:
        with writing(durable) as db:
            yield Recording(db, log)

    def recording_many(db: Recording, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if rows:
            log.append((sql, rows[0]))
        return many(db.db, sql, rows)

    store._reading = recording_reads  # type: ignore[method-assign,assignment]
    store._writing = recording_writes  # type: ignore[method-assign,assignment]
    store._executemany = recording_many  # type: ignore[method-assign,assignment]
    try:
        yield log
    finally:
        del store._reading, store._writing, store._executemany


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
)
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, int, int]]:
    store: Store
    if request.param == "postgres":
        store = PostgresStore(_fresh_postgres_database(request.getfixturevalue("postgres_server")))
    else:
        store = SqliteStore(tmp_path_factory.mktemp("plans") / "plans.db")
    now = int(time.time())
    issuer = populate(store, N, now)
    try:
        yield store, issuer, now
    finally:
        store.close()


_STATEMENTS = ("SELECT", "WITH", "UPDATE", "DELETE")


def plans(store: Store, log: list[tuple[str, Sequence[Any]]]) -> list[str]:
    """The engine's plan of each recorded statement, with its parameters (nothing runs)."""
    found = []
    statements = [(sql, p) for sql, p in log if sql.lstrip().upper().startswith(_STATEMENTS)]
    if isinstance(store, SqliteStore):
        db: sqlite3.Connection = store._connect()
        for sql, parameters in statements:
            rows = db.execute("EXPLAIN QUERY PLAN " + sql, parameters).fetchall()
            found.append("\n".join(r[-1] for r in rows))
        return found
    with store._connection() as conn:
        for sql, parameters in statements:
            rows = conn.execute(("EXPLAIN " + sql).encode(), parameters).fetchall()
            found.append("\n".join(r[0] for r in rows))
    return found


# SQLite: a bare SCAN (no index) of a big table or of the aliases the statements give them
_SQLITE_FULL_SCAN = re.compile(
    r"^\s*SCAN (certificates|responses|purges|purge_deliveries|[crpd])\s*$", re.M
)
# SQLite names a primary key differently
_SQLITE_NAMES = {
    "certificates_pkey": "PRIMARY KEY",
    "responses_pkey": "sqlite_autoindex_responses_1",
}


def assert_indexed(store: Store, found: list[str], indexes: Sequence[str]) -> None:
    assert found, "no statement was recorded"
    text = "\n\n".join(found)
    if isinstance(store, SqliteStore):
        assert not _SQLITE_FULL_SCAN.search(text), text
        indexes = [_SQLITE_NAMES.get(index, index) for index in indexes]
    else:
        for table in BIG_TABLES:
            assert f"Seq Scan on {table}" not in text, text
    for index in indexes:
        assert index in text, f"{index} not used:\n{text}"


def rewind_retiring(store: Store, to: int) -> None:
    """Set housekeeping's retiring key back (populate leaves it caught up)."""
    with store._writing() as db:
        db.execute(
            store._sql("UPDATE housekeeping SET retired_not_after = ?, retired_issuer = -1"), (to,)
        )


Call = Callable[[Store, int, int], object]

PERIODIC: list[tuple[str, Call, tuple[str, ...]]] = [
    # the signer's due scan (claim, then release what it claimed)
    (
        "claim_due",
        lambda s, i, now: s.release_claims(s.claim_due(now, 256, 300), now),
        ("certificates_due",),
    ),
    ("due_count", lambda s, i, now: s.due_count(now), ("certificates_due",)),
    # F4: oldest due, oldest thisUpdate, soonest nextUpdate
    (
        "freshness",
        lambda s, i, now: s.freshness(now),
        ("certificates_due", "responses_this_update", "responses_next_update"),
    ),
    # the CRL builder (R16, R18): partitions, what is dirty, the entries, the gate's set
    ("crl_partitions_in_use", lambda s, i, now: s.crl_partitions_in_use(i), ()),
    ("crl_dirty_since", lambda s, i, now: s.crl_dirty_since(i), ()),
    (
        "revoked_entries",
        lambda s, i, now: s.revoked_entries(i, 1, now - CRL_PERIOD),
        ("certificates_revoked",),
    ),
    (
        "revoked_recorded_before",
        lambda s, i, now: s.revoked_recorded_before(i, 1, now - 300, now - CRL_PERIOD),
        ("certificates_revoked",),
    ),
    # the watchdog (F2): new serials, and a sample of older ones
    (
        "new_certificates",
        lambda s, i, now: s.new_certificates((now - 60, -1, ""), 2000),
        ("certificates_ingested",),
    ),
    (
        "sample_certificates",
        lambda s, i, now: s.sample_certificates("8", now, 20),
        ("certificates_pkey",),
    ),
    # the purge queue
    ("mark_purges_ready", lambda s, i, now: s.mark_purges_ready(now), ("purges_unsettled",)),
    (
        "pending_purges",
        lambda s, i, now: s.pending_purges("cdn", 0, now, 200),
        ("purges_unsettled",),
    ),
    (
        "ready_purge_ids",
        lambda s, i, now: s.ready_purge_ids("cdn", 0, i, now),
        ("purges_unsettled",),
    ),
    (
        "settle_purges",
        lambda s, i, now: s.settle_purges([("cdn", 0)], now),
        ("purges_unsettled",),
    ),
    ("prune_purges", lambda s, i, now: s.prune_purges(now - 86400), ("purges_settled",)),
    ("purge_backlog", lambda s, i, now: s.purge_backlog(), ("purges_unsettled",)),
    # expiry housekeeping
    (
        "retire_expired",  # with two days of expiries to retire
        lambda s, i, now: (rewind_retiring(s, now - 2 * DAY), s.retire_expired(now, 10_000)),
        ("certificates_expiry", "responses_pkey"),
    ),
    (
        "prune_expired",
        lambda s, i, now: s.prune_expired(START, now - RETENTION, CRL_PERIOD, now, 1000),
        ("certificates_expiry", "responses_pkey", "certificates_pkey"),
    ),
]


@pytest.mark.parametrize(
    ("call", "indexes"), [(c, i) for _, c, i in PERIODIC], ids=[n for n, _, _ in PERIODIC]
)
def test_periodic_query_uses_its_index(
    loaded: tuple[Store, int, int], call: Call, indexes: tuple[str, ...]
) -> None:
    store, issuer, now = loaded
    with recorded(store) as log:
        call(store, issuer, now)
    assert_indexed(store, plans(store, log), indexes)


def test_freshness_reads_a_few_index_entries_not_every_response(
    loaded: tuple[Store, int, int],
) -> None:
    """F4 on a real run (PostgreSQL): EXPLAIN ANALYZE of the freshness statements reads a
    handful of rows of responses (the first unretired index entries), not the table."""
    store, _, now = loaded
    if not isinstance(store, PostgresStore):
        pytest.skip("EXPLAIN ANALYZE row counts are PostgreSQL's")
    with recorded(store) as log:
        fresh = store.freshness(now)
    assert fresh.oldest_this_update is not None and fresh.soonest_next_update is not None
    with store._connection() as db:
        for sql, parameters in log:
            if "responses" not in sql:
                continue
            rows = db.execute(("EXPLAIN (ANALYZE, FORMAT JSON) " + sql).encode(), parameters)
            plan = rows.fetchone()[0][0]["Plan"]
            assert max(_rows_read(plan, "responses")) < 100, plan


def _rows_read(node: dict[str, Any], table: str) -> Iterator[int]:
    if node.get("Relation Name") == table:
        yield int(node["Actual Rows"]) * int(node.get("Actual Loops", 1))
    for child in node.get("Plans", []):
        yield from _rows_read(child, table)
