"""Certificate status and the only transitions it may make: good -> revoked, a revoked
certificate's reason raised to keyCompromise, and a keyCompromise time moved earlier. Never back
to good (nothing is lost)."""

from __future__ import annotations

from dataclasses import dataclass

from certstatus.ocsp.reasons import KEY_COMPROMISE, NAMES


class RevocationRefused(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One line of a CRL: what the store reads and the CRL builder encodes."""

    serial: int
    revoked_at: int
    reason: int


@dataclass(frozen=True, slots=True)
class RevocationState:
    revoked: bool
    time: int | None = None
    reason: int | None = None


def revocation_transition(
    current: RevocationState, time: int, reason: int, time_given: bool
) -> RevocationState:
    """The state after a revocation request, or RevocationRefused if the request would regress it.

    A second revocation may only change the reason to keyCompromise (BR 4.9.1.1 lets a CA learn of
    a key compromise later), or, for keyCompromise, move the time earlier; its time changes only
    if the operator gave one, and never moves later.
    """
    if not current.revoked:
        return RevocationState(True, time, reason)
    if reason == current.reason and not time_given:
        raise RevocationRefused(
            f"already revoked with reason {NAMES.get(current.reason or 0, current.reason)}"
        )
    if reason != KEY_COMPROMISE:
        raise RevocationRefused(
            f"already revoked ({NAMES.get(current.reason or 0, current.reason)}); "
            "a revoked certificate's reason may only be changed to keyCompromise"
        )
    if current.reason == KEY_COMPROMISE and (current.time is None or time >= current.time):
        # keyCompromise again: only to move the time earlier, when the compromise is found to
        # have begun before the time first recorded
        raise RevocationRefused(
            "already revoked with reason keyCompromise at that time or earlier; "
            "--time can only move it earlier"
        )
    new_time = current.time if current.time is not None else time
    if time_given:
        new_time = min(time, new_time)
    return RevocationState(True, new_time, reason)
