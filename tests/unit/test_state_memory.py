"""The in-memory state backend, the state value types and calendar budget periods.

The behaviours both backends share (GCRA, budgets, reservations, breakers, approvals) run on
both in tests/integration/test_state_redis.py; these are the pure and memory-only parts.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from policy_extproc.state.base import (
    Admission,
    Approval,
    BudgetSpec,
    BudgetState,
    LimitSpec,
    LimitState,
)
from policy_extproc.state.budget_period import COUNTER_SLACK_S, budget_period
from policy_extproc.state.memory import PURGE_EVERY_S, MemoryState

T0 = 1_700_000_000.0
ORG = "acme"


def ts(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


# -- value types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [(0, 60.0, 0, 1), (10, 0.0, 0, 1), (10, 60.0, -1, 1), (10, 60.0, 0, -1)],
)
def test_limit_spec_refuses_nonsense(args: tuple[int, float, int, int]) -> None:
    with pytest.raises(ValueError):
        LimitSpec("k", *args)


def test_budget_spec_refuses_negative_money() -> None:
    with pytest.raises(ValueError):
        BudgetSpec("k", 1.0, -0.1, T0)


@pytest.mark.parametrize(
    ("before", "after", "crossed"),
    [
        (0.0, 0.4, ()),
        (0.4, 0.5, (0.5,)),  # reaching a threshold crosses it
        (0.5, 0.6, ()),  # starting on it does not cross it again
        (0.4, 1.2, (0.5, 0.8, 1.0)),
        (0.7, 0.7, ()),  # a refused request crosses nothing
    ],
)
def test_budget_state_reports_thresholds_crossed(
    before: float, after: float, crossed: tuple[float, ...]
) -> None:
    state = BudgetState("k", 1.0, before, after, True)
    assert state.crossed([0.5, 0.8, 1.0]) == crossed


def test_budget_state_fraction_of_a_zero_limit() -> None:
    assert BudgetState("k", 0.0, 0.0, 0.0, True).fraction == 0.0
    assert math.isinf(BudgetState("k", 0.0, 0.0, 0.1, False).fraction)


def test_tightest_limit_is_the_refusing_one_else_the_fewest_left() -> None:
    a, b = LimitState("a", 10, 3, 5.0, 0.0), LimitState("b", 100, 2, 50.0, 0.0)
    assert Admission(True, None, 0.0, (a, b), ()).tightest == b
    assert Admission(False, "a", 1.0, (a, b), ()).tightest == a
    assert Admission(True, None, 0.0, (), ()).tightest is None


# -- budget periods --------------------------------------------------------------------


def test_day_period_in_utc() -> None:
    period = budget_period("day", ts("2026-11-24T13:45:00"))
    assert period.label == "2026-11-24"
    assert (period.start, period.end) == (ts("2026-11-24T00:00:00"), ts("2026-11-25T00:00:00"))
    assert period.expires_at == period.end + COUNTER_SLACK_S


def test_day_period_follows_the_configured_zone() -> None:
    # 03:00 UTC on the 24th is still the 23rd in New York
    period = budget_period("day", ts("2026-11-24T03:00:00"), "America/New_York")
    assert period.label == "2026-11-23"
    assert period.start == ts("2026-11-23T00:00:00", "America/New_York")


@pytest.mark.parametrize(("day", "hours"), [("2026-03-08", 23), ("2026-11-01", 25)])
def test_a_dst_day_is_as_long_as_the_calendar_says(day: str, hours: int) -> None:
    period = budget_period("day", ts(f"{day}T12:00:00", "America/New_York"), "America/New_York")
    assert period.end - period.start == hours * 3600


def test_a_day_whose_midnight_falls_in_a_dst_gap_starts_at_its_first_instant() -> None:
    # Santiago skipped 00:00-01:00 on 2022-09-11: the day begins at 01:00 local
    period = budget_period("day", ts("2022-09-11T12:00:00", "America/Santiago"), "America/Santiago")
    assert period.label == "2022-09-11"
    assert period.start == ts("2022-09-11T04:00:00")  # 00:00 at -04, the offset before the gap
    assert period.end - period.start == 23 * 3600


@pytest.mark.parametrize(
    ("now", "label", "start", "end"),
    [
        ("2026-11-24T13:00:00", "2026-11", "2026-11-01", "2026-12-01"),
        ("2026-12-31T23:59:59", "2026-12", "2026-12-01", "2027-01-01"),
        ("2028-02-29T00:00:00", "2028-02", "2028-02-01", "2028-03-01"),
    ],
)
def test_month_period(now: str, label: str, start: str, end: str) -> None:
    period = budget_period("month", ts(now, "Europe/Berlin"), "Europe/Berlin")
    assert period.label == label
    assert period.start == ts(f"{start}T00:00:00", "Europe/Berlin")
    assert period.end == ts(f"{end}T00:00:00", "Europe/Berlin")


def test_unknown_zone_or_period_is_an_error() -> None:
    with pytest.raises(ValueError, match="time zone"):
        budget_period("day", T0, "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="period"):
        budget_period("week", T0)  # type: ignore[arg-type]


# -- memory backend --------------------------------------------------------------------


async def test_concurrent_admits_in_one_loop_are_atomic() -> None:
    state = MemoryState()
    spec = LimitSpec("rl:user:alice:r1:requests", 50, 60.0)
    budget = BudgetSpec("budget:user:alice:b1:day", 5.0, 0.25, T0 + 86400)
    results = await asyncio.gather(
        *(state.admit(ORG, f"r{i}", [spec], [budget], now=T0) for i in range(200))
    )
    assert sum(r.admitted for r in results) == 20  # the budget is the tighter one


async def test_memory_is_bounded_once_time_passes() -> None:
    state = MemoryState()
    budget = BudgetSpec("budget:user:alice:b1:day", 1e6, 0.01, T0 + 86400)
    for i in range(1000):
        spec = LimitSpec(f"rl:user:u{i}:r1:tokens", 1000, 60.0, 0, 10, estimated=True)
        await state.admit(ORG, f"r{i}", [spec], [budget], now=T0, reservation_ttl_s=300)
        await state.breaker_record(
            f"p{i}", False, window_s=30, failure_threshold=5, cooldown_s=60, now=T0
        )
        await state.approval_put(Approval(f"a{i}", ORG, "u", "fp", T0, T0 + 3600), now=T0)
    assert state.stored() > 3000
    # long after every window, ttl and period, an admit releases the reservations (they
    # stay an hour for late responses), and the next one after that purges everything
    later = T0 + 30 * 86400
    await state.admit(ORG, "late", now=later)
    assert state.stored() == 1000
    await state.admit(ORG, "later", [LimitSpec("rl:x", 1, 60.0)], now=later + 7200)
    assert state.stored() == 1


async def test_settled_reservations_leave_the_expiry_queue_when_settled() -> None:
    state = MemoryState()
    budget = BudgetSpec("budget:user:alice:b1:day", 1e6, 0.01, T0 + 86400)
    open_ones = 10
    for i in range(5000):
        now = T0 + i * 0.01  # 100 req/s, all within the 600 s ttl
        await state.admit(ORG, f"r{i}", (), [budget], now=now, reservation_ttl_s=600)
        if i < open_ones:
            continue  # these never get an answer
        if i % 2:
            actual = {budget.key: 0.01}
            await state.reconcile(ORG, f"r{i}", actual_usd=actual, actual_tokens={}, now=now)
        else:
            await state.release(ORG, f"r{i}", now=now)
        assert state.scheduled() == open_ones  # nothing settled waits for its ttl
    # the open ones still expire at their ttl and give their budget back
    assert await state.expire_reservations(now=T0 + 700) == open_ones
    assert state.scheduled() == 0


async def test_one_user_per_request_keeps_a_minute_of_users() -> None:
    # The soak's traffic (benchmarks/soak.py): a new user on every request at 100 req/s, a
    # limiter each, a budget per team, every reservation settled. What is held is what the
    # last purge interval brought, not everything since the start.
    state = MemoryState()
    rate, minutes = 100, 5
    most = 0
    for i in range(rate * 60 * minutes):
        now = T0 + i / rate
        spec = LimitSpec(f"rl:user:u{i}:r1:tokens", 100_000_000, 60.0, 0, 20, estimated=True)
        budget = BudgetSpec(f"budget:team:t{i % 50}:b1:day", 1e9, 0.001, T0 + 86400)
        await state.admit(ORG, f"r{i}", [spec], [budget], now=now, reservation_ttl_s=600)
        await state.reconcile(
            ORG, f"r{i}", actual_usd={budget.key: 0.0005}, actual_tokens={spec.key: 17}, now=now
        )
        assert state.scheduled() == 0
        most = max(most, state.stored())
    assert most <= rate * PURGE_EVERY_S + 50 + 1


async def test_a_clock_stepping_back_delays_an_expiry_by_at_most_the_step() -> None:
    state = MemoryState()
    budget = BudgetSpec("budget:user:alice:b1:day", 1e6, 0.01, T0 + 86400)
    await state.admit(ORG, "first", (), [budget], now=T0 + 10, reservation_ttl_s=600)
    await state.admit(ORG, "after-the-step", (), [budget], now=T0, reservation_ttl_s=600)
    assert await state.expire_reservations(now=T0 + 605) == 0  # waits behind "first"
    assert await state.expire_reservations(now=T0 + 610) == 2
    assert state.scheduled() == 0
