"""The purge queue's statements, shared by both engines (written with '?' placeholders; the
PostgreSQL store rewrites them to '%s').

A purge becomes ready when the response it exists for is stored (its version reached), so a
cache is never purged before the origin can answer with the new status; a CRL purge is ready
when it is enqueued, in the publishing transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from certstatus.store.base import PendingPurge

ENQUEUE_OCSP = (
    "INSERT INTO purges (kind, issuer_id, serial, version, created_at) VALUES ('ocsp', ?, ?, ?, ?)"
)
ENQUEUE_CRL = (
    "INSERT INTO purges (kind, issuer_id, crl_partition, created_at, ready_at) "
    "VALUES ('crl', ?, ?, ?, ?)"
)
MARK_READY = (
    "UPDATE purges SET ready_at = ? WHERE settled_at IS NULL AND ready_at IS NULL AND "
    "EXISTS (SELECT 1 FROM responses r WHERE r.issuer_id = purges.issuer_id "
    "AND r.serial = purges.serial AND r.version >= purges.version)"
)
PENDING = (
    "SELECT p.id, p.kind, p.issuer_id, p.serial, p.crl_partition FROM purges p "
    "WHERE p.settled_at IS NULL AND p.ready_at <= ? AND NOT EXISTS (SELECT 1 FROM "
    "purge_deliveries d WHERE d.purge_id = p.id AND d.cache = ? AND d.pass = ?) "
    "ORDER BY p.id LIMIT ?"
)
RECORD = (
    "INSERT INTO purge_deliveries (purge_id, cache, pass, delivered_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
ISSUER_READY = (  # what an issuer-wide purge sent next will cover
    "SELECT p.id FROM purges p WHERE p.settled_at IS NULL AND p.ready_at <= ? "
    "AND p.issuer_id = ? AND NOT EXISTS (SELECT 1 FROM purge_deliveries d "
    "WHERE d.purge_id = p.id AND d.cache = ? AND d.pass = ?)"
)
PRUNE_DELIVERIES = (
    "DELETE FROM purge_deliveries WHERE purge_id IN (SELECT id FROM purges WHERE settled_at < ?)"
)
PRUNE = "DELETE FROM purges WHERE settled_at < ?"
BACKLOG = (
    "SELECT count(*) FILTER (WHERE ready_at IS NULL), count(*) FILTER (WHERE ready_at IS NOT "
    "NULL), min(created_at) FROM purges WHERE settled_at IS NULL"
)


def settle(targets: Sequence[tuple[str, int]]) -> tuple[str, list[object]]:
    """The statement settling ready purges delivered to every (cache, pass) in targets, and
    its parameters after the time. With no targets every ready purge settles."""
    if not targets:
        return (
            "UPDATE purges SET settled_at = ? WHERE settled_at IS NULL AND ready_at IS NOT NULL",
            [],
        )
    pairs = " OR ".join("(d.cache = ? AND d.pass = ?)" for _ in targets)
    params: list[object] = [value for pair in targets for value in pair]
    return (
        "UPDATE purges SET settled_at = ? WHERE settled_at IS NULL AND ready_at IS NOT NULL "
        "AND (SELECT count(*) FROM purge_deliveries d WHERE d.purge_id = purges.id "
        f"AND ({pairs})) = {len(targets)}",
        params,
    )


def pending_from_row(row: Sequence[object]) -> PendingPurge:
    purge_id, kind, issuer_id, serial, partition = row
    return PendingPurge(
        int(purge_id),  # type: ignore[call-overload]
        str(kind),
        int(issuer_id),  # type: ignore[call-overload]
        None if serial is None else int(str(serial), 16),
        None if partition is None else int(partition),  # type: ignore[call-overload]
    )
