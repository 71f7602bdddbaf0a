"""Importing the revocations of another system's CRL (issue 12's migration path): certificates
first (`certstatus add` or the API), then the revocations their last CRL lists.

An import goes through the same rules and store path as `certstatus revoke --from` (R7 reasons,
only forward, not before notBefore, nothing in the future; one transaction and its audit entries
per chunk), with two differences that suit a migration:

- a serial the CRL lists but nobody recorded is reported, never invented: certstatus knows a
  certificate only from the certificate itself (F2), and a row made from a CRL entry would have
  no notAfter, kind or CRL partition;
- every entry is checked against the rules and the recorded rows before the first chunk is
  written, so a refused import writes nothing. Only a change made by someone else between that
  check and the writing can stop it part way; the error then says how far it committed, and the
  same CRL can be imported again (a revocation already in place is counted unchanged).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from certstatus.crl.reading import CrlListing, CrlReadError
from certstatus.ingest.api import CLOCK_SKEW, Ingest, IngestError, Revocation
from certstatus.status import RevocationRefused, RevocationState, revocation_transition
from certstatus.store.base import AuditContext, CertificateRow
from certstatus.store.shared import is_repeat

CHUNK = 10_000
EXAMPLES = 5
ACTION = "import-crl"


@dataclass
class ImportResult:
    """What an import did: entries on the CRL, revocations applied, ones already in place, and
    the serials not recorded here (count, and the first few in CRL order)."""

    listed: int = 0
    revoked: int = 0
    unchanged: int = 0
    unknown: int = 0
    unknown_examples: list[int] = field(default_factory=list)


def _chunks(listing: CrlListing, issuer: str, size: int) -> Iterator[list[Revocation]]:
    chunk: list[Revocation] = []
    try:
        for index, entry in enumerate(listing.entries(), start=1):
            chunk.append(
                Revocation(issuer, entry.serial, entry.reason, entry.time, f"entry {index}")
            )
            if len(chunk) >= size:
                yield chunk
                chunk = []
    except CrlReadError as exc:
        raise IngestError(str(exc)) from None
    if chunk:
        yield chunk


def _known(
    ingest: Ingest, issuer_id: int, chunk: list[Revocation]
) -> tuple[list[Revocation], list[Revocation], dict[int, CertificateRow]]:
    """(recorded, not recorded) entries of a chunk, and the recorded rows as they are now."""
    rows = ingest.store.certificates_many(issuer_id, [item.serial for item in chunk])
    known = [item for item in chunk if item.serial in rows]
    return known, [item for item in chunk if item.serial not in rows], rows


def _check(
    ingest: Ingest, items: list[Revocation], rows: dict[int, CertificateRow], now: int
) -> None:
    """The rules ingest checks, then the transition each would make on its row as it is now
    (what the store's transaction checks again): an entry that would regress a recorded
    revocation refuses the import before anything is written."""
    for item in items:
        if item.time is not None and item.time > now + CLOCK_SKEW:
            raise IngestError(
                f"{item.source}: serial {item.serial:x}: revocationDate is in the future"
            )
    requests = ingest.check_revocations(items, now)
    for item, request in zip(items, requests, strict=True):
        row = rows[request.serial]
        try:
            revocation_transition(
                RevocationState(row.revoked, row.revoked_at, row.reason),
                request.time,
                request.reason,
                request.time_given,
            )
        except RevocationRefused as exc:
            if not is_repeat(row, request):
                raise IngestError(f"{item.source}: serial {item.serial:x}: {exc}") from None


def import_crl(
    ingest: Ingest, issuer: str, listing: CrlListing, now: int, chunk: int = CHUNK
) -> ImportResult:
    """Revoke what listing lists for issuer (a configured name; listing was read and checked
    against that issuer's certificate), logged as "import-crl" by ingest's actor."""
    issuer_id = ingest.issuer_id(issuer)
    try:
        for items in _chunks(listing, issuer, chunk):  # everything checked, nothing written
            known, _, rows = _known(ingest, issuer_id, items)
            _check(ingest, known, rows, now)
    except IngestError as exc:
        raise IngestError(f"{exc}; nothing recorded") from None
    number = "none" if listing.number is None else str(listing.number)
    audit = AuditContext(ingest.audit.actor, f"crl {issuer} number {number}", ACTION)
    result = ImportResult()
    for items in _chunks(listing, issuer, chunk):
        known, unknown, _ = _known(ingest, issuer_id, items)
        result.unknown += len(unknown)
        room = EXAMPLES - len(result.unknown_examples)
        result.unknown_examples += [item.serial for item in unknown[:room]]
        try:
            outcomes = ingest.revoke_many(known, now, audit) if known else []
        except IngestError as exc:
            raise IngestError(
                f"{exc}; changed since it was checked: committed through entry "
                f"{result.listed} ({result.revoked} revoked), nothing after"
            ) from None
        result.revoked += sum(o.changed for o in outcomes)
        result.unchanged += sum(not o.changed for o in outcomes)
        result.listed += len(items)
    return result
