"""A responder's asks for SHA-256 CertID responses that are signed only on request
(store/sha256requests.py says why and what the store does with them).

The request that finds such a response missing is answered tryLater at once: an ask is sent
to the signers in the background, never on the request's path, so neither a slow primary nor
a burst of such requests holds a worker. This process asks for a certificate at most once per
ASK_INTERVAL and keeps at most MAX_IN_FLIGHT asks open; above that, a request is answered
tryLater without asking (its client's retry asks)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from certstatus.store.base import StoreError
from certstatus.store.sha256requests import ASK_INTERVAL

log = logging.getLogger(__name__)

Ask = Callable[[int, int, int], bool]  # (issuer_id, serial, now) -> whether it made it due

MAX_IN_FLIGHT = 64
MAX_REMEMBERED = 10_000


class Sha256Asks:
    def __init__(self, ask: Ask, clock: Callable[[], float]) -> None:
        self._ask = ask
        self._clock = clock
        self._asked_at: dict[tuple[int, int], float] = {}
        self._in_flight: set[asyncio.Future[None]] = set()
        self.sent = 0  # asks sent to the store, for tests and metrics

    def __call__(self, issuer_id: int, serial: int) -> None:
        """Ask for it, unless this process asked recently or has too many asks open."""
        now = self._clock()
        key = (issuer_id, serial)
        if now - self._asked_at.get(key, -ASK_INTERVAL) < ASK_INTERVAL:
            return
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            return
        if len(self._asked_at) >= MAX_REMEMBERED:
            self._asked_at.clear()
        self._asked_at[key] = now
        self.sent += 1
        task = asyncio.ensure_future(asyncio.to_thread(self._send, issuer_id, serial, int(now)))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _send(self, issuer_id: int, serial: int, now: int) -> None:
        try:
            if self._ask(issuer_id, serial, now):
                log.info(
                    "asked the signers for issuer %d serial %x's SHA-256 response",
                    issuer_id,
                    serial,
                )
        except StoreError as exc:  # the client gets tryLater either way, and asks again
            log.warning(
                "could not ask for a SHA-256 response (issuer %d serial %x): %s",
                issuer_id,
                serial,
                exc,
            )
