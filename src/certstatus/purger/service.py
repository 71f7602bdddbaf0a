"""The purger role: drains the purge queue into every configured cache.

Two passes per change when the responders read replicas. The first purges as soon as the new
response is stored on the primary; a cache miss right after it may still be answered from a
replica that has not replayed the change, and that old answer would be cached until its
max-age (days). The second pass, recheck_after later (max_staleness plus a margin), purges
again when every replica a responder still uses holds the change: a replica staler than
max_staleness is not used, and one fresher than that has replayed everything written before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from certstatus.cache.keys import purge_keys
from certstatus.cache.purgers import PurgeError, Purger
from certstatus.store.base import PurgeQueue, StoreError

log = logging.getLogger("certstatus.purger")

SETTLED_RETENTION = 86_400  # delivered purges are kept a day, for `certstatus stats` and audits


@dataclass
class CacheHealth:
    """What the purger knows about one cache, for metrics and the status page."""

    delivered: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    retry_at: float = 0.0


@dataclass
class PurgeService:
    store: PurgeQueue
    purgers: Sequence[Purger]
    recheck_after: int = 0
    interval: float = 0.2
    batch: int = 200
    clock: Callable[[], float] = time.time
    health: dict[str, CacheHealth] = field(default_factory=dict)
    _pruned_at: float = 0.0

    def __post_init__(self) -> None:
        for purger in self.purgers:
            self.health.setdefault(purger.name, CacheHealth())

    @property
    def delays(self) -> list[int]:
        """Seconds after readiness at which each pass is due."""
        return [0, self.recheck_after] if self.recheck_after > 0 else [0]

    def step(self) -> int:
        """One synchronous round (tests, tools): mark ready, deliver what is due to every cache
        that is not backing off, settle what reached everyone. Returns the purges delivered."""
        now = int(self.clock())
        self.store.mark_purges_ready(now)
        delivered = sum(self._deliver_due(purger, now) for purger in self.purgers)
        self._settle(now)
        return delivered

    def _deliver_due(self, purger: Purger, now: int) -> int:
        health = self.health[purger.name]
        if health.retry_at > self.clock():
            return 0
        delivered = 0
        for pass_, delay in enumerate(self.delays):
            try:
                delivered += self._deliver(purger, pass_, now - delay, now)
            except PurgeError as exc:
                self._failed(purger.name, health, exc)
                break
            health.consecutive_failures = 0
        return delivered

    def _settle(self, now: int) -> None:
        targets = [(p.name, pass_) for p in self.purgers for pass_ in range(len(self.delays))]
        self.store.settle_purges(targets, now)
        if now - self._pruned_at > 60:
            self.store.prune_purges(now - SETTLED_RETENTION)
            self._pruned_at = now

    def _deliver(self, purger: Purger, pass_: int, ready_before: int, now: int) -> int:
        delivered = 0
        while True:
            pending = self.store.pending_purges(purger.name, pass_, ready_before, self.batch)
            if not pending:
                return delivered
            keys = sorted({key for purge in pending for key in purge_keys(purge)})
            purger.purge(keys)
            self.store.record_purges(purger.name, pass_, [p.id for p in pending], now)
            self.health[purger.name].delivered += len(pending)
            delivered += len(pending)
            if len(pending) < self.batch:
                return delivered

    def _failed(self, name: str, health: CacheHealth, exc: PurgeError) -> None:
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = str(exc)
        backoff = min(30.0, 0.25 * 2 ** min(health.consecutive_failures, 8))
        if exc.retry_after is not None:
            backoff = max(backoff, min(exc.retry_after, 300.0))
        health.retry_at = self.clock() + backoff
        if health.consecutive_failures in (1, 5) or health.consecutive_failures % 50 == 0:
            log.error(
                "purge to cache %s failed (%d in a row; kept queued, retrying in %.1fs): %s",
                name,
                health.consecutive_failures,
                backoff,
                exc,
            )

    def run(self, stop: threading.Event) -> None:
        """Readiness and settling here; each cache's deliveries on a thread of its own, so a
        cache that hangs (each attempt waits for its timeout) delays neither the others nor
        the marking of new purges as ready."""
        caches = [
            threading.Thread(
                target=self._serve_cache, args=(purger, stop), name=f"purge-{purger.name}"
            )
            for purger in self.purgers
        ]
        for thread in caches:
            thread.start()
        while not stop.is_set():
            try:
                now = int(self.clock())
                self.store.mark_purges_ready(now)
                self._settle(now)
            except StoreError as exc:
                log.error("purge queue unavailable: %s", exc)
            stop.wait(self.interval)
        for thread in caches:
            thread.join()

    def _serve_cache(self, purger: Purger, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                now = int(self.clock())
                if self._deliver_due(purger, now):
                    self._settle(now)  # what just reached its last cache is done at once
            except StoreError as exc:
                log.error("purge queue unavailable to cache %s: %s", purger.name, exc)
            stop.wait(self.interval)
