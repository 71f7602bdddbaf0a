"""What recording a batch of certificates does, decided once for both engines.

Recording one certificate at a time gives the rules: a serial not stored yet is added; a final
certificate whose serial is stored as a precertificate upgrades it (kind 'cert', notBefore kept
or filled in); anything else is already known and changes nothing. A batch must end exactly as
those one-at-a-time writes would, even when it holds a serial twice (a precertificate and its
final certificate together), but it is written with a few set-wise statements: each new serial
is inserted once, already in its final state, and each stored precertificate is upgraded once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from certstatus.store import audit as audit_chain
from certstatus.store.base import CertificateRecord, serial_key

Key = tuple[int, str]  # (issuer_id, serial as stored)

NEW_DUE_STEP = 60  # seconds: new certificates recorded within one are claimed in key order


def new_due_at(now: int) -> int:
    """When a certificate recorded at `now` is due to be signed: the start of its minute.

    Claims go in due_at order, and rows due at the same moment go in key order (SQLite's due
    index carries the primary key). Due at whole seconds, one batch of a bulk import's claims
    held serials spread over the whole key range, each on a page of its own, and that page
    work halved the signer's rate beyond 10^5 certificates; a minute's new rows claimed in
    key order share their pages (docs/benchmarks.md). Due a little early changes nothing: a
    new row is due at once anyway; the backlog's age reads up to a minute older."""
    return now - now % NEW_DUE_STEP


def key_of(record: CertificateRecord) -> Key:
    return (record.issuer_id, serial_key(record.serial))


def first_records(records: Sequence[CertificateRecord]) -> dict[Key, CertificateRecord]:
    """Each serial's row as the batch would leave it if the serial is new: its first record,
    upgraded by a later final certificate of the same serial (kind 'cert', notBefore kept, or
    taken from that certificate)."""
    rows: dict[Key, CertificateRecord] = {}
    for record in records:
        key = key_of(record)
        row = rows.get(key)
        if row is None:
            rows[key] = record
        elif row.kind == "precert" and record.kind == "cert":
            not_before = row.not_before if row.not_before is not None else record.not_before
            rows[key] = replace(row, kind="cert", not_before=not_before)
    return rows


def in_key_order(rows: Mapping[Key, CertificateRecord]) -> list[tuple[Key, CertificateRecord]]:
    """rows in the order of the certificates table's key (issuer, then the serial's text).
    Inserted in that order, each page of the table and its indexes is filled in turn; in
    input order, random serials touch a page at random each, and writing a large batch on
    SQLite took twice the CPU."""
    items = sorted(rows.items(), key=lambda item: item[0][1])
    items.sort(key=lambda item: item[0][0])  # stable: serials stay sorted within an issuer
    return items


def upgrading(
    records: Sequence[CertificateRecord], stored: set[Key]
) -> dict[Key, CertificateRecord]:
    """For serials stored before the batch: the first final certificate of each, the one
    whose write would upgrade a stored precertificate."""
    found: dict[Key, CertificateRecord] = {}
    for record in records:
        key = key_of(record)
        if record.kind == "cert" and key in stored and key not in found:
            found[key] = record
    return found


@dataclass(frozen=True, slots=True)
class Outcomes:
    outcomes: tuple[tuple[int, int, str], ...]  # as AddResult.outcomes, in input order
    changes: list[audit_chain.Change]  # the audit entries, in input order
    added: int


def outcomes(records: Sequence[CertificateRecord], stored: Mapping[Key, str]) -> Outcomes:
    """Each record's outcome ("added", "upgraded", "known") and the audit entries, replaying
    the batch one record at a time over stored: each serial's kind before the batch (absent:
    not stored)."""
    kinds = dict(stored)
    result: list[tuple[int, int, str]] = []
    changes: list[audit_chain.Change] = []
    added = 0
    for record in records:
        key = key_of(record)
        kind = kinds.get(key)
        if kind is None:
            kinds[key] = record.kind
            result.append((record.issuer_id, record.serial, "added"))
            changes.append(audit_chain.recorded(record, key[1]))
            added += 1
        elif kind == "precert" and record.kind == "cert":
            kinds[key] = "cert"
            result.append((record.issuer_id, record.serial, "upgraded"))
            changes.append(audit_chain.upgraded_change(record))
        else:
            result.append((record.issuer_id, record.serial, "known"))
    return Outcomes(tuple(result), changes, added)
