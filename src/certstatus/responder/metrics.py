"""The responder's metrics, shared by the server's worker processes through prometheus_client's
multiprocess mode: run_server points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the
workers start, and /metrics merges what every worker wrote.

Imported by the workers only (create_app), after that variable is set: prometheus_client picks
its storage when first imported.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from certstatus.store.replicaset import Source

ANSWERS = Counter(
    "certstatus_responder_answers",
    "OCSP answers, by outcome (good, revoked, unknown, unauthorized, malformed, tryLater, 304, "
    "error) and by the database that answered.",
    ["outcome", "source"],
)
FALLBACKS = Counter(
    "certstatus_responder_primary_fallbacks",
    "Misses on a fresh replica asked of the primary before answering.",
)
DURATION = Histogram(
    "certstatus_responder_request_duration_seconds",
    "Time from a request's arrival to its answer being handed to the server.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STALENESS = Gauge(
    "certstatus_responder_source_staleness_seconds",
    "Age of the heartbeat each source has replayed (+Inf while unreachable); the worst worker's.",
    ["source", "role", "site"],
    multiprocess_mode="max",
)
FRESH = Gauge(
    "certstatus_responder_source_fresh",
    "1 while a source is within max_staleness and used, else 0; the worst worker's.",
    ["source", "role", "site"],
    multiprocess_mode="min",
)
READY = Gauge(
    "certstatus_responder_ready",
    "1 while some source can answer authoritatively (what /readyz says), else 0.",
    multiprocess_mode="min",
)


class ResponderMetrics:
    """What OcspApp reports to; the tests' apps use the no-op base in app.py."""

    def answered(self, outcome: str, source: str, seconds: float) -> None:
        ANSWERS.labels(outcome, source or "local").inc()
        DURATION.observe(seconds)

    def sampled(self, source: Source, fresh: bool, ready: bool) -> None:
        labels = (source.name, source.role, source.site or "")
        staleness = float("inf") if source.staleness is None else source.staleness
        STALENESS.labels(*labels).set(staleness)
        FRESH.labels(*labels).set(1 if fresh else 0)
        READY.set(1 if ready else 0)

    def fallback(self) -> None:
        FALLBACKS.inc()

    def ready(self, ready: bool) -> None:
        READY.set(1 if ready else 0)


def render() -> tuple[bytes, bytes]:
    """The exposition body and its content type, merged across worker processes."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST.encode()
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode()
