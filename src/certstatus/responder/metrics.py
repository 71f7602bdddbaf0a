"""The responder's metrics, shared by the server's worker processes through prometheus_client's
multiprocess mode: run_server points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the
workers start, and /metrics merges what every worker wrote.

Imported by the workers only (create_app), after that variable is set: prometheus_client picks
its storage when first imported.

The gauges merge the living workers only ("live" modes): the server forgets a worker that
exits (server.forget_worker), else its last staleness or readiness would stay in the merge
for good, beside the values of the worker started in its place.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from typing import Literal, get_args

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
    multiprocess_mode="livemax",
)
FRESH = Gauge(
    "certstatus_responder_source_fresh",
    "1 while a source is within max_staleness and used, else 0; the worst worker's.",
    ["source", "role", "site"],
    multiprocess_mode="livemin",
)
SHA256_ASKS = Counter(
    "certstatus_responder_sha256_asks",
    "Asks to the signers for a SHA-256 CertID response signed on request, by result: sent, "
    "failed (not written, see the log: the primary unreachable, or no EXECUTE grant on its "
    "ask function), skipped "
    "(this process asked too much at once; the client's retry asks).",
    ["result"],
)
for _result in ("sent", "failed", "skipped"):  # from 0, so the first failure is an increase
    SHA256_ASKS.labels(_result)
TRY_LATER = Counter(
    "certstatus_responder_try_later",
    "tryLater answers by why: not_signed (recorded, no response signed yet: the signers), "
    "expired (the stored response is past its nextUpdate: the signers), sha256_on_request "
    "(its SHA-256 response is asked of the signers), no_source (no database could answer).",
    ["reason"],
)
TryLaterReason = Literal["not_signed", "expired", "sha256_on_request", "no_source"]
TRY_LATER_REASONS: tuple[TryLaterReason, ...] = get_args(TryLaterReason)
for _reason in TRY_LATER_REASONS:  # from 0, so the first one is an increase
    TRY_LATER.labels(_reason)
READY = Gauge(
    "certstatus_responder_ready",
    "1 while some source can answer authoritatively (what /readyz says), else 0.",
    multiprocess_mode="livemin",
)


class ResponderMetrics:
    """What OcspApp reports to; the tests' apps use the no-op base in app.py.

    Answers are counted in plain dicts and flushed to the shared (memory-mapped) values every
    `flush_every` seconds by a thread: a multiprocess value update costs several microseconds,
    a measured fifth of a request's time in this process when made per answer."""

    def __init__(self, flush_every: float = 0.5) -> None:
        self._answers: dict[tuple[str, str], int] = {}
        self._try_later: dict[TryLaterReason, int] = {}
        self._bounds = list(DURATION._upper_bounds)
        self._buckets = [0] * len(self._bounds)
        self._seconds = 0.0
        self._lock = threading.Lock()
        self.flush_every = flush_every
        threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()

    def sha256_asked(self, result: str) -> None:
        """Rare (an ask per certificate at most every 30 s): counted at once, from any thread."""
        SHA256_ASKS.labels(result).inc()

    def answered(self, outcome: str, source: str, seconds: float) -> None:
        key = (outcome, source or "local")
        with self._lock:
            self._answers[key] = self._answers.get(key, 0) + 1
            self._buckets[bisect.bisect_left(self._bounds, seconds)] += 1
            self._seconds += seconds

    def try_later(self, reason: TryLaterReason) -> None:
        """Why a tryLater was answered, beside answered()'s count: a bounded label
        (TRY_LATER_REASONS), counted like the answers, since a client drives it in an outage."""
        with self._lock:
            self._try_later[reason] = self._try_later.get(reason, 0) + 1

    def flush(self) -> None:
        with self._lock:
            answers, self._answers = self._answers, {}
            try_later, self._try_later = self._try_later, {}
            buckets, self._buckets = self._buckets, [0] * len(self._bounds)
            seconds, self._seconds = self._seconds, 0.0
        for (outcome, source), count in answers.items():
            ANSWERS.labels(outcome, source).inc(count)
        for reason, count in try_later.items():
            TRY_LATER.labels(reason).inc(count)
        stored = getattr(DURATION, "_buckets", None)
        if stored is not None and len(stored) == len(buckets):
            for value, count in zip(stored, buckets, strict=True):
                if count:
                    value.inc(count)
            DURATION._sum.inc(seconds)
        else:  # another prometheus_client layout: exact counts, approximate sums
            for bound, count in zip(self._bounds, buckets, strict=True):
                for _ in range(count):
                    DURATION.observe(min(bound, 60.0))

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.flush_every)
            self.flush()

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


def render() -> tuple[bytes, str]:
    """The exposition body and its content type, merged across worker processes."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
