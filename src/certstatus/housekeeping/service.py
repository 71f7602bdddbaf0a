"""The housekeeping role: every `every` seconds, retire then prune, a batch per transaction.

Why batches: one transaction deleting a day of expiries at 10^8 certificates (a million rows)
would hold row locks, bloat the WAL and stall replicas for minutes; a batch commits in about a
second, so revocations and signatures interleave with it. On SQLite a batch holds the one
write lock for its whole length: deleting 10 000 certificates with their responses took 4.9 s
at 10^6 rows on this (loaded) machine, hence 2000 by default (benchmarks/queries.py).

What may go, and what must stay (R18, R23), is decided by the store (store/expiry.py): a
certificate goes `retention` after its notAfter, once its last response has expired and, if
revoked, once the published CRL no longer lists it. Audit rows are never pruned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from certstatus.store.base import Expiry, StoreError
from certstatus.store.expiry import START

log = logging.getLogger("certstatus.housekeeping")


@dataclass(frozen=True, slots=True)
class HousekeepingPass:
    """One pass: responses retired, certificates pruned, and the transactions each took."""

    retired: int = 0
    retire_batches: int = 0
    pruned: int = 0
    prune_batches: int = 0


@dataclass
class Housekeeping:
    store: Expiry
    retention: int
    crl_period: int
    batch: int = 2000
    every: float = 300.0
    clock: Callable[[], float] = time.time

    def step(self, stop: threading.Event | None = None) -> HousekeepingPass:
        """Retire and prune until caught up (or stop is set, between batches)."""
        retired = retire_batches = pruned = prune_batches = 0
        while stop is None or not stop.is_set():
            done = self.store.retire_expired(int(self.clock()), self.batch)
            if done.scanned:
                retire_batches += 1
                retired += done.changed
            if done.scanned < self.batch:
                break
        after = START
        while stop is None or not stop.is_set():
            now = int(self.clock())
            done = self.store.prune_expired(
                after, now - self.retention, self.crl_period, now, self.batch
            )
            if done.scanned:
                prune_batches += 1
                pruned += done.changed
            if done.last is None or done.scanned < self.batch:
                break
            after = done.last
        result = HousekeepingPass(retired, retire_batches, pruned, prune_batches)
        if retired or pruned:
            log.info(
                "housekeeping: %d expired responses retired, %d certificates pruned "
                "(%d and %d batches)",
                retired,
                pruned,
                retire_batches,
                prune_batches,
            )
        return result

    def run(self, stop: threading.Event) -> None:
        """A pass every `every` seconds until stop is set; a database outage is logged and
        the pass retried at the next period (nothing is lost: both steps resume by key)."""
        while not stop.is_set():
            try:
                self.step(stop)
            except StoreError as exc:
                log.error("housekeeping pass failed: %s", exc)
            except Exception:
                log.exception("housekeeping pass failed")
            stop.wait(self.every)
