"""Logs of what a responder refuses over and over: one line per reason at most every interval.

While a database is out, or certificates wait for their first signature, or the signer has
been down long enough for stored responses to pass their nextUpdate, every such request is
refused the same way. A line (or a traceback) per request, what this was before, buried the
one line an operator needs under thousands, let any client fill the disk, and cost more than
the answer; the count says how many requests each line stands for. The metrics count every one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("certstatus.responder")

_MAX_REASONS = 64  # reasons are fixed messages; a bound in case one carries data


class RefusalLog:
    def __init__(
        self,
        what: str,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """what: the start of each line ("answered tryLater")."""
        self.what = what
        self.interval = interval
        self.clock = clock
        self._since_line: dict[str, int] = {}
        self._line_at: dict[str, float] = {}

    def refused(self, reason: str) -> None:
        """Count a refusal; write its line if this reason's last one is interval old. Only a
        reason's first line is kept (a database error may span several)."""
        reason = (reason.strip().splitlines() or ["no reason given"])[0]
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
            "%s: %s (%d request(s) since this reason's last line)", self.what, reason, count
        )
