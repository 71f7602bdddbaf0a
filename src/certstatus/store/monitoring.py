"""Statements the metrics and the monitor read, shared by both engines ('?' placeholders).

They run at most every few seconds (metrics are cached between scrapes), never per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from certstatus.store.base import CERTIFICATE_COLUMNS, CertificateRow, certificate_from_row


@dataclass(frozen=True, slots=True)
class Freshness:
    """How far behind the signer is, over certificates not yet expired."""

    oldest_due_at: int | None  # the longest-waiting due row (new, revoked or refresh)
    oldest_this_update: int | None  # the oldest response still being relied on
    soonest_next_update: int | None  # the first response that will expire (R4)


@dataclass(frozen=True, slots=True)
class NewCertificate:
    row: CertificateRow
    ingested_at: int


OLDEST_DUE = "SELECT min(due_at) FROM certificates WHERE due_at IS NOT NULL AND due_at <= ?"
RESPONSE_AGES = (
    "SELECT min(r.this_update), min(r.next_update) FROM responses r JOIN certificates c "
    "ON c.issuer_id = r.issuer_id AND c.serial = r.serial WHERE c.not_after > ?"
)
# pages in (ingested_at, issuer_id, serial) order, so a second holding more rows than a page
# (a bulk import) is read through rather than re-read forever
NEW_CERTIFICATES = (
    f"SELECT {CERTIFICATE_COLUMNS}, ingested_at FROM certificates "
    "WHERE (ingested_at, issuer_id, serial) > (?, ?, ?) "
    "ORDER BY ingested_at, issuer_id, serial LIMIT ?"
)
# a cheap, roughly uniform sample: the certificates after a random point of the key order
SAMPLE = (
    f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial >= ? AND not_after > ? "
    "ORDER BY issuer_id, serial LIMIT ?"
)


def new_from_row(row: Sequence[Any]) -> NewCertificate:
    return NewCertificate(certificate_from_row(row[:-1]), int(row[-1]))
