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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from certstatus.cache.keys import issuer_key, purge_keys
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
    coalesce_threshold: int = 100
    coalesce_window: int = 5
    issuer_purges: int = 0  # issuer-wide purges sent (mass events), for tests and benchmarks
    _pruned_at: float = 0.0
    _issuer_purged: dict[tuple[str, int, int], int] = field(default_factory=dict)

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
        """Deliver what is pending, a batch at a time, coalescing mass events (R24).

        An issuer with coalesce_threshold or more purges in one batch gets one purge of its
        issuer-wide surrogate key (every OCSP answer and CRL of it carries that key) instead
        of one key per serial, and every purge of that issuer ready when it is sent is recorded
        as delivered by it. At most one such purge per issuer, cache and pass per
        coalesce_window: purges of an issuer purged less than a window ago wait for the next
        window (so a mass event costs one CDN purge per window), and purges queued behind
        them in the same batch wait at most that long too."""
        delivered = 0
        while True:
            pending = self.store.pending_purges(purger.name, pass_, ready_before, self.batch)
            if not pending:
                return delivered
            per_issuer = Counter(p.issuer_id for p in pending)
            coalesced: set[int] = set()
            deferred: set[int] = set()
            for issuer, count in per_issuer.items():
                last = self._issuer_purged.get((purger.name, pass_, issuer))
                if last is not None and now - last < self.coalesce_window:
                    deferred.add(issuer)  # a mass event's purge went out this window
                elif count >= self.coalesce_threshold:
                    coalesced.add(issuer)
            single = [p for p in pending if p.issuer_id not in coalesced | deferred]
            keys = {key for purge in single for key in purge_keys(purge)}
            keys |= {issuer_key(issuer) for issuer in coalesced}
            # read before the purge is sent: exactly the purges whose new responses it covers
            covered = [
                purge_id
                for issuer in sorted(coalesced)
                for purge_id in self.store.ready_purge_ids(purger.name, pass_, issuer, ready_before)
            ]
            if keys:
                purger.purge(sorted(keys))
            ids = [p.id for p in single] + covered
            if ids:
                self.store.record_purges(purger.name, pass_, ids, now)
            for issuer in coalesced:
                self._issuer_purged[(purger.name, pass_, issuer)] = now
                self.issuer_purges += 1
            self.health[purger.name].delivered += len(ids)
            delivered += len(ids)
            if deferred or len(pending) < self.batch:
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
