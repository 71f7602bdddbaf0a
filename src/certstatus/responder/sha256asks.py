"""A responder's asks for SHA-256 CertID responses that are signed only on request
(store/sha256requests.py says why and what the store does with them).

The request that finds such a response missing is answered tryLater at once: the ask is sent
to the signers in the background, on a thread of its own, never on the request's path, so
neither a slow primary nor a burst of such requests holds a worker or the threads CRL reads
use. Per process: a certificate is asked for at most once per ASK_INTERVAL, at most
ASKS_PER_SECOND asks are sent (a burst of as many), and at most MAX_QUEUED wait; beyond
that a request is answered tryLater without asking, and its client's retry asks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from certstatus.responder.refusals import RefusalLog
from certstatus.store.sha256requests import ASK_INTERVAL

log = logging.getLogger(__name__)

Ask = Callable[[int, int, int], bool]  # (issuer_id, serial, now) -> whether it made it due

ASKS_PER_SECOND = 20.0
MAX_QUEUED = 4
MAX_REMEMBERED = 10_000


class Sha256Asks:
    def __init__(
        self,
        ask: Ask,
        clock: Callable[[], float],
        report: Callable[[str], None] = lambda result: None,
    ) -> None:
        """report: told "sent", "failed" or "skipped" for each ask (the responder's metrics)."""
        self._ask = ask
        self._clock = clock
        self._report = report
        self._asked_at: dict[tuple[int, int], float] = {}
        self._tokens = ASKS_PER_SECOND
        self._filled_at = clock()
        self._queued: set[asyncio.Future[None]] = set()
        self._thread: ThreadPoolExecutor | None = None
        self._failures = RefusalLog("could not ask the signers for a SHA-256 response")
        self.sent = 0  # asks handed to the store, for tests
        self.failed = 0  # asks the store refused (the primary unreachable, no EXECUTE grant)

    def __call__(self, issuer_id: int, serial: int) -> None:
        """Ask for it, unless this process asked recently or is asking too much."""
        now = self._clock()
        key = (issuer_id, serial)
        if now - self._asked_at.get(key, -ASK_INTERVAL) < ASK_INTERVAL:
            return
        self._tokens = min(
            ASKS_PER_SECOND, self._tokens + (now - self._filled_at) * ASKS_PER_SECOND
        )
        self._filled_at = now
        if self._tokens < 1 or len(self._queued) >= MAX_QUEUED:
            self._report("skipped")
            return
        self._tokens -= 1
        if len(self._asked_at) >= MAX_REMEMBERED:
            self._asked_at.clear()
        self._asked_at[key] = now
        self.sent += 1
        self._report("sent")
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="sha256-asks")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._thread, self._send, issuer_id, serial, int(now))
        self._queued.add(future)
        future.add_done_callback(self._queued.discard)

    def _send(self, issuer_id: int, serial: int, now: int) -> None:
        try:
            if self._ask(issuer_id, serial, now):
                log.debug("asked for issuer %d serial %x's SHA-256 response", issuer_id, serial)
        except Exception as exc:  # the client gets tryLater either way, and asks again
            self.failed += 1
            self._report("failed")
            self._failures.refused(str(exc))  # one thread sends: the log needs no lock
