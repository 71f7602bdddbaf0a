"""R3/R4 schedule arithmetic with an injected clock: validity bounds, refresh deadlines, the
responder certificate's notAfter as a cap, and the backdate of F10."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certstatus.ocsp.schedule import (
    DAY,
    HOUR,
    ScheduleError,
    SchedulePolicy,
    latest_refresh,
    plan,
)

NOW = 1_800_000_000
FAR = NOW + 365 * DAY


def test_default_policy_keeps_r3_and_r4() -> None:
    policy = SchedulePolicy()
    assert policy.problems() == []
    v = plan(policy, NOW, FAR, spread=0.0)
    assert 8 * HOUR <= v.next_update - v.this_update < 10 * DAY  # R3
    assert v.refresh_at - v.this_update <= 4 * DAY  # R4: no later than 4 days after thisUpdate
    assert v.next_update - v.refresh_at >= 8 * HOUR  # R4: at least 8 h before nextUpdate


def test_this_update_is_backdated_f10() -> None:
    v = plan(SchedulePolicy(backdate=HOUR), NOW, FAR)
    assert v.this_update == NOW - HOUR


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        (SchedulePolicy(validity=7 * HOUR), "validity"),
        (SchedulePolicy(validity=10 * DAY + 1), "validity"),
        (SchedulePolicy(validity=7 * DAY, refresh_after=5 * DAY), "refresh_after"),  # > 4 days
        (SchedulePolicy(validity=DAY, refresh_after=20 * HOUR), "refresh_after"),  # < 8 h before
        (SchedulePolicy(validity=12 * HOUR, refresh_after=7 * HOUR, jitter=0), "refresh_after"),
        (SchedulePolicy(refresh_after=DAY, jitter=DAY), "jitter"),
    ],
)
def test_policies_breaking_r3_r4_are_refused(policy: SchedulePolicy, key: str) -> None:
    assert key in [k for k, _ in policy.problems()]


def test_short_interval_refreshes_before_half_r4() -> None:
    policy = SchedulePolicy(validity=12 * HOUR, refresh_after=5 * HOUR, jitter=HOUR, backdate=0)
    assert policy.problems() == []
    v = plan(policy, NOW, FAR, spread=0.0)
    assert v.refresh_at - v.this_update < 6 * HOUR


def test_next_update_never_passes_responder_not_after_r4() -> None:
    not_after = NOW + 2 * DAY
    v = plan(SchedulePolicy(), NOW, not_after)
    assert v.next_update == not_after
    # and the refresh moves earlier so R4 still holds for the shortened interval
    assert v.refresh_at <= v.this_update + latest_refresh(v.next_update - v.this_update)


def test_refuses_to_sign_when_responder_expires_within_8_hours_r3_r21() -> None:
    with pytest.raises(ScheduleError):
        plan(SchedulePolicy(backdate=0), NOW, NOW + 7 * HOUR)


@given(
    validity=st.integers(8 * HOUR, 10 * DAY - 1),
    fraction=st.floats(0.05, 1.0),
    spread=st.floats(0.0, 0.999),
    clock=st.integers(1_600_000_000, 2_000_000_000),
)
def test_every_valid_policy_plans_a_compliant_response(
    validity: int, fraction: float, spread: float, clock: int
) -> None:
    refresh = max(1, int(latest_refresh(validity) * fraction))
    policy = SchedulePolicy(validity, refresh, HOUR, refresh // 2)
    assert policy.problems() == []
    v = plan(policy, clock, clock + 30 * DAY, spread)
    interval = v.next_update - v.this_update
    assert 8 * HOUR <= interval <= 10 * DAY - 1
    assert v.this_update < v.refresh_at <= v.this_update + latest_refresh(interval)
    if interval < 16 * HOUR:
        assert v.refresh_at - v.this_update < interval / 2
    else:
        assert v.refresh_at - v.this_update <= 4 * DAY
        assert v.next_update - v.refresh_at >= 8 * HOUR
