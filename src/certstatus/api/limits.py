"""Per-client rate limits: a token bucket per caller, refilled at [api] rate up to burst.

In memory, in the one API process (server.py runs one worker: writes are serialised by the
database anyway, and one process keeps the limit exact). A refused request learns how long
to wait (Retry-After)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, caller: str) -> int | None:
        """None when the request may go ahead; else the seconds to wait (at least 1)."""
        now = self.clock()
        tokens, at = self._buckets.get(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            return None
        self._buckets[caller] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))
