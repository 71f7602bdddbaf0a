"""The embedded store: one SQLite file in WAL mode, safe for one writer and many readers.

synchronous=FULL because a revocation that was acknowledged must survive a power cut; the cost
is one fsync per write transaction, and writes are batched.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.status import RevocationState, RevokedEntry, revocation_transition
from certstatus.store import monitoring, purgequeue
from certstatus.store.base import (
    CERTIFICATE_COLUMNS,
    AddResult,
    CertificateRecord,
    CertificateRow,
    DueCertificate,
    IssuerRecord,
    PendingPurge,
    Priority,
    PurgeBacklog,
    SignedResponse,
    StoredCrl,
    StoredResponse,
    StoreError,
    UnknownCertificate,
    certificate_from_row,
    serial_key,
)
from certstatus.store.monitoring import Freshness, NewCertificate
from certstatus.store.schema import SQLITE_MIGRATIONS

# One query per CertID hash, so a lookup copies only the DER it serves.
_RESPONSE_BY_ALGORITHM = {
    algorithm: f"SELECT der_{algorithm.value}, this_update, next_update, refresh_at "
    "FROM responses WHERE issuer_id = ? AND serial = ?"
    for algorithm in HashAlgorithm
}


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.parent.exists():
            raise StoreError(f"database: directory {path.parent} does not exist")
        self._local = threading.local()
        with self._transaction() as db:
            self._migrate(db)

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA busy_timeout = 30000")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
                db.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error as exc:
                raise StoreError(f"database: cannot open {self.path}: {exc}") from None
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
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

    def schema_version(self) -> int:
        (version,) = (
            self._connect().execute("SELECT max(version) FROM schema_migrations").fetchone()
        )
        return int(version)

    def ensure_issuer(self, name: str, certificate_der: bytes) -> int:
        with self._transaction() as db:
            row = db.execute(
                "SELECT id, certificate FROM issuers WHERE name = ?", (name,)
            ).fetchone()
            if row is not None:
                if row[1] != certificate_der:
                    raise StoreError(
                        f"issuer {name!r} is already recorded with a different certificate; "
                        "an issuer's certificate cannot change under the same name"
                    )
                return int(row[0])
            cur = db.execute(
                "INSERT INTO issuers (name, certificate) VALUES (?, ?)", (name, certificate_der)
            )
            return int(cur.lastrowid or 0)

    def issuers(self) -> list[IssuerRecord]:
        rows = self._connect().execute("SELECT id, name, certificate FROM issuers ORDER BY id")
        return [IssuerRecord(i, n, c) for i, n, c in rows]

    def add_certificates(self, records: Sequence[CertificateRecord], now: int) -> AddResult:
        added = 0
        with self._transaction() as db:
            for r in records:
                cur = db.execute(
                    "INSERT INTO certificates (issuer_id, serial, kind, not_after, ingested_at, "
                    "priority, due_at, crl_partition) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        r.issuer_id,
                        serial_key(r.serial),
                        r.kind,
                        r.not_after,
                        now,
                        Priority.NEW,
                        now,
                        r.crl_partition,
                    ),
                )
                if cur.rowcount:
                    added += 1
                elif r.kind == "cert":
                    db.execute(
                        "UPDATE certificates SET kind = 'cert' "
                        "WHERE issuer_id = ? AND serial = ? AND kind = 'precert'",
                        (r.issuer_id, serial_key(r.serial)),
                    )
            db.executemany(  # the partitions the CRL builder must publish
                "INSERT INTO crl_state (issuer_id, crl_partition) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                {(r.issuer_id, r.crl_partition) for r in records},
            )
        return AddResult(added, len(records) - added)

    def revoke(
        self, issuer_id: int, serial: int, time: int, reason: int, time_given: bool, now: int
    ) -> CertificateRow:
        key = serial_key(serial)
        with self._transaction() as db:
            row = db.execute(
                "SELECT revoked, revoked_at, reason FROM certificates "
                "WHERE issuer_id = ? AND serial = ?",
                (issuer_id, key),
            ).fetchone()
            if row is None:
                raise UnknownCertificate(f"serial {key} is not known for this issuer")
            state = revocation_transition(
                RevocationState(bool(row[0]), row[1], row[2]), time, reason, time_given
            )
            db.execute(
                "UPDATE certificates SET revoked = 1, revoked_at = ?, reason = ?, "
                "version = version + 1, priority = ?, due_at = ?, revoked_recorded_at = ? "
                "WHERE issuer_id = ? AND serial = ?",
                (state.time, state.reason, Priority.REVOKED, now, now, issuer_id, key),
            )
            # the partition's CRL is now due (after the debounce window); the oldest revocation
            # not yet on a published CRL decides when
            db.execute(
                "INSERT INTO crl_state (issuer_id, crl_partition, dirty_since) "
                "SELECT issuer_id, crl_partition, ? FROM certificates "
                "WHERE issuer_id = ? AND serial = ? "
                "ON CONFLICT DO UPDATE SET dirty_since = coalesce(dirty_since, excluded.dirty_since)",
                (now, issuer_id, key),
            )
            found = db.execute(
                f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE issuer_id = ? AND serial = ?",
                (issuer_id, key),
            ).fetchone()
            revoked = certificate_from_row(found)
            db.execute(purgequeue.ENQUEUE_OCSP, (issuer_id, key, revoked.version, now))
        return revoked

    def certificate(self, issuer_id: int, serial: int) -> CertificateRow | None:
        row = (
            self._connect()
            .execute(
                f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE issuer_id = ? AND serial = ?",
                (issuer_id, serial_key(serial)),
            )
            .fetchone()
        )
        return None if row is None else certificate_from_row(row)

    def claim_due(self, now: int, limit: int, lease: int) -> list[DueCertificate]:
        claimed: list[DueCertificate] = []
        with self._transaction(durable=False) as db:
            for priority in Priority:
                if len(claimed) >= limit:
                    break
                rows = db.execute(
                    "SELECT issuer_id, serial, version, revoked, revoked_at, reason "
                    "FROM certificates WHERE priority = ? AND due_at IS NOT NULL AND due_at <= ? "
                    "ORDER BY due_at LIMIT ?",
                    (priority, now, limit - len(claimed)),
                ).fetchall()
                db.executemany(
                    "UPDATE certificates SET due_at = ? WHERE issuer_id = ? AND serial = ?",
                    [(now + lease, r[0], r[1]) for r in rows],
                )
                claimed.extend(
                    DueCertificate(i, int(s, 16), v, bool(rv), ra, rs, priority)
                    for i, s, v, rv, ra, rs in rows
                )
        return claimed

    def store_signed(self, responses: Sequence[SignedResponse], now: int) -> int:
        """Both statements carry the version guard, in one transaction, so they agree on which
        rows are still current; rows whose status changed since the claim are skipped."""
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
            )
            for r in responses
        ]
        with self._transaction(durable=False) as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO responses (issuer_id, serial, version, this_update, next_update, "
                "refresh_at, der_sha1, der_sha256) "
                "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM certificates "
                "WHERE issuer_id = ?1 AND serial = ?2 AND version = ?3 "
                "ON CONFLICT (issuer_id, serial) DO UPDATE SET version = excluded.version, "
                "this_update = excluded.this_update, next_update = excluded.next_update, "
                "refresh_at = excluded.refresh_at, der_sha1 = excluded.der_sha1, "
                "der_sha256 = excluded.der_sha256 "
                "WHERE excluded.version >= responses.version",
                rows,
            )
            stored = db.total_changes - before
            db.executemany(
                "UPDATE certificates SET priority = ?5, "
                "due_at = CASE WHEN ?4 < not_after THEN ?4 ELSE NULL END "
                "WHERE issuer_id = ?1 AND serial = ?2 AND version = ?3",
                [(r[0], r[1], r[2], r[5], Priority.REFRESH) for r in rows],
            )
        return stored

    def response(
        self, issuer_id: int, serial: int, algorithm: HashAlgorithm = HashAlgorithm.SHA1
    ) -> StoredResponse | None:
        query = _RESPONSE_BY_ALGORITHM[algorithm]
        row = self._connect().execute(query, (issuer_id, serial_key(serial))).fetchone()
        return None if row is None else StoredResponse(*row)

    def due_count(self, now: int) -> dict[Priority, int]:
        db = self._connect()
        return {
            p: db.execute(
                "SELECT count(*) FROM certificates WHERE priority = ? AND due_at IS NOT NULL "
                "AND due_at <= ?",
                (p, now),
            ).fetchone()[0]
            for p in Priority
        }

    def crl_partitions_in_use(self, issuer_id: int) -> set[int]:
        rows = self._connect().execute(
            "SELECT crl_partition FROM crl_state WHERE issuer_id = ? "
            "UNION SELECT crl_partition FROM crls WHERE issuer_id = ?",
            (issuer_id, issuer_id),
        )
        return {p for (p,) in rows}

    def revoked_entries(
        self, issuer_id: int, crl_partition: int, not_after_from: int
    ) -> list[RevokedEntry]:
        rows = self._connect().execute(
            "SELECT serial, revoked_at, reason FROM certificates WHERE revoked = 1 "
            "AND issuer_id = ? AND crl_partition = ? AND not_after >= ?",
            (issuer_id, crl_partition, not_after_from),
        )
        return [RevokedEntry(int(s, 16), at, reason or 0) for s, at, reason in rows]

    def revoked_recorded_before(
        self, issuer_id: int, crl_partition: int, recorded_before: int, not_after_from: int
    ) -> set[int]:
        rows = self._connect().execute(
            "SELECT serial FROM certificates WHERE revoked = 1 AND issuer_id = ? "
            "AND crl_partition = ? AND not_after >= ? AND revoked_recorded_at < ?",
            (issuer_id, crl_partition, not_after_from, recorded_before),
        )
        return {int(s, 16) for (s,) in rows}

    def not_after_of(self, issuer_id: int, serials: set[int]) -> dict[int, int]:
        db = self._connect()
        found: dict[int, int] = {}
        keys = [serial_key(s) for s in serials]
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT serial, not_after FROM certificates WHERE issuer_id = ? "
                f"AND serial IN ({marks})",
                (issuer_id, *chunk),
            )
            found.update((int(s, 16), n) for s, n in rows)
        return found

    def reserve_crl_number(self, issuer_id: int, crl_partition: int) -> int:
        with self._transaction() as db:
            (number,) = db.execute(
                "INSERT INTO crl_state (issuer_id, crl_partition, next_number) VALUES (?, ?, 2) "
                "ON CONFLICT DO UPDATE SET next_number = next_number + 1 "
                "RETURNING next_number - 1",
                (issuer_id, crl_partition),
            ).fetchone()
        return int(number)

    def current_crl(self, issuer_id: int, crl_partition: int) -> StoredCrl | None:
        row = (
            self._connect()
            .execute(
                "SELECT issuer_id, crl_partition, crl_number, this_update, next_update, "
                "next_build_at, entries, der FROM crls WHERE issuer_id = ? AND crl_partition = ?",
                (issuer_id, crl_partition),
            )
            .fetchone()
        )
        return None if row is None else StoredCrl(*row)

    def publish_crl(self, crl: StoredCrl, snapshot: int) -> bool:
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO crls (issuer_id, crl_partition, crl_number, this_update, "
                "next_update, next_build_at, entries, der) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET crl_number = excluded.crl_number, "
                "this_update = excluded.this_update, next_update = excluded.next_update, "
                "next_build_at = excluded.next_build_at, entries = excluded.entries, "
                "der = excluded.der WHERE excluded.crl_number > crls.crl_number",
                (
                    crl.issuer_id,
                    crl.crl_partition,
                    crl.number,
                    crl.this_update,
                    crl.next_update,
                    crl.next_build_at,
                    crl.entries,
                    crl.der,
                ),
            )
            if not cur.rowcount:
                return False
            db.execute(
                "UPDATE crl_state SET dirty_since = (SELECT min(revoked_recorded_at) "
                "FROM certificates WHERE revoked = 1 AND issuer_id = ?1 AND crl_partition = ?2 "
                "AND revoked_recorded_at >= ?3) WHERE issuer_id = ?1 AND crl_partition = ?2",
                (crl.issuer_id, crl.crl_partition, snapshot),
            )
            now = int(time.time())
            db.execute(purgequeue.ENQUEUE_CRL, (crl.issuer_id, crl.crl_partition, now, now))
        return True

    def crl_dirty_since(self, issuer_id: int) -> dict[int, int]:
        rows = self._connect().execute(
            "SELECT crl_partition, dirty_since FROM crl_state "
            "WHERE issuer_id = ? AND dirty_since IS NOT NULL",
            (issuer_id,),
        )
        return dict(rows.fetchall())

    def record_crl_rejection(
        self, issuer_id: int, crl_partition: int, number: int, code: str, message: str, at: int
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO crl_rejections (issuer_id, crl_partition, crl_number, code, message, "
                "at) VALUES (?, ?, ?, ?, ?, ?)",
                (issuer_id, crl_partition, number, code, message, at),
            )

    def crl_rejection_count(self) -> int:
        (count,) = self._connect().execute("SELECT count(*) FROM crl_rejections").fetchone()
        return int(count)

    # purge queue (store/purgequeue.py)

    def mark_purges_ready(self, now: int) -> int:
        with self._transaction(durable=False) as db:
            return db.execute(purgequeue.MARK_READY, (now,)).rowcount

    def pending_purges(
        self, cache: str, pass_: int, ready_before: int, limit: int
    ) -> list[PendingPurge]:
        rows = self._connect().execute(purgequeue.PENDING, (ready_before, cache, pass_, limit))
        return [purgequeue.pending_from_row(row) for row in rows]

    def record_purges(self, cache: str, pass_: int, ids: Sequence[int], now: int) -> None:
        with self._transaction() as db:
            db.executemany(purgequeue.RECORD, [(i, cache, pass_, now) for i in ids])

    def settle_purges(self, targets: Sequence[tuple[str, int]], now: int) -> int:
        sql, params = purgequeue.settle(targets)
        with self._transaction(durable=False) as db:
            return db.execute(sql, [now, *params]).rowcount

    def prune_purges(self, settled_before: int) -> int:
        with self._transaction(durable=False) as db:
            db.execute(purgequeue.PRUNE_DELIVERIES, (settled_before,))
            return db.execute(purgequeue.PRUNE, (settled_before,)).rowcount

    def purge_backlog(self) -> PurgeBacklog:
        return PurgeBacklog(*self._connect().execute(purgequeue.BACKLOG).fetchone())

    # monitoring (store/monitoring.py)

    def freshness(self, now: int) -> Freshness:
        db = self._connect()
        (due,) = db.execute(monitoring.OLDEST_DUE, (now,)).fetchone()
        oldest, soonest = db.execute(monitoring.RESPONSE_AGES, (now,)).fetchone()
        return Freshness(due, oldest, soonest)

    def new_certificates(self, after: tuple[int, int, str], limit: int) -> list[NewCertificate]:
        rows = self._connect().execute(monitoring.NEW_CERTIFICATES, (*after, limit)).fetchall()
        return [monitoring.new_from_row(row) for row in rows]

    def sample_certificates(self, start: str, now: int, limit: int) -> list[CertificateRow]:
        rows = self._connect().execute(monitoring.SAMPLE, (start, now, limit)).fetchall()
        return [certificate_from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        db = self._connect()
        (certs, revoked, precerts) = db.execute(
            "SELECT count(*), coalesce(sum(revoked), 0), "
            "coalesce(sum(kind = 'precert'), 0) FROM certificates"
        ).fetchone()
        (responses,) = db.execute("SELECT count(*) FROM responses").fetchone()
        return {
            "certificates": certs,
            "revoked": revoked,
            "precertificates": precerts,
            "responses": responses,
        }

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
