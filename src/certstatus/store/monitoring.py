"""Statements the metrics and the monitor read, shared by both engines ('?' placeholders).

They run at most every few seconds (metrics are cached between scrapes), never per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from certstatus.store.base import (
    CERTIFICATE_COLUMNS,
    CertificateRow,
    Priority,
    certificate_from_row,
)


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


# The longest wait over the three priorities: the minimum of each priority's first entry in
# the due index (priority, due_at), three index probes however many rows are stored. One
# min(due_at) over all priorities would read the whole index (every unexpired certificate
# waits there for its refresh).
OLDEST_DUE = (
    "SELECT min(first) FROM ("
    + " UNION ALL ".join(
        f"SELECT (SELECT min(due_at) FROM certificates WHERE priority = {int(p)} "
        "AND due_at IS NOT NULL AND due_at <= ?) AS first"
        for p in Priority
    )
    + ") AS firsts"
)
OLDEST_DUE_PARAMETERS = len(Priority)
# The oldest thisUpdate and the soonest nextUpdate among unexpired certificates' responses:
# the first entries of the partial indexes over responses not retired (schema v9), each checked
# against its certificate's notAfter. Housekeeping retires the responses of expired
# certificates, so only those expired since its last pass (or signed after it) are passed over
# (CROSS JOIN: SQLite keeps responses as the outer loop; PostgreSQL plans it the same).
_FIRST_RESPONSE = (
    "SELECT r.{column} FROM responses r CROSS JOIN certificates c "
    "WHERE r.retired = 0 AND c.issuer_id = r.issuer_id AND c.serial = r.serial "
    "AND c.not_after > ? ORDER BY r.{column} LIMIT 1"
)
OLDEST_THIS_UPDATE = _FIRST_RESPONSE.format(column="this_update")
SOONEST_NEXT_UPDATE = _FIRST_RESPONSE.format(column="next_update")
# pages in (ingested_at, issuer_id, serial) order, so a second holding more rows than a page
# (a bulk import) is read through rather than re-read forever
NEW_CERTIFICATES = (
    f"SELECT {CERTIFICATE_COLUMNS}, ingested_at FROM certificates "
    "WHERE (ingested_at, issuer_id, serial) > (?, ?, ?) "
    "ORDER BY ingested_at, issuer_id, serial LIMIT ?"
)
# a cheap, roughly uniform sample: the certificates after a random point of the key order,
# asked of each issuer in turn (a range of the primary key; without issuer_id the condition on
# serial alone would read the key from its start)
SAMPLE = (
    f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE issuer_id = ? AND serial >= ? "
    "AND not_after > ? ORDER BY serial LIMIT ?"
)


def new_from_row(row: Sequence[Any]) -> NewCertificate:
    return NewCertificate(certificate_from_row(row[:-1]), int(row[-1]))
