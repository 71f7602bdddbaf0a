"""The audit log's chain (R23): who changed which certificate's status, when, from what to what.

Each entry is appended in the transaction that makes the change it describes, so a committed
change always has its entry and a rolled-back one never does. Entries form a hash chain: an
entry's hash is SHA-256 over its own fields and the previous entry's hash, and audit_head holds
the last sequence number and hash. An UPDATE of any field, a deleted or reordered entry, or a
truncated tail therefore breaks the chain at a place `certstatus audit verify` names.

What a chain cannot show by itself is a rewrite of everything after a point by someone who can
write the database: anchor it by keeping the head (`certstatus audit head` prints SEQ:HASH)
outside the database, e.g. in the CA's own log, and check it later with `audit verify --anchor`.

On PostgreSQL the head row is read FOR UPDATE: appenders queue on it, so the chain has one
order, the commit order; on SQLite the write transaction already holds the whole database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from certstatus.store.base import AuditContext, AuditRecord

GENESIS = "0" * 64
COLUMNS = (
    "seq, at, actor, action, issuer_id, serial, request_id, before, after, detail, prev_hash, hash"
)
INSERT = f"INSERT INTO audit ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
SET_HEAD = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1"
ENTRIES = f"SELECT {COLUMNS} FROM audit WHERE seq > ? AND at >= ? ORDER BY seq LIMIT ?"
FOR_CERTIFICATE = f"SELECT {COLUMNS} FROM audit WHERE issuer_id = ? AND serial = ? ORDER BY seq"


@dataclass(frozen=True, slots=True)
class Change:
    """An entry to append: what happened to which certificate (or which request was refused).
    before and after are a state as a dict, or already as its canonical JSON text (_json)."""

    action: str
    issuer_id: int | None = None
    serial: str | None = None
    before: dict[str, Any] | str | None = None
    after: dict[str, Any] | str | None = None
    detail: str | None = None


def _json(value: dict[str, Any] | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def entry_hash(fields: Sequence[Any], prev_hash: str) -> str:
    """SHA-256 of the entry's fields (seq .. detail) and the previous hash, as canonical JSON:
    one spelling per entry, whichever engine stored it."""
    payload = json.dumps([*fields, prev_hash], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class _Spelling(dict[str, str]):
    """Each distinct string's JSON spelling, encoded once: a batch of a hundred thousand
    entries repeats the same actor, action and states, and only serials differ."""

    def __missing__(self, text: str) -> str:
        spelled = self[text] = json.dumps(text, ensure_ascii=True)
        return spelled


def _spell(value: Any, strings: _Spelling) -> str:
    """value as json.dumps spells it inside entry_hash's payload (str, int or None)."""
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        return strings[value]
    return json.dumps(value, ensure_ascii=True)


def _spell_serial(serial: str | None, strings: _Spelling) -> str:
    """A serial is lowercase hex (serial_key), which JSON spells as itself in quotes: no
    json.dumps per serial, and no cache entry either (each serial appears once)."""
    if serial is not None and serial.isascii() and serial.isalnum():
        return f'"{serial}"'
    return _spell(serial, strings)


def chain(
    head: tuple[int, str], changes: Iterable[Change], context: AuditContext, now: int
) -> list[tuple[Any, ...]]:
    """The rows (INSERT's parameters) continuing the chain from head.

    Each hash is entry_hash's, with the payload spelled here from pieces encoded once per
    batch (test_audit checks both spellings agree): ingesting a large batch appends an entry
    per certificate, and this keeps the chain's cost a small part of it."""
    seq, prev = head
    strings = _Spelling()
    constant = f",{now},{_spell(context.actor, strings)},"
    request = _spell(context.request_id, strings)
    sha256 = hashlib.sha256
    rows = []
    for change in changes:
        seq += 1
        before, after = _json(change.before), _json(change.after)
        payload = "".join(
            (
                f"[{seq}",
                constant,
                strings[change.action],
                ",",
                _spell(change.issuer_id, strings),
                ",",
                _spell_serial(change.serial, strings),
                ",",
                request,
                ",",
                _spell(before, strings),
                ",",
                _spell(after, strings),
                ",",
                _spell(change.detail, strings),
                f',"{prev}"]',
            )
        )
        digest = sha256(payload.encode()).hexdigest()
        rows.append(
            (
                seq,
                now,
                context.actor,
                change.action,
                change.issuer_id,
                change.serial,
                context.request_id,
                before,
                after,
                change.detail,
                prev,
                digest,
            )
        )
        prev = digest
    return rows


def record_from_row(row: Sequence[Any]) -> AuditRecord:
    seq, at, actor, action, issuer, serial, request, before, after, detail, prev, digest = row
    return AuditRecord(
        int(seq),
        int(at),
        actor,
        action,
        None if issuer is None else int(issuer),
        serial,
        request,
        before,
        after,
        detail,
        prev,
        digest,
    )


@dataclass(frozen=True, slots=True)
class Broken:
    """The first entry where the chain does not hold, and why."""

    seq: int
    problem: str


def verify(
    records: Iterable[AuditRecord],
    head: tuple[int, str],
    anchor: tuple[int, str] | None = None,
) -> tuple[int, Broken | None]:
    """Walk the chain in seq order: (entries checked, the first break or None).

    Checked: sequence numbers run 1, 2, 3 ... without a gap (a deleted or reordered entry),
    each prev_hash is the hash before it, each hash is recomputed from the fields (an UPDATE),
    and the last entry is the head (a deleted tail). anchor, a (seq, hash) kept outside the
    database (`audit head`), must still be in the chain: a chain rewritten and rehashed from
    some entry on is consistent in itself, but no longer holds the anchor's hash."""
    expected_seq, prev = 1, GENESIS
    count = 0
    for record in records:
        if record.seq != expected_seq:
            return count, Broken(
                expected_seq, f"entry {expected_seq} is missing (next stored is {record.seq})"
            )
        if record.prev_hash != prev:
            return count, Broken(record.seq, "prev_hash does not match the entry before it")
        fields = (
            record.seq,
            record.at,
            record.actor,
            record.action,
            record.issuer_id,
            record.serial,
            record.request_id,
            record.before,
            record.after,
            record.detail,
        )
        if entry_hash(fields, prev) != record.hash:
            return count, Broken(record.seq, "its content does not match its hash (modified)")
        if anchor is not None and record.seq == anchor[0] and record.hash != anchor[1]:
            return count, Broken(
                record.seq,
                "its hash is not the anchor's (the chain was rewritten from here or before)",
            )
        prev = record.hash
        expected_seq += 1
        count += 1
    head_seq, head_hash = head
    if head_seq != expected_seq - 1 or head_hash != prev:
        return count, Broken(
            expected_seq, f"the chain ends at entry {expected_seq - 1} but the head says {head_seq}"
        )
    if anchor is not None and anchor[0] > head_seq:
        return count, Broken(
            anchor[0], f"the anchor's entry is missing: the chain ends at entry {head_seq}"
        )
    return count, None


def parse_anchor(text: str) -> tuple[int, str]:
    """`SEQ:HASH` as `audit head` prints it; ValueError with the expected form otherwise."""
    seq, _, digest = text.strip().partition(":")
    digest = digest.lower()
    if not seq.isdigit() or int(seq) < 1 or len(digest) != 64:
        raise ValueError(f"--anchor {text!r}: expected SEQ:HASH as `certstatus audit head` prints")
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise ValueError(
            f"--anchor {text!r}: expected SEQ:HASH as `certstatus audit head` prints"
        ) from None
    return int(seq), digest


def state(row: Any) -> dict[str, Any]:
    """A certificate's status for an entry's before/after: what a change moved."""
    if row is None:
        return {"status": "unknown"}
    if not row.revoked:
        return {"status": "good", "kind": row.kind}
    return {"status": "revoked", "reason": row.reason, "time": row.revoked_at, "kind": row.kind}


_UNKNOWN = _json({"status": "unknown"})
_GOOD = {kind: _json({"status": "good", "kind": kind}) for kind in ("cert", "precert")}


def recorded(record: Any, serial: str | None = None) -> Change:
    """The entry for a newly recorded (pre)certificate (a store.base.CertificateRecord);
    serial: its serial as stored, when the caller has it already (a bulk ingest does)."""
    return Change(
        "record",
        record.issuer_id,
        format(record.serial, "x") if serial is None else serial,
        _UNKNOWN,
        _GOOD.get(record.kind) or {"status": "good", "kind": record.kind},
    )


def upgraded_change(record: Any) -> Change:
    """The entry for a precertificate whose final certificate arrived."""
    return Change(
        "upgrade",
        record.issuer_id,
        format(record.serial, "x"),
        _GOOD["precert"],
        _GOOD["cert"],
    )


def all_entries(store: Any, since: int = 0, page: int = 5000) -> Iterator[AuditRecord]:
    """Every entry with at >= since, in chain order, a page at a time (flat memory)."""
    after = 0
    while True:
        batch = store.audit_entries(after, since, page)
        yield from batch
        if len(batch) < page:
            return
        after = batch[-1].seq


def as_json(record: AuditRecord) -> dict[str, Any]:
    """An entry for `audit export` and the API: before/after as objects, times as numbers."""
    return {
        "seq": record.seq,
        "at": record.at,
        "actor": record.actor,
        "action": record.action,
        "issuer_id": record.issuer_id,
        "serial": record.serial,
        "request_id": record.request_id,
        "before": None if record.before is None else json.loads(record.before),
        "after": None if record.after is None else json.loads(record.after),
        "detail": record.detail,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }
