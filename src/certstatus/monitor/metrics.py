"""The monitor's metrics, in its own registry (served at the monitor's /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

CHECKS = Counter(
    "certstatus_monitor_checks",
    "OCSP checks made from outside, by target, method and what the answer was.",
    ["target", "method", "kind"],
    registry=REGISTRY,
)
TIME_TO_AUTHORITATIVE = Histogram(
    "certstatus_monitor_time_to_authoritative_seconds",
    "From a serial's ingestion to its first correct authoritative answer, per target "
    "(the Baseline Requirements allow 15 minutes).",
    ["target"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800),
    registry=REGISTRY,
)
NOT_AUTHORITATIVE = Gauge(
    "certstatus_monitor_not_authoritative_serials",
    "New serials not yet answered authoritatively by a target, older than the warning "
    "(10 min) or critical (15 min) age.",
    ["target", "age"],
    registry=REGISTRY,
)
WRONG_ANSWERS = Counter(
    "certstatus_monitor_wrong_answers",
    "Authoritative answers that failed a check (signature, CertID, status, times, headers).",
    ["target"],
    registry=REGISTRY,
)
KNOWN_NOT_AUTHORITATIVE = Counter(
    "certstatus_monitor_known_serial_not_authoritative",
    "Non-authoritative answers for signed, known serials (the founding incident's symptom).",
    ["target", "kind"],
    registry=REGISTRY,
)
TARGET_READY = Gauge(
    "certstatus_monitor_target_ready",
    "1 while an origin target's /readyz answers 200.",
    ["target"],
    registry=REGISTRY,
)
FINDINGS = Gauge(
    "certstatus_monitor_findings",
    "Active findings by kind and severity.",
    ["kind", "severity"],
    registry=REGISTRY,
)
REPLICA_STALENESS = Gauge(
    "certstatus_replica_staleness_seconds",
    "Age of the heartbeat each replica has replayed (+Inf while unreachable).",
    ["replica", "site"],
    registry=REGISTRY,
)
REPLICA_BYTES_BEHIND = Gauge(
    "certstatus_replica_bytes_behind",
    "WAL bytes between the primary's current position and what the replica has replayed.",
    ["replica"],
    registry=REGISTRY,
)
SLOT_SAFE_WAL = Gauge(
    "certstatus_replication_slot_safe_wal_size_bytes",
    "WAL that can still be written before the slot's replica is cut off (max_slot_wal_keep_size).",
    ["slot"],
    registry=REGISTRY,
)
SLOT_SAFE_FRACTION = Gauge(
    "certstatus_replication_slot_safe_wal_ratio",
    "safe_wal_size as a fraction of max_slot_wal_keep_size: near 0, the replica is cut off.",
    ["slot"],
    registry=REGISTRY,
)
SLOT_STATUS = Gauge(
    "certstatus_replication_slot_wal_status",
    "1 for the slot's current wal_status (reserved, extended, unreserved, lost), 0 for others.",
    ["slot", "wal_status"],
    registry=REGISTRY,
)
SLOT_ACTIVE = Gauge(
    "certstatus_replication_slot_active",
    "1 while a standby streams through the slot.",
    ["slot"],
    registry=REGISTRY,
)
HEARTBEAT_AGE = Gauge(
    "certstatus_heartbeat_age_seconds",
    "Age of the heartbeat on the primary itself: grows when the heartbeat writer stops.",
    registry=REGISTRY,
)
CRL_REMAINING = Gauge(
    "certstatus_monitor_crl_next_update_seconds",
    "Seconds until the nextUpdate of each CRL as fetched from its public URL.",
    ["url"],
    registry=REGISTRY,
)
CRL_OK = Gauge(
    "certstatus_monitor_crl_ok",
    "1 when the CRL fetched from its URL passed every check, else 0.",
    ["url"],
    registry=REGISTRY,
)
AGREEMENT = Gauge(
    "certstatus_monitor_agreement_problems",
    "Disagreements between database, OCSP and published CRLs (F6).",
    registry=REGISTRY,
)
