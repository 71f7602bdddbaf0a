"""The storage interface every role uses; engines differ only behind it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.status import RevokedEntry
from certstatus.store.expiry import ExpiryBatch, ExpiryKey


class StoreError(RuntimeError):
    pass


class Unreachable(StoreError):
    """The server took no connection (down, refusing, out of reach): not an answer it gave,
    such as a missing grant or table. A web node starting up may then read its replicas."""


class UnknownCertificate(StoreError):
    pass


class NoAuthoritativeSource(StoreError):
    """No source can answer authoritatively now (the certificate is recorded but its response
    is not signed yet, or no database can be read): the caller answers tryLater, uncacheable,
    never "unauthorized" for a serial that may be ours (F1)."""


class NotSignedYet(NoAuthoritativeSource):
    """The certificate is recorded but no response is signed for it yet: a signer's matter
    (not running, behind, its key down), not a database's; counted apart (try_later_total)."""


class NotAcknowledged(StoreError):
    """A write committed on the leader that no synchronous standby confirmed in time: it may be
    lost if the leader is lost, so it is not acknowledged (R26). Retrying it is safe (recording
    and revoking are idempotent)."""


class Priority(IntEnum):
    """Signing order: a serial nobody can verify yet comes first, then a revocation, then refresh."""

    NEW = 0
    REVOKED = 1
    REFRESH = 2


def serial_key(serial: int) -> str:
    """Serials are stored as lowercase hex without leading zeros: one spelling per serial."""
    return format(serial, "x")


@dataclass(frozen=True, slots=True)
class IssuerRecord:
    id: int
    name: str
    certificate_der: bytes


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """What ingest records about an issued certificate or precertificate."""

    issuer_id: int
    serial: int
    kind: str  # "cert" or "precert"
    not_after: int
    crl_partition: int = 0
    not_before: int | None = None


@dataclass(frozen=True, slots=True)
class CertificateRow:
    issuer_id: int
    serial: int
    kind: str
    not_after: int
    revoked: bool
    revoked_at: int | None
    reason: int | None
    version: int
    due_at: int | None
    priority: Priority
    crl_partition: int = 0
    not_before: int | None = None  # None: recorded before schema v7, not checked


# The certificate columns every engine selects, in CertificateRow's order.
CERTIFICATE_COLUMNS = (
    "issuer_id, serial, kind, not_after, revoked, revoked_at, reason, version, due_at, priority, "
    "crl_partition, not_before"
)


def certificate_from_row(row: Sequence[Any]) -> CertificateRow:
    """A CertificateRow from a row of CERTIFICATE_COLUMNS, whichever engine read it."""
    issuer_id, serial, kind, not_after, revoked, at, reason, version, due, prio, part, nb = row
    return CertificateRow(
        issuer_id,
        int(serial, 16),
        kind,
        not_after,
        bool(revoked),
        at,
        reason,
        version,
        due,
        Priority(prio),
        part,
        nb,
    )


class DueCertificate(NamedTuple):
    """A claimed row: the signer signs this status and stores it only if version is still current.

    DueCertificate and SignedResponse are NamedTuples: the signer makes one of each per
    certificate, and a frozen dataclass cost about 3x as much to build (issue 15)."""

    issuer_id: int
    serial: int
    version: int
    revoked: bool
    revoked_at: int | None
    reason: int | None
    priority: Priority
    sha256_wanted: bool = False  # a client asked for its SHA-256 CertID (on-request signing)


class SignedResponse(NamedTuple):
    """Both responses of one certificate, as the signer stores them: each DER is the whole
    response once `certs` (the responder certificate field, the same for every response of
    one responder certificate; empty if the DERs are whole) is appended. The store keeps each
    distinct `certs` once, and readers get the whole response back."""

    issuer_id: int
    serial: int
    version: int
    der_sha1: bytes
    der_sha256: bytes
    this_update: int
    next_update: int
    refresh_at: int
    certs: bytes


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """How signers store and pregenerate responses (store/responseformat.py)."""

    certs_stored_once: bool
    sha256_on_request: bool


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What the responder serves for one CertID hash, and the times its headers come from.
    An empty der: the certificate's response under this hash is not signed yet (SHA-256,
    signed on request: store/sha256requests.py); the times are its SHA-1 response's."""

    der: bytes
    this_update: int
    next_update: int
    refresh_at: int
    source: str = ""  # which database answered, for the source header and drill reports


@dataclass(frozen=True, slots=True)
class StoredCrl:
    """A published CRL: the current one per (issuer, partition), served and replicated."""

    issuer_id: int
    crl_partition: int
    number: int
    this_update: int
    next_update: int
    next_build_at: int
    entries: int
    der: bytes


@dataclass(frozen=True, slots=True)
class PendingPurge:
    """One change to purge from the caches: a certificate's OCSP answers or a CRL partition."""

    id: int
    kind: str  # "ocsp" or "crl"
    issuer_id: int
    serial: int | None
    crl_partition: int | None


@dataclass(frozen=True, slots=True)
class PurgeBacklog:
    """Purges not yet delivered everywhere: waiting for their response to be signed (unready),
    or ready and not yet delivered to every cache (pending)."""

    unready: int
    pending: int
    oldest_created_at: int | None


@dataclass(frozen=True, slots=True)
class AddResult:
    added: int
    existing: int
    # (issuer_id, serial, "added" | "upgraded" | "known") for each record, in input order
    outcomes: tuple[tuple[int, int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who asks for a change, for the audit log (R23): an API client's configured name
    ("api:<name>") or an operator ("cli:<user>"), and the request it came in (or None).
    action is what its revocations are logged as: "revoke", or the operation that carried them
    when that is worth telling apart later ("import-crl": taken from another system's CRL)."""

    actor: str
    request_id: str | None = None
    action: str = "revoke"


UNATTRIBUTED = AuditContext("unattributed")


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    """One revocation to apply, already parsed and checked against what ingest can check."""

    issuer_id: int
    serial: int
    time: int
    reason: int
    time_given: bool


@dataclass(frozen=True, slots=True)
class RevokeOutcome:
    """A revocation applied (changed) or found already in place (an identical repeat)."""

    row: CertificateRow
    changed: bool
    before: CertificateRow | None = None


class BatchRefused(StoreError):
    """A revocation of a batch was refused inside the write transaction (the row changed since
    it was checked): nothing of the batch was written. index is its place in the batch."""

    def __init__(self, index: int, cause: Exception) -> None:
        super().__init__(str(cause))
        self.index = index
        self.cause = cause


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored audit entry; hash = sha256 over every other field and prev_hash."""

    seq: int
    at: int
    actor: str
    action: str  # "record", "upgrade", "revoke", "import-crl", "refused"
    issuer_id: int | None
    serial: str | None
    request_id: str | None
    before: str | None  # JSON text of the state before, or None
    after: str | None
    detail: str | None
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class StoredResponseInfo:
    """What the API reports of a certificate's stored responses (one row, both CertID hashes)."""

    version: int
    this_update: int
    next_update: int
    der_sha1: bytes
    der_sha256: bytes


# The role interfaces: each role depends on the narrow one it needs, so a newcomer sees what a
# role can touch, and an engine-only ability (the heartbeat, replication slots) is a type of its
# own instead of a branch on the configured engine.


class IssuerRegistry(Protocol):
    def ensure_issuer(self, name: str, certificate_der: bytes) -> int:
        """Register an issuer or return its id; refuses a name bound to another certificate."""
        ...

    def issuers(self) -> list[IssuerRecord]: ...


class CertificateReads(Protocol):
    def certificate(self, issuer_id: int, serial: int) -> CertificateRow | None: ...


class AuditLog(Protocol):
    """The audit log (R23, store/audit.py): appended in the transaction of each change."""

    def audit_refusal(self, context: AuditContext, detail: str, now: int) -> None:
        """Append a refused request (nothing else is written)."""
        ...

    def audit_entries(self, after_seq: int, since: int, limit: int) -> list[AuditRecord]:
        """Entries with seq > after_seq and at >= since, in chain order."""
        ...

    def audit_for(self, issuer_id: int, serial: int) -> list[AuditRecord]: ...

    def audit_head(self) -> tuple[int, str]:
        """The last sequence number and hash the chain ends with."""
        ...


class IngestStore(IssuerRegistry, CertificateReads, AuditLog, Protocol):
    """What ingest writes: issuance and revocation, each in one transaction with its audit
    entries."""

    def add_certificates(
        self, records: Sequence[CertificateRecord], now: int, audit: AuditContext = UNATTRIBUTED
    ) -> AddResult:
        """Record certificates in one transaction; re-adding is harmless; precert -> cert upgrades."""
        ...

    def add_certificate_chunks(
        self,
        chunks: Iterable[Sequence[CertificateRecord]],
        now: int,
        audit: AuditContext = UNATTRIBUTED,
    ) -> AddResult:
        """add_certificates of all the chunks' records, as they come from a checker: an
        exception from chunks leaves nothing written."""
        ...

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
        """Apply a revocation atomically; raises UnknownCertificate or RevocationRefused."""
        ...

    def revoke_many(
        self,
        requests: Sequence[RevocationRequest],
        now: int,
        audit: AuditContext = UNATTRIBUTED,
        repeat_ok: bool = False,
    ) -> list[RevokeOutcome]:
        """Apply every revocation in one transaction, or none (BatchRefused). repeat_ok: an
        identical repeat of a revocation in place is an unchanged outcome, not a refusal."""
        ...

    def certificates_many(
        self, issuer_id: int, serials: Sequence[int]
    ) -> dict[int, CertificateRow]:
        """The recorded rows among serials (absent ones are unknown)."""
        ...

    def response_info(self, issuer_id: int, serial: int) -> StoredResponseInfo | None: ...

    def response_versions(self, issuer_id: int, serials: Sequence[int]) -> dict[int, int]:
        """The stored response's certificate version per serial (absent: none signed yet)."""
        ...


class SigningQueue(Protocol):
    """The signer's queue: claim due rows, store what was signed under the version guard."""

    def claim_due(self, now: int, limit: int, lease: int) -> list[DueCertificate]:
        """Claim up to limit due rows in priority order; unfinished claims come back after lease."""
        ...

    def store_signed(self, responses: Sequence[SignedResponse], now: int) -> int:
        """Store responses whose certificate version is unchanged since the claim; returns stored."""
        ...

    def release_claims(self, claimed: Sequence[DueCertificate], now: int) -> None:
        """Claimed rows that were not signed are due again now (not after the lease)."""
        ...

    def due_count(self, now: int) -> dict[Priority, int]: ...

    def response_format(self) -> ResponseFormat:
        """Whether to pregenerate SHA-256 responses (read once per signing pass)."""
        ...

    def server_time(self) -> float | None:
        """The database server's clock (F10: signing refuses a disagreeing local clock), or
        None when the database has no clock of its own (SQLite)."""
        ...


class ResponseReads(Protocol):
    """What a responder serves from one database: a stored response, a published CRL."""

    def response(
        self, issuer_id: int, serial: int, algorithm: HashAlgorithm = HashAlgorithm.SHA1
    ) -> StoredResponse | None:
        """The stored response whose CertID uses algorithm (R8), or None if none is signed."""
        ...

    def current_crl(self, issuer_id: int, crl_partition: int) -> StoredCrl | None: ...


class CrlReads(Protocol):
    """What a CRL's check reads (the builder's gate, the monitor's CRL watch)."""

    def crl_partitions_in_use(self, issuer_id: int) -> set[int]: ...

    def revoked_entries(
        self, issuer_id: int, crl_partition: int, not_after_from: int
    ) -> list[RevokedEntry]:
        """Revoked certificates of a partition whose notAfter is at or after not_after_from."""
        ...

    def revoked_recorded_before(
        self, issuer_id: int, crl_partition: int, recorded_before: int, not_after_from: int
    ) -> set[int]: ...

    def current_crl(self, issuer_id: int, crl_partition: int) -> StoredCrl | None: ...


class CrlState(CrlReads, Protocol):
    """The CRL builder's state: numbers, publishing, what is due, rejections."""

    def not_after_of(self, issuer_id: int, serials: set[int]) -> dict[int, int]: ...

    def revoked_entries_by_serial(
        self, issuer_id: int, crl_partition: int, not_after_from: int
    ) -> Iterator[RevokedEntry]:
        """revoked_entries as a stream in ascending serial order: the builder encodes a
        million entries without holding them (iterate it to the end, or close it)."""
        ...

    def revoked_serials_recorded_before(
        self, issuer_id: int, crl_partition: int, recorded_before: int, not_after_from: int
    ) -> Iterator[int]:
        """revoked_recorded_before as a stream in ascending serial order, for the gate."""
        ...

    def reserve_crl_number(self, issuer_id: int, crl_partition: int) -> int:
        """A CRLNumber no other builder will get; numbers survive restarts (R17)."""
        ...

    def publish_crl(self, crl: StoredCrl, snapshot: int) -> bool:
        """Publish if its number is above the published one; revocations recorded at or after
        snapshot keep the partition due. False when another builder got there first."""
        ...

    def crl_dirty_since(self, issuer_id: int) -> dict[int, int]: ...

    def record_crl_rejection(
        self, issuer_id: int, crl_partition: int, number: int, code: str, message: str, at: int
    ) -> None: ...

    def crl_rejection_count(self) -> int: ...


class PurgeQueue(Protocol):
    """The purge queue: enqueued by revoke() and publish_crl(), drained by the purger role."""

    def mark_purges_ready(self, now: int) -> int:
        """Mark ready every purge whose certificate's new response is now stored."""
        ...

    def pending_purges(
        self, cache: str, pass_: int, ready_before: int, limit: int
    ) -> list[PendingPurge]: ...

    def record_purges(self, cache: str, pass_: int, ids: Sequence[int], now: int) -> None: ...

    def ready_purge_ids(
        self, cache: str, pass_: int, issuer_id: int, ready_before: int
    ) -> list[int]:
        """The issuer's purges ready at or before ready_before and not yet delivered to
        (cache, pass): what an issuer-wide purge sent after this read covers."""
        ...

    def settle_purges(self, targets: Sequence[tuple[str, int]], now: int) -> int:
        """Settle purges delivered to every (cache, pass) target; returns how many."""
        ...

    def prune_purges(self, settled_before: int) -> int: ...

    def purge_backlog(self) -> PurgeBacklog: ...


class MonitorReads(CertificateReads, Protocol):
    """What metrics and the monitor's watchdog read (store/monitoring.py), every few seconds."""

    def response_format(self) -> ResponseFormat:
        """Which CertIDs are pregenerated: what the watchdog may check."""
        ...

    def issuers(self) -> list[IssuerRecord]: ...

    def freshness(self, now: int) -> Any:
        """A monitoring.Freshness: the signer's lag over unexpired certificates."""
        ...

    def new_certificates(self, after: tuple[int, int, str], limit: int) -> list[Any]:
        """monitoring.NewCertificate rows after the key (ingested_at, issuer_id, serial hex)
        in that order: a page of what was ingested since."""
        ...

    def sample_certificates(self, start: str, now: int, limit: int) -> list[CertificateRow]:
        """Unexpired certificates from a point of the key order (a serial in hex)."""
        ...

    def counts(self) -> dict[str, int]: ...


@runtime_checkable
class Heartbeat(Protocol):
    """PostgreSQL only: the primary writes the heartbeat; each server tells the age of the one
    it holds (a replica's replayed copy), the only staleness signal that stays right."""

    def beat(self) -> None: ...

    def heartbeat_age(self) -> float | None:
        """Seconds since the heartbeat this server holds was written; None before the first."""
        ...


@runtime_checkable
class ReplicationReads(Heartbeat, Protocol):
    """PostgreSQL only: the primary's view of its replication slots, for the monitor."""

    def replication(self) -> list[dict[str, Any]]: ...

    def wal_keep_bytes(self) -> int | None: ...


class SiteDrains(Protocol):
    """Sites the operator drained (`certstatus site drain`): every responder of a drained site
    fails /readyz. Kept in the database, so it reaches responders that read only replicas
    and survives restarts."""

    def drain_site(self, site: str, note: str, now: int) -> None: ...

    def restore_site(self, site: str) -> bool:
        """False when the site was not drained."""
        ...

    def drained_sites(self) -> dict[str, tuple[int, str]]:
        """site -> (drained at, note)."""
        ...


class Sha256Requests(Protocol):
    """A responder asking the signers for a SHA-256 CertID response they sign only on
    request (store/sha256requests.py)."""

    def want_sha256(self, issuer_id: int, serial: int, now: int) -> bool:
        """True when the ask made the certificate due; False when it was asked for within
        the last ASK_INTERVAL, or is unknown or expired. now: the time on SQLite; PostgreSQL
        takes its own clock, so that a web node cannot choose its interval."""
        ...

    def close(self) -> None: ...


class ResponseFormatSwitch(Protocol):
    """The deployment's ResponseFormat, switched by `certstatus response-format`."""

    def response_format(self) -> ResponseFormat: ...

    def set_response_format(
        self, wanted: ResponseFormat, context: AuditContext, now: int
    ) -> ResponseFormat:
        """Switch to wanted; returns what it was. A change is audit-logged."""
        ...


class Expiry(Protocol):
    """Expiry housekeeping (store/expiry.py): one batch, one transaction, per call."""

    def retire_expired(self, now: int, limit: int) -> ExpiryBatch:
        """Flag the responses of the next certificates expired by now (persisted key)."""
        ...

    def prune_expired(
        self, after: ExpiryKey, expired_before: int, crl_period: int, now: int, limit: int
    ) -> ExpiryBatch:
        """Delete what may go among the next certificates expired before expired_before."""
        ...


class Store(
    IngestStore,
    SigningQueue,
    ResponseReads,
    CrlState,
    PurgeQueue,
    MonitorReads,
    SiteDrains,
    Sha256Requests,
    ResponseFormatSwitch,
    Expiry,
    Protocol,
):
    """Every role's interface: for code that really needs everything (tools, the signing
    roles' metrics); a role takes the narrow interface above instead."""

    def ping(self) -> None:
        """Raise if the store cannot answer a query."""
        ...

    def schema_version(self) -> int:
        """The newest schema migration applied (`certstatus stats` shows it)."""
        ...

    def close(self) -> None: ...
