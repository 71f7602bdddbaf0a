"""When a response is valid and when it must be replaced (R3, R4), as pure arithmetic on seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

HOUR = 3600
DAY = 24 * HOUR
MIN_VALIDITY = 8 * HOUR  # R3
MAX_VALIDITY = 10 * DAY - 1  # R3: thisUpdate..nextUpdate inclusive must not exceed 10 days
SHORT_INTERVAL = 16 * HOUR  # R4: below this, refresh before half the interval
MAX_REFRESH_AGE = 4 * DAY  # R4
REFRESH_BEFORE_EXPIRY = 8 * HOUR  # R4


class ScheduleError(ValueError):
    pass


def latest_refresh(validity: int) -> int:
    """The latest offset from thisUpdate at which R4 still allows the next response to appear."""
    if validity < SHORT_INTERVAL:
        return validity // 2 - 1
    return min(MAX_REFRESH_AGE, validity - REFRESH_BEFORE_EXPIRY)


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """How long responses live and when they are re-signed.

    validity: nextUpdate - thisUpdate. refresh_after: the planned re-signing offset from thisUpdate.
    backdate: how far thisUpdate lies before signing, so a client whose clock runs a little behind
    still accepts a fresh response (F10). jitter: the spread subtracted from refresh_after so that
    certificates ingested together are not all re-signed in the same second (the signer draws
    it once per batch: signer/loop.py).
    """

    validity: int = 7 * DAY
    refresh_after: int = 3 * DAY
    backdate: int = HOUR
    jitter: int = 6 * HOUR

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) pairs for every rule the policy breaks; empty when it keeps R3 and R4."""
        found: list[tuple[str, str]] = []
        if not MIN_VALIDITY <= self.validity <= MAX_VALIDITY:
            found.append(("validity", "must be between 8h and 10d minus one second (R3)"))
            return found
        limit = latest_refresh(self.validity)
        if not 0 < self.refresh_after <= limit:
            found.append(
                (
                    "refresh_after",
                    f"must be more than 0 and at most {limit}s for a validity of "
                    f"{self.validity}s (R4)",
                )
            )
        if not 0 <= self.jitter < self.refresh_after:
            found.append(("jitter", "must be at least 0 and less than refresh_after"))
        if not 0 <= self.backdate <= HOUR * 24:
            found.append(("backdate", "must be between 0 and 24h"))
        return found


class Validity(NamedTuple):
    """A NamedTuple: cheap to build (a frozen dataclass cost 3x as much, measured in issue 15
    when the signer made one per certificate; it now makes one per issuer and batch)."""

    this_update: int
    next_update: int
    refresh_at: int


@dataclass(frozen=True, slots=True)
class Window:
    """What every response signed at one instant shares: its thisUpdate, its nextUpdate and
    the latest refresh R4 allows. The signer computes it, and `validity` from it, once per
    batch and issuer, with the jitter's share drawn once per batch."""

    policy: SchedulePolicy
    this_update: int
    next_update: int
    refresh_limit: int

    @classmethod
    def at(cls, policy: SchedulePolicy, now: int, responder_not_after: int) -> Window:
        """nextUpdate never passes the responder certificate's notAfter (R4); if that leaves
        less than the R3 minimum nothing is signed at all (ScheduleError): a short-lived
        response would break R3 and the operator must renew the responder certificate (R21)."""
        this_update = now - policy.backdate
        next_update = min(this_update + policy.validity, responder_not_after)
        validity = next_update - this_update
        if validity < MIN_VALIDITY:
            raise ScheduleError(
                "the responder certificate expires too soon to sign a response valid for "
                "8 hours (R3, R4)"
            )
        return cls(policy, this_update, next_update, latest_refresh(validity))

    def validity(self, spread: float = 0.0) -> Validity:
        """The validity of one response; spread in [0, 1) picks the jitter."""
        policy = self.policy
        refresh = min(policy.refresh_after - int(spread * policy.jitter), self.refresh_limit)
        return Validity(self.this_update, self.next_update, self.this_update + max(refresh, 1))


def plan(
    policy: SchedulePolicy, now: int, responder_not_after: int, spread: float = 0.0
) -> Validity:
    """The validity of a response signed at `now`; spread in [0, 1) picks the jitter
    (Window.at and Window.validity in one call; ScheduleError as Window.at)."""
    return Window.at(policy, now, responder_not_after).validity(spread)
