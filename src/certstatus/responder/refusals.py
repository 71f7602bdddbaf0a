"""The log of tryLater answers a database refused: one line per reason at most every interval.

While a database is out, or while certificates wait for their first signature, every such
request is refused. A traceback per request (what this was before) buried the one line an
operator needs under thousands and cost more than the answer; the count says how many each
line stands for. The metrics (certstatus_responder_answers_total{outcome="tryLater"}) count
every one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("certstatus.responder")

_MAX_REASONS = 64  # reasons are a store's fixed messages; a bound in case one carries data


class RefusalLog:
    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._since_line: dict[str, int] = {}
        self._line_at: dict[str, float] = {}

    def refused(self, reason: str) -> None:
        """Count a refusal; write its line if this reason's last one is interval old."""
        now = self.clock()
        count = self._since_line.get(reason, 0) + 1
        last = self._line_at.get(reason)
        if last is not None and now - last < self.interval:
            self._since_line[reason] = count
            return
        if len(self._line_at) >= _MAX_REASONS and reason not in self._line_at:
            self._line_at.clear()
            self._since_line.clear()
        self._line_at[reason] = now
        self._since_line[reason] = 0
        log.warning(
            "answered tryLater: %s (%d request(s) since this reason's last line)", reason, count
        )
