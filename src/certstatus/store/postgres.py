"""PostgreSQL behind the same Store interface: the primary for writes, replicas for reads.

The statements it shares with SQLite are in shared.py. Here are only the differences: a pool of
connections that is replaced when a lost server answers again, row locks and SKIP LOCKED instead
of a database-wide write lock, arrays (unnest) to store a batch in one round trip, an advisory
lock around migrations so two processes starting together do not both migrate, the batched
lookups of the responder (pglookup.py, pgloop.py), and the abilities only a server with
replicas has: the heartbeat and the replication slots (base.Heartbeat, base.ReplicationReads).
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import struct
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store import additions
from certstatus.store import audit as audit_chain
from certstatus.store import pgarrays as arrays
from certstatus.store.audit import COLUMNS
from certstatus.store.base import (
    UNATTRIBUTED,
    AddResult,
    AuditContext,
    CertificateRecord,
    DueCertificate,
    NotAcknowledged,
    Priority,
    SignedResponse,
    StoredCrl,
    StoredResponse,
    StoreError,
    Unreachable,
    serial_key,
)
from certstatus.store.pglookup import ResponseKey, read_responses
from certstatus.store.pgloop import LoopReader
from certstatus.store.schema import FRESH_DATABASE, POSTGRES_MIGRATIONS
from certstatus.store.shared import _CRL_COLUMNS, RESPONSE_BY_ALGORITHM, Connection, SqlStore

log = logging.getLogger("certstatus.store")
_MIGRATION_LOCK = 0x63657274  # "cert"
_CHUNK = 10_000  # rows per statement of a batch write


@functools.cache
def _pg(sql: str) -> str:
    """A statement shared with SQLite ('?' placeholders) in psycopg's '%s' style, rewritten
    once per statement."""
    return sql.replace("?", "%s")


_RESPONSE_BY_ALGORITHM = {a: _pg(sql) for a, sql in RESPONSE_BY_ALGORITHM.items()}
_NOW_MS = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
# PostgreSQL's warning when a commit stopped waiting for its synchronous standby (here: the
# statement_timeout ran out): the commit is local only and the server still reports success
_SYNC_WAIT_CANCELLED = "canceling wait for synchronous replication"
_READ_ONLY = "25006"  # read_only_sql_transaction: a connection to a node that was demoted
# libpq keeps its input and output buffers as large as the largest message a connection ever
# carried; a CRL bigger than this is read in pieces of it, and published by COPY in pieces on
# a connection of its own, closed after, rather than leave a pooled one that large
_LARGE_MESSAGE = 8 << 20
_PGCOPY = b"PGCOPY\n\xff\r\n\x00"  # binary COPY's signature
_WALK_TIMEOUT = 300.0  # seconds per fetch of a long walk (_stream), whose first may sort it all


class PostgresStore(SqlStore):
    """One PostgreSQL server. read_only: a hot standby (no migrations, no writes)."""

    LOCK_ROW = " FOR UPDATE"
    LOCK_SHARED_ROW = " FOR SHARE"
    LOCK_FREE_ROWS = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        url: str,
        read_only: bool = False,
        max_connections: int = 8,
        timeout: float = 5.0,
        name: str = "primary",
    ) -> None:
        self.url = url
        self.name = name
        self.read_only = read_only
        self.timeout = timeout
        self.max_connections = max_connections
        self._connect_kwargs: dict[str, Any] = {
            "connect_timeout": max(1, int(timeout)),
            "autocommit": True,
            "options": f"-c statement_timeout={int(timeout * 1000)}",
        }
        # per pooled connection: the sync-wait warnings its current transaction received
        self._unreplicated: weakref.WeakKeyDictionary[psycopg.Connection[Any], list[str]] = (
            weakref.WeakKeyDictionary()
        )
        # the server the writer connections reach (its port and start time): when it changes,
        # a failover (or a restart) may have lost claims' signed responses (see claim_due)
        self._leader_lock = threading.Lock()
        self._leader: tuple[Any, ...] | None = None
        self._leader_changed = False
        self._pool = self._new_pool()
        self._revive_lock = threading.Lock()
        self._checking = threading.Lock()
        self._refused: str | None = None  # what the server said when a direct connect failed
        self._refused_by_server = False  # it was the server's answer (auth, no database)
        self._large = threading.local()  # .active: a large message, on a connection of its own
        self.large_message = _LARGE_MESSAGE
        self.walk_timeout = max(timeout, _WALK_TIMEOUT)
        self.loop_reader = LoopReader(url, self._connect_kwargs, name, timeout)
        if not read_only:
            self._migrate()

    @property
    def where(self) -> str:
        """host:port/dbname of the URL, never its password: for messages."""
        try:
            info = conninfo_to_dict(self.url)
        except psycopg.Error:
            return "?"
        return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def _new_pool(self) -> ConnectionPool:
        return ConnectionPool(
            self.url,
            min_size=0,
            max_size=self.max_connections,
            timeout=self.timeout,
            kwargs=self._connect_kwargs,
            configure=self._configure,
            open=True,
            name=self.name,
        )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Each new connection reports the warning of a commit that gave up waiting for its
        synchronous standby (see _writing)."""
        warnings: list[str] = []
        self._unreplicated[conn] = warnings
        if not self.read_only:
            server = conn.execute(
                "SELECT inet_server_port(), pg_postmaster_start_time()::text"
            ).fetchone()
            with self._leader_lock:
                if self._leader is not None and server != self._leader:
                    self._leader_changed = True
                self._leader = server

        def notice(diagnostic: psycopg.errors.Diagnostic) -> None:
            if _SYNC_WAIT_CANCELLED in (diagnostic.message_primary or ""):
                warnings.append(diagnostic.message_detail or diagnostic.message_primary or "")

        conn.add_notice_handler(notice)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        # every database failure is a StoreError: callers (the replica set above all) decide
        # on that alone, e.g. a new replica that has not replayed the schema yet
        if getattr(self._large, "active", False):
            with self._own_connection() as conn:
                yield conn
            return
        pool, conn = self._checkout()
        try:
            with conn:  # the pool's own connection() does the same: commit, or roll back
                yield conn
        except psycopg.Error as exc:
            self._after_failure(pool, conn, exc)
            raise _failure(self.name, exc) from None
        finally:
            pool.putconn(conn)

    @contextmanager
    def _own_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection outside the pool for a large message (see _LARGE_MESSAGE), with
        walk_timeout, closed after it: a pooled one would keep libpq's buffers that large."""
        options = f"-c statement_timeout={int(self.walk_timeout * 1000)}"
        try:
            conn = psycopg.connect(self.url, **{**self._connect_kwargs, "options": options})
        except psycopg.Error as exc:
            raise _failure(self.name, exc) from None
        try:
            self._configure(conn)
        except psycopg.Error as exc:
            conn.close()
            raise _failure(self.name, exc) from None
        try:
            with conn:  # commit, or roll back; then closed
                yield conn
        except psycopg.Error as exc:
            raise _failure(self.name, exc) from None
        finally:
            conn.close()

    def _after_failure(
        self, pool: ConnectionPool, conn: psycopg.Connection[Any], exc: psycopg.Error
    ) -> None:
        """After a failover the pool may hold connections to a node that died or was demoted:
        this one is closed if it reached a read-only node (the pool then discards it, and the
        multi-host URL finds the new leader), and idle ones that are broken are dropped now
        rather than one failed call each."""
        if getattr(exc, "sqlstate", None) == _READ_ONLY or conn.broken:
            conn.close()
            if self._checking.acquire(blocking=False):  # one sweep at a time

                def sweep() -> None:
                    try:
                        pool.check()
                    finally:
                        self._checking.release()

                threading.Thread(target=sweep, name=f"pool-check-{self.name}", daemon=True).start()

    def _checkout(self) -> tuple[ConnectionPool, psycopg.Connection[Any]]:
        pool = self._pool
        try:
            return pool, pool.getconn()
        except PoolTimeout as exc:
            revived = self._revive(pool)
            if revived is None:
                why = self._refused or str(exc)
                # Unreachable: a connection just tried found no server (not a busy pool, not
                # a refusal the server sent)
                unreachable = self._refused is not None and not self._refused_by_server
                error = Unreachable if unreachable else StoreError
                raise error(f"database {self.name} ({self.where}) unavailable: {why}") from None
            try:
                return revived, revived.getconn()
            except psycopg.Error as again:
                raise _failure(self.name, again) from None
        except psycopg.Error as exc:
            raise _failure(self.name, exc) from None

    def _revive(self, failed: ConnectionPool) -> ConnectionPool | None:
        """A fresh pool when the server answers again but the pool holds no connection.

        After an outage the pool retries its connections with a doubling backoff (1, 2, 4, 8 s),
        so a primary back after 8 s went unused for up to 7 s more: the responder answered
        tryLater for serials the primary held (seen in the primary-down drill). When one direct
        connection succeeds, the pool is replaced; None while the server still refuses."""
        with self._revive_lock:
            if self._pool is not failed:  # another thread revived it meanwhile
                return self._pool
            stats = failed.get_stats()
            if not stats.get("connections_errors") or stats.get("pool_available"):
                return None  # no failed connection attempt: busy or slow, not an outage
            try:
                psycopg.connect(self.url, **self._connect_kwargs).close()
            except psycopg.Error as exc:
                self._refused = _first_line(exc)
                self._refused_by_server = _server_answered(exc)
                return None
            self._refused = None
            self._refused_by_server = False
            self._pool = self._new_pool()
        log.info("database %s answers again; its connection pool was replaced", self.name)
        failed.close(timeout=0)
        return self._pool

    @contextmanager
    def _writing(self, durable: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """A transaction on one pooled connection.

        durable (recorded certificates, revocations, issuers, CRL numbers and CRLs): the commit
        waits as the server is configured; under Patroni's synchronous mode, until a synchronous
        standby has the WAL (R26), so a change acknowledged survives the leader's loss. That
        wait is bounded by the store's timeout: then PostgreSQL keeps the commit on the leader
        and only warns, and here the warning fails the write with NotAcknowledged instead of
        letting it pass as acknowledged.

        Not durable (claims, signed responses, the heartbeat, purge bookkeeping): committed
        with synchronous_commit = local, flushed on the leader without waiting for a standby;
        losing one in a failover only makes a row due again (it is re-signed)."""
        # a large message (see _LARGE_MESSAGE) may take as long to reach the standby as to send
        wait = self.walk_timeout if getattr(self._large, "active", False) else self.timeout
        with self._connection() as conn:
            warnings = self._unreplicated.setdefault(conn, [])
            warnings.clear()
            bound = None
            try:
                with conn.transaction():
                    if not durable:
                        conn.execute("SET LOCAL synchronous_commit = local")
                    yield conn
                    # the commit follows; statement_timeout does not cover its wait for the
                    # standby (PostgreSQL disarms it before committing), so a cancel request
                    # bounds it, and the warning it causes is caught below
                    if durable:
                        bound = threading.Timer(wait, _cancel, (conn,))
                        bound.start()
            finally:
                if bound is not None:
                    bound.cancel()
                    bound.join()
            if warnings and durable:
                raise NotAcknowledged(
                    f"database {self.name}: not acknowledged: no synchronous standby confirmed "
                    f"the write within {wait:g}s (committed on the leader only, and it "
                    "could be lost with it); retry it, and check `certstatus cluster status`"
                )

    def _reading(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._connection()

    def _executemany(self, db: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        assert isinstance(db, psycopg.Connection)  # the one _writing() gave
        if not rows:
            return 0
        with db.cursor() as cursor:
            cursor.executemany(sql, rows)
            return cursor.rowcount

    def _sql(self, statement: str) -> str:
        return _pg(statement)

    # byte order whatever the database's collation, so that it is numeric order (shared.py)
    _SERIAL_ORDER = 'ORDER BY length(serial), serial COLLATE "C"'

    def _stream(self, sql: str, parameters: Sequence[Any]) -> Iterator[Any]:
        """A server-side cursor fetching a few thousand rows at a time, in a read transaction
        that ends with the iteration; statement_timeout bounds each fetch, not the walk.

        Each fetch gets walk_timeout, not the store's few seconds: the first may have to sort
        the whole set. Rows just written (a mass revocation, a bulk load) are not yet marked
        all-visible, so the planner may prefer a sort to the covering index; a million
        revoked entries then took longer than 5 s to the first row on a loaded machine, and
        the CRL was not built at all."""
        with (
            self._reading() as db,
            db.transaction(),
            db.cursor(name="certstatus_stream") as cursor,
        ):
            db.execute(f"SET LOCAL statement_timeout = {int(self.walk_timeout * 1000)}")
            cursor.itersize = 5000
            cursor.execute(self._sql(sql), parameters)
            yield from cursor

    def current_crl(self, issuer_id: int, crl_partition: int) -> StoredCrl | None:
        """As on SQLite (shared.py), with the DER in binary format and in pieces of
        _LARGE_MESSAGE, all read in one snapshot. bytea in text format comes hex-encoded (a
        47 MB CRL, a million entries, peaked 270 MB above the process that way); in one binary
        piece it was held three times at once (libpq's input buffer, its result, Python's
        bytes), and the buffer stayed that large on the pooled connection afterwards. In pieces
        only the assembled DER is whole, and BytesIO hands it over without another copy."""
        where = "FROM crls WHERE issuer_id = %s AND crl_partition = %s"
        key = (issuer_id, crl_partition)
        with self._reading() as db, db.transaction(), db.cursor(binary=True) as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            columns = _CRL_COLUMNS.replace(", der", ", octet_length(der)")
            row = cursor.execute(f"SELECT {columns} {where}", key).fetchone()
            if row is None:
                return None
            *fields, size = row
            der = io.BytesIO()
            step = self.large_message
            for start in range(1, size + 1, step):  # substring counts from 1
                piece = cursor.execute(
                    f"SELECT substring(der FROM %s FOR %s) {where}", (start, step, *key)
                ).fetchone()
                if piece is None:  # cannot happen in one snapshot; never return a cut CRL
                    raise StoreError(f"database {self.name}: CRL {key} vanished while read")
                der.write(piece[0])
                del piece
        issuer, partition, number, this_update, next_update, next_build_at, entries = fields
        return StoredCrl(
            issuer, partition, number, this_update, next_update, next_build_at, entries,
            der.getvalue(),
        )  # fmt: skip

    def publish_crl(self, crl: StoredCrl, snapshot: int) -> bool:
        """As on SQLite. A large CRL (see _LARGE_MESSAGE) goes to a temporary table by binary
        COPY in pieces, and from there into crls: as one parameter it was copied twice on
        its way out (psycopg's and libpq's buffers, +88 MB for a million entries, the
        builder's peak), and the buffer stayed that large on the pooled connection. It is
        written with walk_timeout, on a connection of its own (_own_connection): 47 MB and its
        WAL took more than the store's 5 s on a loaded machine, and the CRL was never
        published."""
        if len(crl.der) < self.large_message:
            return super().publish_crl(crl, snapshot)
        self._large.active = True
        try:
            with self._writing() as db:
                db.execute("CREATE TEMPORARY TABLE crl_upload (der bytea) ON COMMIT DROP")
                with db.cursor().copy("COPY crl_upload (der) FROM STDIN (FORMAT binary)") as copy:
                    # binary COPY: signature, flags, extension length; one tuple of one field
                    copy.write(_PGCOPY + struct.pack("!iihi", 0, 0, 1, len(crl.der)))
                    whole = memoryview(crl.der)
                    for start in range(0, len(whole), self.large_message):
                        copy.write(whole[start : start + self.large_message])
                    copy.write(struct.pack("!h", -1))
                return self._publish_crl_in(db, crl, snapshot, der_from="crl_upload")
        finally:
            self._large.active = False

    def _migrate(self) -> None:
        with self._writing() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = {v for (v,) in db.execute("SELECT version FROM schema_migrations")}
            newest = max(v for v, _ in POSTGRES_MIGRATIONS)
            if applied and max(applied) > newest:
                raise StoreError(
                    f"database {self.name} has schema version {max(applied)}, newer "
                    f"than this certstatus knows ({newest}); upgrade certstatus"
                )
            for version, sql in POSTGRES_MIGRATIONS:
                if version not in applied:
                    db.execute(sql.encode())
                    db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            if not applied:
                db.execute(FRESH_DATABASE)

    def add_certificates(
        self, records: Sequence[CertificateRecord], now: int, audit: AuditContext = UNATTRIBUTED
    ) -> AddResult:
        """Set-wise, in chunks of _CHUNK rows per statement (each well inside the statement
        timeout): each new serial inserted once in its final state, ON CONFLICT DO NOTHING
        RETURNING telling which were really new (a concurrent ingest may have won a serial),
        then each stored precertificate upgraded once under its row lock; what each record
        did is replayed from those answers (additions.py), and the audit entries copied."""
        if not records:
            return AddResult(0, 0)
        return self.add_certificate_chunks([records], now, audit)

    def add_certificate_chunks(
        self,
        chunks: Iterable[Sequence[CertificateRecord]],
        now: int,
        audit: AuditContext = UNATTRIBUTED,
    ) -> AddResult:
        """As add_certificates of all the chunks' records, in one transaction, each chunk
        written as it comes: the server's work on one overlaps the caller's checking of the
        next, and an exception from chunks (a refused certificate) rolls back everything.
        The rows other writers wait on are only this batch's new serials, and the audit head
        is locked once the last chunk is in. Chunk after chunk ends as one set-wise batch
        would: each chunk's writes see the earlier chunks' rows (additions.py's rules)."""
        outcomes: list[tuple[int, int, str]] = []
        changes: list[audit_chain.Change] = []
        added = 0
        pending: list[CertificateRecord] = []
        with self._writing() as db:
            for records in itertools.chain(chunks, [None]):  # None: the end, write the rest
                if records is not None:
                    pending.extend(records)
                    if len(pending) < _CHUNK:  # random serials: a larger set in key order
                        continue  # touches fewer index pages than several small ones
                if pending:
                    result = self._add_chunk(db, pending, now)
                    outcomes.extend(result.outcomes)
                    changes.extend(result.changes)
                    added += result.added
                    pending = []
            self._append_audit(db, changes, audit, now)
        return AddResult(added, len(outcomes) - added, tuple(outcomes))

    def _add_chunk(
        self, db: psycopg.Connection[Any], records: Sequence[CertificateRecord], now: int
    ) -> additions.Outcomes:
        """records written in the caller's transaction; their outcomes and audit changes."""
        rows = additions.first_records(records)
        added: set[additions.Key] = set()
        items = additions.in_key_order(rows)
        for start in range(0, len(items), _CHUNK):
            chunk = [r for _, r in items[start : start + _CHUNK]]
            inserted = db.execute(
                "INSERT INTO certificates (issuer_id, serial, kind, not_after, ingested_at, "
                "priority, due_at, crl_partition, not_before) "
                "SELECT i, s, k, n, %s, %s, %s, p, b FROM unnest(%s::bigint[], %s::text[], "
                "%s::text[], %s::bigint[], %s::int[], %s::bigint[]) AS v(i, s, k, n, p, b) "
                "ON CONFLICT DO NOTHING RETURNING issuer_id, serial",
                (
                    now,
                    Priority.NEW,
                    additions.new_due_at(now),
                    arrays.integers(r.issuer_id for r in chunk),
                    arrays.hex_texts(serial_key(r.serial) for r in chunk),
                    arrays.hex_texts(r.kind for r in chunk),
                    arrays.integers(r.not_after for r in chunk),
                    arrays.integers(r.crl_partition for r in chunk),
                    arrays.integers(r.not_before for r in chunk),
                ),
            ).fetchall()
            added.update((int(i), s) for i, s in inserted)
        finals = list(additions.upgrading(records, {k for k in rows if k not in added}).items())
        upgraded: set[additions.Key] = set()
        for start in range(0, len(finals), _CHUNK):
            batch = finals[start : start + _CHUNK]
            upgraded.update(
                (int(i), s)
                for i, s in db.execute(
                    "UPDATE certificates c SET kind = 'cert', "
                    "not_before = coalesce(c.not_before, v.b) "
                    "FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS v(i, s, b) "
                    "WHERE c.issuer_id = v.i AND c.serial = v.s AND c.kind = 'precert' "
                    "RETURNING c.issuer_id, c.serial",
                    (
                        arrays.integers(i for (i, _), _ in batch),
                        arrays.hex_texts(s for (_, s), _ in batch),
                        arrays.integers(r.not_before for _, r in batch),
                    ),
                ).fetchall()
            )
        partitions = sorted({(r.issuer_id, r.crl_partition) for r in records})
        db.execute(  # the partitions the CRL builder must publish
            "INSERT INTO crl_state (issuer_id, crl_partition) SELECT * FROM "
            "unnest(%s::bigint[], %s::int[]) ON CONFLICT DO NOTHING",
            ([i for i, _ in partitions], [p for _, p in partitions]),
        )
        # before this chunk, as this transaction saw it: absent where it inserted, a
        # precertificate where it upgraded, otherwise something a record cannot change
        stored = {k: "precert" if k in upgraded else "cert" for k in rows if k not in added}
        return additions.outcomes(records, stored)

    def _insert_audit_rows(self, db: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """A large batch of entries by COPY: a statement per _CHUNK entries, instead of one
        per entry."""
        if len(rows) < 64:
            super()._insert_audit_rows(db, rows)
            return
        assert isinstance(db, psycopg.Connection)  # the one _writing() gave
        with db.cursor() as cursor:
            for start in range(0, len(rows), _CHUNK):  # each COPY inside the statement timeout
                with cursor.copy(f"COPY audit ({COLUMNS}) FROM STDIN") as copy:
                    for row in rows[start : start + _CHUNK]:
                        copy.write_row(row)

    # signing

    def claim_due(self, now: int, limit: int, lease: int) -> list[DueCertificate]:
        """Several signers on several hosts claim disjoint rows: SKIP LOCKED passes over rows
        another signer is claiming, and the lease hides claimed rows until it runs out."""
        claimed: list[DueCertificate] = []
        with self._writing(durable=False) as db:
            if self._leader_changed:
                self._release_claims(db, now)
            for priority in Priority:
                if len(claimed) >= limit:
                    break
                rows = db.execute(
                    "WITH due AS (SELECT issuer_id, serial FROM certificates "
                    "WHERE priority = %s AND due_at IS NOT NULL AND due_at <= %s "
                    "ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                    "UPDATE certificates c SET due_at = %s FROM due "
                    "WHERE c.issuer_id = due.issuer_id AND c.serial = due.serial "
                    "RETURNING c.issuer_id, c.serial, c.version, c.revoked, c.revoked_at, "
                    "c.reason, c.sha256_wanted_at > 0",
                    (priority, now, limit - len(claimed), now + lease),
                ).fetchall()
                claimed.extend(
                    DueCertificate(i, int(s, 16), v, bool(rv), ra, rs, priority, bool(w))
                    for i, s, v, rv, ra, rs, w in rows
                )
        return claimed

    def release_claims(self, claimed: Sequence[DueCertificate], now: int) -> None:
        """Make rows claimed but not signed (the key was unavailable) due again now, instead of
        after their lease; a row whose status changed meanwhile is already due."""
        if not claimed:
            return
        with self._writing(durable=False) as db:  # claim bookkeeping: redone if lost
            db.execute(
                "UPDATE certificates c SET due_at = %s FROM unnest(%s::bigint[], %s::text[], "
                "%s::bigint[]) AS v(issuer_id, serial, version) WHERE c.issuer_id = v.issuer_id "
                "AND c.serial = v.serial AND c.version = v.version AND c.due_at > %s",
                (
                    now,
                    arrays.integers(c.issuer_id for c in claimed),
                    arrays.hex_texts(serial_key(c.serial) for c in claimed),
                    arrays.integers(c.version for c in claimed),
                    now,
                ),
            )

    def _release_claims(self, db: psycopg.Connection[Any], now: int) -> None:
        """After the writer reached a new leader: new and revoked rows claimed but never signed
        there are due again now rather than when their lease ends (5 minutes by default).

        A claim and its signed response are committed asynchronously: a failover can keep the
        claim and lose the response (or lose the signer's batch in flight), which would leave a
        revocation acknowledged before the failover unsigned for a whole lease. Rows of
        another signer still working are signed twice at worst (the version guard keeps one).
        Refreshes keep their lease: their current response stays valid meanwhile."""
        with self._leader_lock:
            self._leader_changed = False
        released = db.execute(
            "UPDATE certificates SET due_at = %s WHERE priority < %s AND due_at > %s",
            (now, Priority.REFRESH, now),
        ).rowcount
        log.info("writer reached a new server: %d claimed, unsigned rows due again", released)

    def store_signed(self, responses: Sequence[SignedResponse], now: int) -> int:
        """One statement: update the certificate rows whose version is still the claimed one
        (taking their row locks, so a concurrent revocation either waits or wins), and store
        responses for exactly those rows; a SHA-1-only row of a certificate asked for with
        SHA-256 since its claim is skipped too (it is due again: sha256requests.py)."""
        if not responses:
            return 0
        with self._writing(durable=False) as db:
            responses, ids = self._as_stored(db, responses)
            blob, starts, lengths = arrays.slices(
                der for r in responses for der in (r.der_sha1, r.der_sha256)
            )
            cur = db.execute(
                "WITH v AS (SELECT issuer_id, serial, version, this_update, next_update, "
                "refresh_at, substring(%(blob)b FROM starts[2 * n - 1] FOR lengths[2 * n - 1]) "
                "AS der_sha1, substring(%(blob)b FROM starts[2 * n] FOR lengths[2 * n]) AS "
                "der_sha256, certs_id FROM unnest(%(issuer)s::bigint[], %(serial)s::text[], "
                "%(version)s::bigint[], %(this)s::bigint[], %(next)s::bigint[], "
                "%(refresh)s::bigint[], %(certs)s::bigint[]) WITH ORDINALITY AS u(issuer_id, "
                "serial, version, this_update, next_update, refresh_at, certs_id, n), "
                "(SELECT %(starts)s::int[] AS starts, %(lengths)s::int[] AS lengths) AS d), "
                "kept AS (UPDATE certificates c SET priority = %(refresh_priority)s, "
                "due_at = CASE WHEN v.refresh_at < c.not_after THEN v.refresh_at END FROM v "
                "WHERE c.issuer_id = v.issuer_id AND c.serial = v.serial "
                "AND c.version = v.version "
                "AND (length(v.der_sha256) > 0 OR c.sha256_wanted_at = 0) "
                "RETURNING c.issuer_id, c.serial) "
                "INSERT INTO responses (issuer_id, serial, version, this_update, next_update, "
                "refresh_at, der_sha1, der_sha256, certs_id) SELECT v.* FROM v JOIN kept "
                "ON kept.issuer_id = v.issuer_id AND kept.serial = v.serial "
                "ON CONFLICT (issuer_id, serial) DO UPDATE SET version = excluded.version, "
                "this_update = excluded.this_update, next_update = excluded.next_update, "
                "refresh_at = excluded.refresh_at, der_sha1 = excluded.der_sha1, "
                "der_sha256 = excluded.der_sha256, certs_id = excluded.certs_id "
                "WHERE excluded.version >= responses.version",
                {
                    "issuer": arrays.integers(r.issuer_id for r in responses),
                    "serial": arrays.hex_texts(serial_key(r.serial) for r in responses),
                    "version": arrays.integers(r.version for r in responses),
                    "this": arrays.integers(r.this_update for r in responses),
                    "next": arrays.integers(r.next_update for r in responses),
                    "refresh": arrays.integers(r.refresh_at for r in responses),
                    "certs": arrays.integers(ids[r.certs] for r in responses),
                    "blob": blob,
                    "starts": starts,
                    "lengths": lengths,
                    "refresh_priority": Priority.REFRESH,
                },
            )
            return cur.rowcount

    def response(
        self, issuer_id: int, serial: int, algorithm: HashAlgorithm = HashAlgorithm.SHA1
    ) -> StoredResponse | None:
        with self._connection() as db:
            row = db.execute(
                _RESPONSE_BY_ALGORITHM[algorithm], (issuer_id, serial_key(serial))
            ).fetchone()
            return self._completed(db, row, self.name)

    def responses(self, keys: Sequence[ResponseKey]) -> list[StoredResponse | None]:
        """Many lookups in one round trip per (issuer, hash algorithm): what the responder's
        batching sends when requests arrive together (responder/lookup.py, store/pglookup.py)."""
        with self._connection() as db:
            return read_responses(db, self.name, keys)

    def want_sha256(self, issuer_id: int, serial: int, now: int) -> bool:
        """Through the schema-13 function, which runs with its owner's rights: a web node's
        role needs EXECUTE on it, not UPDATE on certificates (store/schema.py). The server's
        clock is the ask's time, not `now`: a web node must not choose its own interval."""
        with self._writing(durable=False) as db:  # a lost ask is asked again by the client
            row = db.execute(
                "SELECT certstatus_want_sha256(%s, %s)", (issuer_id, serial_key(serial))
            ).fetchone()
            return bool(row and row[0])

    def recorded(self, keys: Sequence[ResponseKey]) -> list[bool]:
        """Whether each key's certificate is recorded (signed or not): one query per issuer."""
        by_issuer: dict[int, list[str]] = {}
        for issuer_id, serial, _ in keys:
            by_issuer.setdefault(issuer_id, []).append(serial_key(serial))
        found: set[tuple[int, str]] = set()
        with self._connection() as db:
            for issuer_id, serials in by_issuer.items():
                rows = db.execute(
                    "SELECT serial FROM certificates WHERE issuer_id = %s AND serial = ANY(%s)",
                    (issuer_id, serials),
                ).fetchall()
                found.update((issuer_id, s) for (s,) in rows)
        return [(i, serial_key(s)) in found for i, s, _ in keys]

    def replication(self) -> list[dict[str, Any]]:
        """Each replication slot as the primary sees it, with its standby's lag in bytes."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT s.slot_name, s.active, s.wal_status, s.safe_wal_size, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(r.replay_lsn, s.restart_lsn)) "
                "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r "
                "ON r.pid = s.active_pid WHERE s.slot_type = 'physical'"
            ).fetchall()
        keys = ("slot", "active", "wal_status", "safe_wal_size", "bytes_behind")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def wal_keep_bytes(self) -> int | None:
        """max_slot_wal_keep_size in bytes, or None when unlimited (-1)."""
        with self._connection() as db:
            row = db.execute(
                "SELECT setting::bigint * 1024 * 1024 FROM pg_settings "
                "WHERE name = 'max_slot_wal_keep_size'"
            ).fetchone()
        assert row is not None
        return None if row[0] < 0 else int(row[0])

    # health, time, heartbeat

    def ping(self) -> None:
        with self._connection() as db:
            db.execute("SELECT 1")

    def server_time(self) -> float:
        """The database server's clock, to refuse signing when ours disagrees (F10)."""
        with self._connection() as db:
            row = db.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        assert row is not None
        return float(row[0])

    def beat(self) -> None:
        """Write the heartbeat, flushed on the leader but never waiting for a synchronous
        standby: it is every replica's clock, and one slow standby must not stop it."""
        with self._writing(durable=False) as db:
            db.execute(f"UPDATE heartbeat SET at_ms = {_NOW_MS} WHERE id = 1")

    def heartbeat_age(self) -> float | None:
        """Seconds since the heartbeat this server holds was written (its replayed heartbeat on a
        replica). Grows if replay stops, the link hangs, WAL is lost or the writer dies. None
        while no heartbeat was ever written (the row starts at 0): "no heartbeat yet" is a
        state of its own, not an age counted from 1970."""
        with self._connection() as db:
            row = db.execute(
                f"SELECT {_NOW_MS} - at_ms, at_ms FROM heartbeat WHERE id = 1"
            ).fetchone()
        assert row is not None
        if row[1] == 0:
            return None
        return max(0.0, row[0] / 1000.0)

    def sample_state(self) -> tuple[float | None, frozenset[str]]:
        """The heartbeat's age (as heartbeat_age) and the drained sites, in one round trip:
        what a responder samples from each source ten times a second."""
        with self._connection() as db:
            row = db.execute(
                f"SELECT {_NOW_MS} - at_ms, at_ms, ARRAY(SELECT site FROM site_drains) "
                "FROM heartbeat WHERE id = 1"
            ).fetchone()
        assert row is not None
        age = None if row[1] == 0 else max(0.0, row[0] / 1000.0)
        return age, frozenset(row[2])

    def close(self) -> None:
        self.loop_reader.close()
        self._pool.close()


def _cancel(conn: psycopg.Connection[Any]) -> None:
    """Ask the server to stop what the connection runs (a commit waiting for its standby)."""
    try:
        conn.cancel_safe(timeout=2)
    except (psycopg.Error, OSError) as exc:
        log.warning("cancelling a commit's wait for its standby failed: %s", exc)


def _failure(name: str, exc: psycopg.Error) -> StoreError:
    """A database error as one line: psycopg's text may add the statement and a caret. A
    permission error says what it is, not "unavailable": the server answered, and the role in
    the URL lacks a grant (README: what each role needs)."""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return StoreError(
            f"database {name}: {_first_line(exc)} (a grant the role in its URL lacks)"
        )
    lost = isinstance(exc, psycopg.OperationalError) and not _server_answered(exc)
    return (Unreachable if lost else StoreError)(f"database {name} unavailable: {_first_line(exc)}")


def _server_answered(exc: psycopg.Error) -> bool:
    """Whether the server itself refused (a role or database that does not exist, a bad
    password): then it is reachable, and the error is the operator's to fix. psycopg gives
    no SQLSTATE for errors while connecting, so this reads libpq's text, which puts the
    server's severity before its message; refused, timed out or lost connections have none."""
    if getattr(exc, "sqlstate", None):
        return True
    return any(f"{severity}:  " in str(exc) for severity in ("FATAL", "ERROR", "PANIC"))


def _first_line(exc: BaseException) -> str:
    """libpq's message without its hint lines ("Is the server running on that host..."):
    errors reach an operator as one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def wait_for_server(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
