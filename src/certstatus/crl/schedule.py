"""When a CRL is (re)built (R16): on a period, and soon after a revocation (debounced), never
letting a revocation wait more than 24 hours or a CRL outlive its nextUpdate."""

from __future__ import annotations

from dataclasses import dataclass

HOUR = 3600
DAY = 24 * HOUR
MAX_VALIDITY = 10 * DAY  # R16
MAX_PERIOD = 7 * DAY  # R16
MAX_DEBOUNCE = DAY  # R16: within 24 hours of any revocation


@dataclass(frozen=True, slots=True)
class CrlPolicy:
    """period: planned reissue interval. validity: nextUpdate - thisUpdate. debounce: how long
    after a revocation the CRL is reissued (collecting others). jitter: spread subtracted from
    the period so partitions do not all expire together."""

    period: int = DAY
    validity: int = 7 * DAY
    debounce: int = 5 * 60
    jitter: int = HOUR

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not 0 < self.validity <= MAX_VALIDITY:
            found.append(("validity", "must be more than 0 and at most 10d (R16)"))
        if not 0 < self.period <= MAX_PERIOD:
            found.append(("period", "must be more than 0 and at most 7d (R16)"))
        elif self.period >= self.validity:
            found.append(
                (
                    "period",
                    "must be shorter than validity, or CRLs expire before "
                    "their successor is published",
                )
            )
        if not 0 <= self.debounce <= MAX_DEBOUNCE:
            found.append(("debounce", "must be between 0 and 24h (R16)"))
        if not 0 <= self.jitter < self.period:
            found.append(("jitter", "must be at least 0 and less than period"))
        return found

    def next_build_at(self, this_update: int, spread: float) -> int:
        return this_update + self.period - int(spread * self.jitter)

    def r18_cutoff(self, this_update: int) -> int:
        """Entries whose certificate expired before this stay off the CRL: R18 keeps an entry
        until after notAfter plus one more scheduled CRL, i.e. for one period past notAfter."""
        return this_update - self.period


def due_reason(
    now: int,
    policy: CrlPolicy,
    published_next_build_at: int | None,
    published_next_update: int | None,
    dirty_since: int | None,
) -> str | None:
    """Why a partition's CRL must be built now, or None if it need not be."""
    if published_next_build_at is None or published_next_update is None:
        return "none published"
    if dirty_since is not None and now >= dirty_since + policy.debounce:
        return "revocation"
    if now >= published_next_build_at:
        return "scheduled"
    if now >= published_next_update - HOUR:
        return "expiring"
    return None
