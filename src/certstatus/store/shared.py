"""The SQL both engines run, written once: every Store method whose statement is the same on
SQLite and PostgreSQL lives here, with '?' placeholders (the PostgreSQL store rewrites them).

sqlite.py and postgres.py keep only what truly differs: opening connections and transactions,
migrations, claiming (SKIP LOCKED), storing a batch (unnest on PostgreSQL), and the responder's
single lookup, which is the embedded responder's hot path and stays a plain call on SQLite.
The purge queue's statements are in purgequeue.py, the monitor's in monitoring.py.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.status import (
    RevocationRefused,
    RevocationState,
    RevokedEntry,
    revocation_transition,
)
from certstatus.store import audit as audit_chain
from certstatus.store import (
    expiry,
    monitoring,
    purgequeue,
    responsecerts,
    responseformat,
    sha256requests,
)
from certstatus.store.base import (
    CERTIFICATE_COLUMNS,
    UNATTRIBUTED,
    AuditContext,
    AuditRecord,
    BatchRefused,
    CertificateRow,
    IssuerRecord,
    PendingPurge,
    Priority,
    PurgeBacklog,
    ResponseFormat,
    RevocationRequest,
    RevokeOutcome,
    SignedResponse,
    StoredCrl,
    StoredResponse,
    StoredResponseInfo,
    StoreError,
    UnknownCertificate,
    certificate_from_row,
    serial_key,
)
from certstatus.store.monitoring import Freshness, NewCertificate
from certstatus.store.responsecerts import CERTS


class Cursor(Protocol):
    """What both drivers' cursors give (sqlite3, psycopg)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What both drivers' connections give: execute with positional parameters."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...


# One response lookup per CertID hash, so a lookup copies only the DER it serves; in the shared
# '?' style (PostgreSQL rewrites it once)
RESPONSE_BY_ALGORITHM = {
    algorithm: f"SELECT der_{algorithm.value}, this_update, next_update, refresh_at, certs_id "
    "FROM responses WHERE issuer_id = ? AND serial = ?"
    for algorithm in HashAlgorithm
}

_CRL_COLUMNS = (
    "issuer_id, crl_partition, crl_number, this_update, next_update, next_build_at, entries, der"
)


def is_repeat(current: CertificateRow, request: RevocationRequest) -> bool:
    """The revocation asked is the one in place (a retried batch whose answer was lost)."""
    return (
        current.revoked
        and current.reason == request.reason
        and (not request.time_given or request.time == current.revoked_at)
    )


def outcome_change(
    request: RevocationRequest, outcome: RevokeOutcome, action: str = "revoke"
) -> audit_chain.Change:
    return audit_chain.Change(
        action,
        request.issuer_id,
        serial_key(request.serial),
        audit_chain.state(outcome.before),
        audit_chain.state(outcome.row),
    )


class SqlStore(ABC):
    """The statements both engines share, over the connections and transactions each opens."""

    # appended to the revocation's read: a row lock where the engine has them (PostgreSQL);
    # SQLite's write transaction already holds the whole database
    LOCK_ROW = ""
    # a shared row lock (PostgreSQL): readers of a switch that an update must wait for
    LOCK_SHARED_ROW = ""
    # the same, passing over rows another transaction holds (housekeeping: never waits on a
    # revocation, so never deadlocks with one; what it passes over goes on a later pass)
    LOCK_FREE_ROWS = ""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Connection]:
        """A connection for reads (no transaction of its own on SQLite)."""

    @abstractmethod
    def _writing(self, durable: bool = True) -> AbstractContextManager[Connection]:
        """A write transaction. durable=False: losing it in a power cut only makes rows due
        again (claims, signatures, purge bookkeeping), so SQLite may skip its fsync."""

    @abstractmethod
    def _executemany(self, db: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Rows changed in all."""

    def _sql(self, statement: str) -> str:
        """A shared statement in this engine's placeholder style ('?' as written)."""
        return statement

    # issuers and certificates

    def _rows_by_serial(
        self, select: str, table: str, issuer_id: int, serials: Iterable[int]
    ) -> list[Any]:
        """`SELECT {select} FROM {table}` for one issuer's serials, in chunks of 500 (under
        SQLite's limit on a statement's parameters), in one read."""
        keys = sorted({serial_key(s) for s in serials})
        found: list[Any] = []
        with self._reading() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                found += db.execute(
                    self._sql(
                        f"SELECT {select} FROM {table} WHERE issuer_id = ? "
                        f"AND serial IN ({','.join('?' * len(chunk))})"
                    ),
                    (issuer_id, *chunk),
                ).fetchall()
        return found

    def ensure_issuer(self, name: str, certificate_der: bytes) -> int:
        with self._writing() as db:
            db.execute(
                self._sql(
                    "INSERT INTO issuers (name, certificate) VALUES (?, ?) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                (name, certificate_der),
            )
            row = db.execute(
                self._sql("SELECT id, certificate FROM issuers WHERE name = ?"), (name,)
            ).fetchone()
        if bytes(row[1]) != certificate_der:
            raise StoreError(
                f"issuer {name!r} is already recorded with a different certificate; "
                "an issuer's certificate cannot change under the same name"
            )
        return int(row[0])

    def issuers(self) -> list[IssuerRecord]:
        with self._reading() as db:
            rows = db.execute("SELECT id, name, certificate FROM issuers ORDER BY id").fetchall()
        return [IssuerRecord(i, n, bytes(c)) for i, n, c in rows]

    def certificate(self, issuer_id: int, serial: int) -> CertificateRow | None:
        with self._reading() as db:
            row = db.execute(
                self._sql(
                    f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE issuer_id = ? "
                    "AND serial = ?"
                ),
                (issuer_id, serial_key(serial)),
            ).fetchone()
        return None if row is None else certificate_from_row(row)

    def revoke(
        self,
        issuer_id: int,
        serial: int,
        time: int,
        reason: int,
        time_given: bool,
        now: int,
        audit: AuditContext = UNATTRIBUTED,
    ) -> CertificateRow:
        request = RevocationRequest(issuer_id, serial, time, reason, time_given)
        try:
            return self.revoke_many([request], now, audit)[0].row
        except BatchRefused as exc:
            raise exc.cause from None

    def revoke_many(
        self,
        requests: Sequence[RevocationRequest],
        now: int,
        audit: AuditContext = UNATTRIBUTED,
        repeat_ok: bool = False,
    ) -> list[RevokeOutcome]:
        """Each row is read and rewritten in one transaction for the whole batch (under row
        locks on PostgreSQL), with the partition's CRL marked due, the certificate's purge
        enqueued and an audit entry appended; any refusal rolls the whole batch back."""
        outcomes: list[RevokeOutcome] = []
        changes: list[audit_chain.Change] = []
        with self._writing() as db:
            for index, request in enumerate(requests):
                try:
                    outcome = self._revoke_one(db, request, now, repeat_ok)
                except (UnknownCertificate, RevocationRefused) as exc:
                    raise BatchRefused(index, exc) from None
                outcomes.append(outcome)
                if outcome.changed:
                    changes.append(outcome_change(request, outcome, audit.action))
            self._append_audit(db, changes, audit, now)
        return outcomes

    def _revoke_one(
        self, db: Connection, request: RevocationRequest, now: int, repeat_ok: bool
    ) -> RevokeOutcome:
        issuer_id, key = request.issuer_id, serial_key(request.serial)
        row = db.execute(
            self._sql(
                f"SELECT {CERTIFICATE_COLUMNS} FROM certificates "
                f"WHERE issuer_id = ? AND serial = ?{self.LOCK_ROW}"
            ),
            (issuer_id, key),
        ).fetchone()
        if row is None:
            raise UnknownCertificate(f"serial {key} is not known for this issuer")
        current = certificate_from_row(row)
        try:
            state = revocation_transition(
                RevocationState(current.revoked, current.revoked_at, current.reason),
                request.time,
                request.reason,
                request.time_given,
            )
        except RevocationRefused:
            if repeat_ok and is_repeat(current, request):
                return RevokeOutcome(current, False)
            raise
        found = db.execute(
            self._sql(
                "UPDATE certificates SET revoked = 1, revoked_at = ?, reason = ?, "
                "version = version + 1, priority = ?, due_at = ?, revoked_recorded_at = ? "
                f"WHERE issuer_id = ? AND serial = ? RETURNING {CERTIFICATE_COLUMNS}"
            ),
            (state.time, state.reason, Priority.REVOKED, now, now, issuer_id, key),
        ).fetchone()
        revoked = certificate_from_row(found)
        db.execute(self._sql(purgequeue.ENQUEUE_OCSP), (issuer_id, key, revoked.version, now))
        # the partition's CRL is now due (after the debounce window); the oldest revocation
        # not yet on a published CRL decides when
        db.execute(
            self._sql(
                "INSERT INTO crl_state (issuer_id, crl_partition, dirty_since) "
                "VALUES (?, ?, ?) ON CONFLICT (issuer_id, crl_partition) DO UPDATE SET "
                "dirty_since = coalesce(crl_state.dirty_since, excluded.dirty_since)"
            ),
            (issuer_id, revoked.crl_partition, now),
        )
        return RevokeOutcome(revoked, True, current)

    # the audit log (store/audit.py)

    def _append_audit(
        self, db: Connection, changes: Sequence[audit_chain.Change], context: AuditContext, now: int
    ) -> None:
        """Continue the chain inside the caller's transaction (the head row locked on
        PostgreSQL, so concurrent appenders queue and the chain has the commit order)."""
        if not changes:
            return
        head = db.execute(self._sql(audit_chain.HEAD + self.LOCK_ROW)).fetchone()
        rows = audit_chain.chain((int(head[0]), head[1]), changes, context, now)
        self._insert_audit_rows(db, rows)
        db.execute(self._sql(audit_chain.SET_HEAD), (rows[-1][0], rows[-1][-1]))

    def _insert_audit_rows(self, db: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """The chained entries' rows, in the caller's transaction (PostgreSQL copies a large
        batch instead: an entry per certificate of a bulk ingest)."""
        self._executemany(db, self._sql(audit_chain.INSERT), rows)

    def audit_refusal(self, context: AuditContext, detail: str, now: int) -> None:
        with self._writing() as db:
            self._append_audit(db, [audit_chain.Change("refused", detail=detail)], context, now)

    def audit_entries(self, after_seq: int, since: int, limit: int) -> list[AuditRecord]:
        with self._reading() as db:
            rows = db.execute(self._sql(audit_chain.ENTRIES), (after_seq, since, limit)).fetchall()
        return [audit_chain.record_from_row(row) for row in rows]

    def audit_for(self, issuer_id: int, serial: int) -> list[AuditRecord]:
        with self._reading() as db:
            rows = db.execute(
                self._sql(audit_chain.FOR_CERTIFICATE), (issuer_id, serial_key(serial))
            ).fetchall()
        return [audit_chain.record_from_row(row) for row in rows]

    def audit_head(self) -> tuple[int, str]:
        with self._reading() as db:
            seq, digest = db.execute(audit_chain.HEAD).fetchone()
        return int(seq), str(digest)

    # reads for the API

    def certificates_many(
        self, issuer_id: int, serials: Sequence[int]
    ) -> dict[int, CertificateRow]:
        rows = self._rows_by_serial(CERTIFICATE_COLUMNS, "certificates", issuer_id, serials)
        certificates = map(certificate_from_row, rows)
        return {c.serial: c for c in certificates}

    def response_info(self, issuer_id: int, serial: int) -> StoredResponseInfo | None:
        with self._reading() as db:
            row = db.execute(
                self._sql(
                    "SELECT version, this_update, next_update, der_sha1, der_sha256, certs_id "
                    "FROM responses WHERE issuer_id = ? AND serial = ?"
                ),
                (issuer_id, serial_key(serial)),
            ).fetchone()
            if row is None:
                return None
            version, this_update, next_update, sha1, sha256, certs_id = row
            certs = self._certs(db, certs_id)
        return StoredResponseInfo(
            version,
            this_update,
            next_update,
            bytes(sha1) + certs,
            bytes(sha256) + certs if sha256 else b"",  # b"": not signed (sha256requests.py)
        )

    # the responder certificate each stored response ends with (store/responsecerts.py)

    def _as_stored(
        self, db: Connection, responses: Sequence[SignedResponse]
    ) -> tuple[Sequence[SignedResponse], dict[bytes, int]]:
        """A batch as this database stores it now, read in the batch's own transaction: cut,
        with each `certs` inserted (so a response is never visible before the row that
        completes it), once certs_stored_once is on; whole until then (schema.py, v11)."""
        if not self._stored_once(db):
            responses = [responsecerts.whole(r) for r in responses]
        ids = responsecerts.ids_of(responses)
        kept = [(stored_id, certs) for certs, stored_id in ids.items() if certs]
        if kept:
            self._executemany(db, self._sql(responsecerts.INSERT), kept)
        return responses, ids

    def want_sha256(self, issuer_id: int, serial: int, now: int) -> bool:
        with self._writing(durable=False) as db:  # a lost ask is asked again by the client
            parameters = sha256requests.want_parameters(issuer_id, serial_key(serial), now)
            return bool(db.execute(self._sql(sha256requests.WANT), parameters).rowcount)

    def _stored_once(self, db: Connection) -> bool:
        """Read shared-locked on PostgreSQL: switching off waits for the batches that read
        it on, so none of them commits cut rows after `response-format` returned."""
        row = db.execute(responseformat.CERTS_STORED_ONCE + self.LOCK_SHARED_ROW).fetchone()
        return bool(row and row[0])

    def response_format(self) -> ResponseFormat:
        with self._reading() as db:
            return responseformat.from_row(db.execute(responseformat.SELECT).fetchone())

    def set_response_format(
        self, wanted: ResponseFormat, context: AuditContext, now: int
    ) -> ResponseFormat:
        with self._writing() as db:
            row = db.execute(self._sql(responseformat.SELECT + self.LOCK_ROW)).fetchone()
            was = responseformat.from_row(row)
            if was != wanted:
                db.execute(
                    self._sql(responseformat.UPDATE),
                    (int(wanted.certs_stored_once), int(wanted.sha256_on_request)),
                )
                change = audit_chain.Change(
                    "response-format",
                    before=dataclasses.asdict(was),
                    after=dataclasses.asdict(wanted),
                )
                self._append_audit(db, [change], context, now)
        return was

    def _certs(self, db: Connection, certs_id: int) -> bytes:
        """The `certs` field a stored response ends with: from the process's cache, read once
        per id (StoreError if the row is gone)."""
        certs = CERTS.get(certs_id)
        if certs is None:
            row = db.execute(self._sql(responsecerts.SELECT), (certs_id,)).fetchone()
            certs = CERTS.learn(certs_id, None if row is None else bytes(row[0]))
        return certs

    def _completed(self, db: Connection, row: Any, source: str = "") -> StoredResponse | None:
        """A response lookup's row (der, this_update, next_update, refresh_at, certs_id) as
        served: the DER with its responder certificate appended."""
        if row is None:
            return None
        der, this_update, next_update, refresh_at, certs_id = row
        whole = bytes(der) + self._certs(db, certs_id) if der else b""  # b"": not signed
        return StoredResponse(whole, this_update, next_update, refresh_at, source)

    def response_versions(self, issuer_id: int, serials: Sequence[int]) -> dict[int, int]:
        rows = self._rows_by_serial("serial, version", "responses", issuer_id, serials)
        return {int(s, 16): int(v) for s, v in rows}

    def due_count(self, now: int) -> dict[Priority, int]:
        """One statement per priority: each is a range of the due index, whatever N is."""
        sql = self._sql(
            "SELECT count(*) FROM certificates WHERE priority = ? AND due_at IS NOT NULL "
            "AND due_at <= ?"
        )
        with self._reading() as db:
            return {p: int(db.execute(sql, (int(p), now)).fetchone()[0]) for p in Priority}

    def counts(self) -> dict[str, int]:
        with self._reading() as db:
            certs, revoked, precerts = db.execute(
                "SELECT count(*), coalesce(sum(revoked), 0), "
                "count(*) FILTER (WHERE kind = 'precert') FROM certificates"
            ).fetchone()
            (responses,) = db.execute("SELECT count(*) FROM responses").fetchone()
        return {
            "certificates": int(certs),
            "revoked": int(revoked),
            "precertificates": int(precerts),
            "responses": int(responses),
        }

    def schema_version(self) -> int:
        with self._reading() as db:
            row = db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # CRLs

    def crl_partitions_in_use(self, issuer_id: int) -> set[int]:
        with self._reading() as db:
            rows = db.execute(
                self._sql(
                    "SELECT crl_partition FROM crl_state WHERE issuer_id = ? "
                    "UNION SELECT crl_partition FROM crls WHERE issuer_id = ?"
                ),
                (issuer_id, issuer_id),
            ).fetchall()
        return {int(p) for (p,) in rows}

    def revoked_entries(
        self, issuer_id: int, crl_partition: int, not_after_from: int
    ) -> list[RevokedEntry]:
        with self._reading() as db:
            rows = db.execute(
                self._sql(
                    "SELECT serial, revoked_at, reason FROM certificates WHERE revoked = 1 "
                    "AND issuer_id = ? AND crl_partition = ? AND not_after >= ?"
                ),
                (issuer_id, crl_partition, not_after_from),
            ).fetchall()
        return [RevokedEntry(int(s, 16), at, reason or 0) for s, at, reason in rows]

    def revoked_recorded_before(
        self, issuer_id: int, crl_partition: int, recorded_before: int, not_after_from: int
    ) -> set[int]:
        with self._reading() as db:
            rows = db.execute(
                self._sql(
                    "SELECT serial FROM certificates WHERE revoked = 1 AND issuer_id = ? "
                    "AND crl_partition = ? AND not_after >= ? AND revoked_recorded_at < ?"
                ),
                (issuer_id, crl_partition, not_after_from, recorded_before),
            ).fetchall()
        return {int(s, 16) for (s,) in rows}

    # the numeric order of serials stored as lowercase hex without leading zeros (serial_key):
    # shorter first, then byte order (COLLATE "C" on PostgreSQL, SQLite's default)
    _SERIAL_ORDER = "ORDER BY length(serial), serial"

    def _stream(self, sql: str, parameters: Sequence[Any]) -> Iterator[Any]:
        """The rows of a read, as they come: SQLite steps its statement one row at a time, so
        a million rows are never all in memory (PostgreSQL overrides this with a server-side
        cursor). Callers iterate it to the end or close it."""
        with self._reading() as db:
            yield from db.execute(self._sql(sql), parameters)

    def revoked_entries_by_serial(
        self, issuer_id: int, crl_partition: int, not_after_from: int
    ) -> Iterator[RevokedEntry]:
        """revoked_entries, streamed in ascending serial order (for the CRL builder)."""
        rows = self._stream(
            "SELECT serial, revoked_at, reason FROM certificates WHERE revoked = 1 "
            "AND issuer_id = ? AND crl_partition = ? AND not_after >= ? " + self._SERIAL_ORDER,
            (issuer_id, crl_partition, not_after_from),
        )
        return (RevokedEntry(int(s, 16), at, reason or 0) for s, at, reason in rows)

    def revoked_serials_recorded_before(
        self, issuer_id: int, crl_partition: int, recorded_before: int, not_after_from: int
    ) -> Iterator[int]:
        """revoked_recorded_before, streamed in ascending serial order (for the CRL gate)."""
        rows = self._stream(
            "SELECT serial FROM certificates WHERE revoked = 1 AND issuer_id = ? "
            "AND crl_partition = ? AND not_after >= ? AND revoked_recorded_at < ? "
            + self._SERIAL_ORDER,
            (issuer_id, crl_partition, not_after_from, recorded_before),
        )
        return (int(s, 16) for (s,) in rows)

    def not_after_of(self, issuer_id: int, serials: set[int]) -> dict[int, int]:
        rows = self._rows_by_serial("serial, not_after", "certificates", issuer_id, serials)
        return {int(s, 16): int(n) for s, n in rows}

    def reserve_crl_number(self, issuer_id: int, crl_partition: int) -> int:
        with self._writing() as db:
            (number,) = db.execute(
                self._sql(
                    "INSERT INTO crl_state (issuer_id, crl_partition, next_number) "
                    "VALUES (?, ?, 2) ON CONFLICT (issuer_id, crl_partition) DO UPDATE SET "
                    "next_number = crl_state.next_number + 1 RETURNING next_number - 1"
                ),
                (issuer_id, crl_partition),
            ).fetchone()
        return int(number)

    def current_crl(self, issuer_id: int, crl_partition: int) -> StoredCrl | None:
        with self._reading() as db:
            row = db.execute(
                self._sql(
                    f"SELECT {_CRL_COLUMNS} FROM crls WHERE issuer_id = ? AND crl_partition = ?"
                ),
                (issuer_id, crl_partition),
            ).fetchone()
        if row is None:
            return None
        issuer, partition, number, this_update, next_update, next_build_at, entries, der = row
        return StoredCrl(
            issuer, partition, number, this_update, next_update, next_build_at, entries, bytes(der)
        )

    def publish_crl(self, crl: StoredCrl, snapshot: int) -> bool:
        with self._writing() as db:
            return self._publish_crl_in(db, crl, snapshot)

    def _publish_crl_in(
        self, db: Connection, crl: StoredCrl, snapshot: int, der_from: str | None = None
    ) -> bool:
        """Publish in the caller's transaction; der_from, a FROM clause holding the DER in a
        column `der`, instead of sending it as a parameter (PostgreSQL's large CRLs)."""
        fields = (
            crl.issuer_id,
            crl.crl_partition,
            crl.number,
            crl.this_update,
            crl.next_update,
            crl.next_build_at,
            crl.entries,
        )
        parameters: tuple[int | bytes, ...] = fields
        if der_from is None:
            source, parameters = "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*fields, crl.der)
        else:
            source = f"SELECT ?, ?, ?, ?, ?, ?, ?, der FROM {der_from}"
        cur = db.execute(
            self._sql(
                f"INSERT INTO crls ({_CRL_COLUMNS}) {source} "
                "ON CONFLICT (issuer_id, crl_partition) DO UPDATE SET "
                "crl_number = excluded.crl_number, this_update = excluded.this_update, "
                "next_update = excluded.next_update, next_build_at = excluded.next_build_at, "
                "entries = excluded.entries, der = excluded.der "
                "WHERE excluded.crl_number > crls.crl_number"
            ),
            parameters,
        )
        if not cur.rowcount:
            return False
        issuer, partition = crl.issuer_id, crl.crl_partition
        db.execute(
            self._sql(
                "UPDATE crl_state SET dirty_since = (SELECT min(revoked_recorded_at) "
                "FROM certificates WHERE revoked = 1 AND issuer_id = ? "
                "AND crl_partition = ? AND revoked_recorded_at >= ?) "
                "WHERE issuer_id = ? AND crl_partition = ?"
            ),
            (issuer, partition, snapshot, issuer, partition),
        )
        now = int(time.time())
        db.execute(self._sql(purgequeue.ENQUEUE_CRL), (issuer, partition, now, now))
        return True

    def crl_dirty_since(self, issuer_id: int) -> dict[int, int]:
        with self._reading() as db:
            rows = db.execute(
                self._sql(
                    "SELECT crl_partition, dirty_since FROM crl_state "
                    "WHERE issuer_id = ? AND dirty_since IS NOT NULL"
                ),
                (issuer_id,),
            ).fetchall()
        return {int(p): int(at) for p, at in rows}

    def record_crl_rejection(
        self, issuer_id: int, crl_partition: int, number: int, code: str, message: str, at: int
    ) -> None:
        with self._writing() as db:
            db.execute(
                self._sql(
                    "INSERT INTO crl_rejections (issuer_id, crl_partition, crl_number, code, "
                    "message, at) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (issuer_id, crl_partition, number, code, message, at),
            )

    def crl_rejection_count(self) -> int:
        with self._reading() as db:
            (count,) = db.execute("SELECT count(*) FROM crl_rejections").fetchone()
        return int(count)

    # sites drained by the operator (base.SiteDrains)

    def drain_site(self, site: str, note: str, now: int) -> None:
        with self._writing() as db:
            db.execute(
                self._sql(
                    "INSERT INTO site_drains (site, drained_at, note) VALUES (?, ?, ?) "
                    "ON CONFLICT (site) DO UPDATE SET note = excluded.note"
                ),
                (site, now, note),
            )

    def restore_site(self, site: str) -> bool:
        with self._writing() as db:
            cur = db.execute(self._sql("DELETE FROM site_drains WHERE site = ?"), (site,))
            return bool(cur.rowcount)

    def drained_sites(self) -> dict[str, tuple[int, str]]:
        with self._reading() as db:
            rows = db.execute("SELECT site, drained_at, note FROM site_drains").fetchall()
        return {str(site): (int(at), str(note)) for site, at, note in rows}

    # the purge queue (store/purgequeue.py)

    def mark_purges_ready(self, now: int) -> int:
        with self._writing(durable=False) as db:
            return db.execute(self._sql(purgequeue.MARK_READY), (now,)).rowcount

    def pending_purges(
        self, cache: str, pass_: int, ready_before: int, limit: int
    ) -> list[PendingPurge]:
        with self._reading() as db:
            rows = db.execute(
                self._sql(purgequeue.PENDING), (ready_before, cache, pass_, limit)
            ).fetchall()
        return [purgequeue.pending_from_row(row) for row in rows]

    def record_purges(self, cache: str, pass_: int, ids: Sequence[int], now: int) -> None:
        with self._writing() as db:
            self._executemany(
                db, self._sql(purgequeue.RECORD), [(i, cache, pass_, now) for i in ids]
            )

    def ready_purge_ids(
        self, cache: str, pass_: int, issuer_id: int, ready_before: int
    ) -> list[int]:
        with self._reading() as db:
            rows = db.execute(
                self._sql(purgequeue.ISSUER_READY), (ready_before, issuer_id, cache, pass_)
            ).fetchall()
        return [int(i) for (i,) in rows]

    def settle_purges(self, targets: Sequence[tuple[str, int]], now: int) -> int:
        sql, params = purgequeue.settle(targets)
        with self._writing(durable=False) as db:
            return db.execute(self._sql(sql), [now, *params]).rowcount

    def prune_purges(self, settled_before: int) -> int:
        with self._writing(durable=False) as db:
            db.execute(self._sql(purgequeue.PRUNE_DELIVERIES), (settled_before,))
            return db.execute(self._sql(purgequeue.PRUNE), (settled_before,)).rowcount

    def purge_backlog(self) -> PurgeBacklog:
        with self._reading() as db:
            return PurgeBacklog(*db.execute(purgequeue.BACKLOG).fetchone())

    # expiry housekeeping (store/expiry.py)

    def retire_expired(self, now: int, limit: int) -> expiry.ExpiryBatch:
        """Flag the responses of up to `limit` certificates expired by now, from the key the
        last batch reached (kept in the database, locked, so housekeepers on several hosts
        take turns)."""
        with self._writing(durable=False) as db:
            cursor = db.execute(self._sql(expiry.CURSOR + self.LOCK_ROW)).fetchone()
            after = (int(cursor[0]), int(cursor[1]), str(cursor[2]))
            keys = db.execute(self._sql(expiry.NEXT_EXPIRED), (*after, now, limit)).fetchall()
            if not keys:
                return expiry.ExpiryBatch(0, 0, None)
            last = (int(keys[-1][0]), int(keys[-1][1]), str(keys[-1][2]))
            changed = db.execute(
                self._sql(expiry.RETIRE), (*after, *last, int(keys[0][0]), last[0])
            ).rowcount
            db.execute(self._sql(expiry.SET_CURSOR), last)
        return expiry.ExpiryBatch(len(keys), changed, last)

    def prune_expired(
        self,
        after: expiry.ExpiryKey,
        expired_before: int,
        crl_period: int,
        now: int,
        limit: int,
    ) -> expiry.ExpiryBatch:
        """Delete, in one transaction, what store/expiry.py allows among the next `limit`
        certificates expired before expired_before (after the key `after`). The rows read
        are locked first (PostgreSQL; rows another transaction holds are passed over), so a
        revocation or a signature racing the deletion either lands before it, and is seen, or
        finds no row."""
        with self._writing() as db:
            db.execute(self._sql(expiry.CURSOR + self.LOCK_ROW)).fetchone()  # one at a time
            rows = db.execute(
                self._sql(expiry.NEXT_EXPIRED + self.LOCK_FREE_ROWS),
                (*after, expired_before, limit),
            ).fetchall()
            if not rows:
                return expiry.ExpiryBatch(0, 0, None)
            keys = [(int(n), int(i), str(s)) for n, i, s in rows]
            responses, certificates = expiry.prune_parameters(keys, now, crl_period)
            self._executemany(db, self._sql(expiry.PRUNE_RESPONSE), responses)
            pruned = self._executemany(db, self._sql(expiry.PRUNE_CERTIFICATE), certificates)
        return expiry.ExpiryBatch(len(keys), pruned, keys[-1])

    # monitoring (store/monitoring.py)

    def freshness(self, now: int) -> Freshness:
        with self._reading() as db:
            (due,) = db.execute(
                self._sql(monitoring.OLDEST_DUE), (now,) * monitoring.OLDEST_DUE_PARAMETERS
            ).fetchone()
            oldest = db.execute(self._sql(monitoring.OLDEST_THIS_UPDATE), (now,)).fetchone()
            soonest = db.execute(self._sql(monitoring.SOONEST_NEXT_UPDATE), (now,)).fetchone()
        return Freshness(
            due, None if oldest is None else oldest[0], None if soonest is None else soonest[0]
        )

    def new_certificates(self, after: tuple[int, int, str], limit: int) -> list[NewCertificate]:
        with self._reading() as db:
            rows = db.execute(self._sql(monitoring.NEW_CERTIFICATES), (*after, limit)).fetchall()
        return [monitoring.new_from_row(row) for row in rows]

    def sample_certificates(self, start: str, now: int, limit: int) -> list[CertificateRow]:
        """In (issuer_id, serial) order, one range of the key per issuer (issuers are few)."""
        found: list[CertificateRow] = []
        with self._reading() as db:
            ids = [int(i) for (i,) in db.execute("SELECT id FROM issuers ORDER BY id")]
            for issuer_id in ids:
                if len(found) >= limit:
                    break
                rows = db.execute(
                    self._sql(monitoring.SAMPLE), (issuer_id, start, now, limit - len(found))
                ).fetchall()
                found.extend(certificate_from_row(row) for row in rows)
        return found
