"""The embedded store: one SQLite file in WAL mode, safe for one writer and many readers.

synchronous=FULL because a revocation that was acknowledged must survive a power cut; the cost
is one fsync per write transaction, and writes are batched. The statements SQLite shares with
PostgreSQL are in shared.py; here are its connections (one per thread), its transactions (the
database-wide write lock, taken up front), and the writes it makes row by row.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from certstatus.files import create_private
from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store import additions
from certstatus.store.base import (
    UNATTRIBUTED,
    AddResult,
    AuditContext,
    CertificateRecord,
    DueCertificate,
    Priority,
    SignedResponse,
    StoredCrl,
    StoredResponse,
    StoreError,
    serial_key,
)
from certstatus.store.schema import FRESH_DATABASE, SQLITE_MIGRATIONS
from certstatus.store.shared import RESPONSE_BY_ALGORITHM, Connection, SqlStore

_BULK_ROWS = 5_000  # a batch this large writes with _BULK_CACHE_KIB of page cache
_BULK_CACHE_KIB = 65_536
# WAL pages a commit may leave before it copies them into the database (SQLite's default is
# 1 000, 4 MiB). Each such checkpoint waits on two fsyncs inside the committing call; the
# signer commits a claim and a store per batch, so at the default it waited on them every
# few batches: a quarter of its main process's time, while its signing workers idled.
# 16 384 pages (64 MiB of WAL at most, plus what a long reader pins) measured 11-29 % more
# responses per second on SQLite at 10^5-10^6 certificates (docs/benchmarks.md).
_CHECKPOINT_PAGES = 16_384


class SqliteStore(SqlStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.parent.exists():
            raise StoreError(f"database: directory {path.parent} does not exist")
        try:  # 0600 from the start: SQLite gives its -wal and -shm files this file's mode
            create_private(path)
        except OSError as exc:
            raise StoreError(f"database: cannot create {path}: {exc.strerror}") from None
        self._local = threading.local()
        with self._writing() as db:
            self._migrate(db)

    @property
    def where(self) -> str:
        """The database file, for messages."""
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA busy_timeout = 30000")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
                db.execute("PRAGMA foreign_keys = ON")
                db.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            except sqlite3.Error as exc:
                raise StoreError(f"database: cannot open {self.path}: {exc}") from None
            self._local.db = db
        return db

    @contextmanager
    def _writing(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (IMMEDIATE), so read-then-write cannot race.

        durable=False skips the fsync at commit, for the signer's claims and stored responses:
        losing them in a power cut only makes rows due again. The WAL is append-only, so the next
        durable commit (an ingest or a revocation) makes everything before it durable too.
        """
        db = self._connect()
        if not durable:
            db.execute("PRAGMA synchronous = NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            if not durable:
                db.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        yield self._connect()

    def _executemany(self, db: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        assert isinstance(db, sqlite3.Connection)  # the one _writing() gave
        return db.executemany(sql, rows).rowcount

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL DEFAULT (unixepoch()))"
        )
        applied = {v for (v,) in db.execute("SELECT version FROM schema_migrations")}
        newest = max((v for v, _ in SQLITE_MIGRATIONS), default=0)
        if applied and max(applied) > newest:
            raise StoreError(
                f"database {self.path} has schema version {max(applied)}, newer than this "
                f"certstatus knows ({newest}); upgrade certstatus"
            )
        for version, sql in SQLITE_MIGRATIONS:
            if version in applied:
                continue
            for statement in filter(str.strip, sql.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
        if not applied:
            db.execute(FRESH_DATABASE)

    def add_certificates(
        self, records: Sequence[CertificateRecord], now: int, audit: AuditContext = UNATTRIBUTED
    ) -> AddResult:
        """Set-wise, under the write lock taken up front: the stored kinds of the batch's
        serials are read once, so what each record does is known before writing (additions.py),
        and the inserts, upgrades and audit entries go in one executemany each."""
        if not records:
            return AddResult(0, 0)
        rows = additions.first_records(records)
        with self._bulk_cache(len(records)), self._writing() as db:
            stored = self._stored_kinds(db, list(rows))
            result = additions.outcomes(records, stored)
            db.executemany(
                "INSERT INTO certificates (issuer_id, serial, kind, not_after, ingested_at, "
                "priority, due_at, crl_partition, not_before) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i,
                        s,
                        r.kind,
                        r.not_after,
                        now,
                        Priority.NEW,
                        additions.new_due_at(now),
                        r.crl_partition,
                        r.not_before,
                    )
                    for (i, s), r in additions.in_key_order(rows)
                    if (i, s) not in stored
                ],
            )
            precerts = {k for k, kind in stored.items() if kind == "precert"}
            db.executemany(
                "UPDATE certificates SET kind = 'cert', not_before = coalesce(not_before, ?) "
                "WHERE issuer_id = ? AND serial = ? AND kind = 'precert'",
                [
                    (r.not_before, i, s)
                    for (i, s), r in additions.upgrading(records, precerts).items()
                ],
            )
            db.executemany(  # the partitions the CRL builder must publish
                "INSERT INTO crl_state (issuer_id, crl_partition) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                {(r.issuer_id, r.crl_partition) for r in records},
            )
            self._append_audit(db, result.changes, audit, now)
        return AddResult(result.added, len(records) - result.added, result.outcomes)

    def add_certificate_chunks(
        self,
        chunks: Iterable[Sequence[CertificateRecord]],
        now: int,
        audit: AuditContext = UNATTRIBUTED,
    ) -> AddResult:
        """add_certificates of every chunk's records, once the last chunk is in: the write
        transaction holds the whole database, and must not wait on a caller still checking
        certificates (PostgreSQL writes each chunk as it comes)."""
        return self.add_certificates([r for records in chunks for r in records], now, audit)

    @contextmanager
    def _bulk_cache(self, rows: int) -> Iterator[None]:
        """A larger page cache on this connection while it writes a large batch: with the
        default 2 MiB, the pages of a 50 000-row batch (the table, its four indexes, the audit
        rows and theirs) are spilled to the WAL and read back while the batch is written,
        and inserting took a third more CPU. Given back afterwards."""
        if rows < _BULK_ROWS:
            yield
            return
        db = self._connect()
        (before,) = db.execute("PRAGMA cache_size").fetchone()
        db.execute(f"PRAGMA cache_size = {-_BULK_CACHE_KIB}")
        try:
            yield
        finally:
            db.execute(f"PRAGMA cache_size = {int(before)}")

    @staticmethod
    def _stored_kinds(
        db: sqlite3.Connection, keys: list[additions.Key]
    ) -> dict[additions.Key, str]:
        """The kind of each key already stored, a chunk of keys per statement (SQLite's
        parameter limit); inside the write transaction, so nothing changes them meanwhile."""
        stored: dict[additions.Key, str] = {}
        by_issuer: dict[int, list[str]] = {}
        for issuer_id, serial in keys:
            by_issuer.setdefault(issuer_id, []).append(serial)
        for issuer_id, serials in by_issuer.items():
            for start in range(0, len(serials), 500):
                chunk = serials[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for serial, kind in db.execute(
                    f"SELECT serial, kind FROM certificates WHERE issuer_id = ? "
                    f"AND serial IN ({marks})",
                    (issuer_id, *chunk),
                ):
                    stored[(issuer_id, serial)] = kind
        return stored

    def claim_due(self, now: int, limit: int, lease: int) -> list[DueCertificate]:
        claimed: list[DueCertificate] = []
        with self._writing(durable=False) as db:
            for priority in Priority:
                if len(claimed) >= limit:
                    break
                rows = db.execute(
                    "SELECT issuer_id, serial, version, revoked, revoked_at, reason, "
                    "sha256_wanted_at > 0 "
                    "FROM certificates WHERE priority = ? AND due_at IS NOT NULL AND due_at <= ? "
                    "ORDER BY due_at LIMIT ?",
                    (priority, now, limit - len(claimed)),
                ).fetchall()
                db.executemany(
                    "UPDATE certificates SET due_at = ? WHERE issuer_id = ? AND serial = ?",
                    [(now + lease, r[0], r[1]) for r in rows],
                )
                claimed.extend(
                    DueCertificate(i, int(s, 16), v, bool(rv), ra, rs, priority, bool(w))
                    for i, s, v, rv, ra, rs, w in rows
                )
        return claimed

    def release_claims(self, claimed: Sequence[DueCertificate], now: int) -> None:
        """Make rows claimed but not signed (the key was unavailable) due again now, instead of
        after their lease; a row whose status changed meanwhile is already due."""
        with self._writing(durable=False) as db:
            db.executemany(
                "UPDATE certificates SET due_at = ? WHERE issuer_id = ? AND serial = ? "
                "AND version = ? AND due_at > ?",
                [(now, c.issuer_id, serial_key(c.serial), c.version, now) for c in claimed],
            )

    def store_signed(self, responses: Sequence[SignedResponse], now: int) -> int:
        """Both statements carry the version guard, in one transaction, so they agree on which
        rows are still current; rows whose status changed since the claim are skipped, and so
        are SHA-1-only rows of a certificate asked for with SHA-256 since (sha256requests.py)."""
        with self._writing(durable=False) as db:
            responses, ids = self._as_stored(db, responses)
            rows = [
                (
                    r.issuer_id,
                    serial_key(r.serial),
                    r.version,
                    r.this_update,
                    r.next_update,
                    r.refresh_at,
                    r.der_sha1,
                    r.der_sha256,
                    ids[r.certs],
                )
                for r in responses
            ]
            before = db.total_changes
            db.executemany(
                "INSERT INTO responses (issuer_id, serial, version, this_update, next_update, "
                "refresh_at, der_sha1, der_sha256, certs_id) "
                "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 FROM certificates "
                "WHERE issuer_id = ?1 AND serial = ?2 AND version = ?3 "
                "AND (length(?8) > 0 OR sha256_wanted_at = 0) "
                "ON CONFLICT (issuer_id, serial) DO UPDATE SET version = excluded.version, "
                "this_update = excluded.this_update, next_update = excluded.next_update, "
                "refresh_at = excluded.refresh_at, der_sha1 = excluded.der_sha1, "
                "der_sha256 = excluded.der_sha256, certs_id = excluded.certs_id "
                "WHERE excluded.version >= responses.version",
                rows,
            )
            stored = db.total_changes - before
            db.executemany(
                "UPDATE certificates SET priority = ?5, "
                "due_at = CASE WHEN ?4 < not_after THEN ?4 ELSE NULL END "
                "WHERE issuer_id = ?1 AND serial = ?2 AND version = ?3 "
                "AND (?6 OR sha256_wanted_at = 0)",
                [(r[0], r[1], r[2], r[5], Priority.REFRESH, bool(r[7])) for r in rows],
            )
        return stored

    def publish_crl(self, crl: StoredCrl, snapshot: int) -> bool:
        """Python's sqlite3 never clears a cached statement's bound parameters, and SQLite
        binds a copy of a BLOB: the statement that stored a CRL would keep a copy of it (50 MB
        for a million entries) until the next one. This thread's connection is closed after
        publishing, which frees it; a CRL is published every few minutes at most."""
        try:
            return super().publish_crl(crl, snapshot)
        finally:
            self.close()

    def response(
        self, issuer_id: int, serial: int, algorithm: HashAlgorithm = HashAlgorithm.SHA1
    ) -> StoredResponse | None:
        db = self._connect()
        try:
            row = db.execute(
                RESPONSE_BY_ALGORITHM[algorithm], (issuer_id, serial_key(serial))
            ).fetchone()
            return self._completed(db, row)
        except sqlite3.Error as exc:  # locked past the busy timeout, I/O: tryLater, not a bug
            raise StoreError(f"database {self.path}: {exc}") from None

    def recorded(self, keys: Sequence[tuple[int, int, HashAlgorithm]]) -> list[bool]:
        """Whether each key's certificate is recorded, signed or not (as PostgresStore's):
        asked only on a miss, so that a certificate recorded but not signed yet gets tryLater
        rather than "unauthorized"."""
        db = self._connect()
        try:
            return [
                db.execute(
                    "SELECT 1 FROM certificates WHERE issuer_id = ? AND serial = ?",
                    (issuer_id, serial_key(serial)),
                ).fetchone()
                is not None
                for issuer_id, serial, _ in keys
            ]
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {exc}") from None

    def ping(self) -> None:
        try:
            self._connect().execute("SELECT 1 FROM schema_migrations LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path} does not answer: {exc}") from None

    def server_time(self) -> float | None:
        return None  # the database is a file on this machine: its clock is ours

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
