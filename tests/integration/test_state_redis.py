"""State backends against a real Redis: the shared behaviour table runs on both backends.

Time is passed in (``now``), never read, so nothing here depends on how fast the machine is;
``HANG_GUARD_S`` only turns a hang into a failure, it measures nothing.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis
from redis.crc import key_slot

from policy_extproc.errors import StateError
from policy_extproc.state.base import Approval, BudgetSpec, LimitSpec, StateBackend
from policy_extproc.state.memory import MemoryState
from policy_extproc.state.redis import RedisState
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

T0 = 1_700_000_000.0
DAY_END = T0 + 86_400
HANG_GUARD_S = 30.0
ORG = "acme"

Pair = tuple[StateBackend, StateBackend]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """Two handles on one shared state: one MemoryState twice, or two clients of one Redis
    (a single server, or a Redis Cluster of three masters)."""
    if request.param == "memory":
        memory = MemoryState()
        yield memory, memory
        return
    redis_url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    # A generous bound: a busy test machine must not turn into a StateError here.
    a, b = RedisState.from_url(redis_url, timeout_s=5), RedisState.from_url(redis_url, timeout_s=5)
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
def state(replicas: Pair) -> StateBackend:
    return replicas[0]


def requests(limit: int, burst: int = 0, window_s: float = 60.0) -> LimitSpec:
    return LimitSpec("rl:user:alice:r1:requests", limit, window_s, burst)


def tokens(limit: int, cost: int) -> LimitSpec:
    return LimitSpec("rl:user:alice:r1:tokens", limit, 60.0, 0, cost, estimated=True)


def budget(key: str, limit: float, amount: float, enforce: bool = True) -> BudgetSpec:
    return BudgetSpec(key, limit, amount, DAY_END, enforce)


async def admitted_count(state: StateBackend, n: int, spec: LimitSpec, now: float) -> int:
    results = [await state.admit(ORG, f"q{now}-{i}", [spec], now=now) for i in range(n)]
    return sum(r.admitted for r in results)


async def spent(state: StateBackend, key: str, now: float = T0) -> float:
    """A budget's spending, read through a zero-cost notify admission (it changes nothing)."""
    probe = await state.admit(ORG, "probe", (), [budget(key, 1e9, 0.0, False)], now=now)
    await state.release(ORG, "probe", now=now)
    return probe.budgets[0].spent_before_usd


# -- GCRA rate limits ------------------------------------------------------------------


async def test_limit_plus_burst_pass_at_once_then_refusal_with_retry_after(
    state: StateBackend,
) -> None:
    spec = requests(10, burst=5)  # interval 6 s, capacity 15
    results = [await state.admit(ORG, f"r{i}", [spec], now=T0) for i in range(16)]
    assert [r.admitted for r in results] == [True] * 15 + [False]
    assert results[0].limits[0].remaining == 14
    assert results[14].limits[0].remaining == 0
    refused = results[15]
    assert refused.denied_by == spec.key
    assert refused.retry_after_s == pytest.approx(6.0)
    assert refused.tightest is not None and refused.tightest.reset_after_s == pytest.approx(90.0)
    # retry-after is honest: just before it still refused, at it admitted
    assert not (await state.admit(ORG, "early", [spec], now=T0 + 5.9)).admitted
    assert (await state.admit(ORG, "on-time", [spec], now=T0 + 6.0)).admitted


async def test_steady_rate_is_admitted_over_time(state: StateBackend) -> None:
    spec = requests(60)  # one per second
    assert await admitted_count(state, 60, spec, T0) == 60
    for second in range(1, 301):
        now = T0 + second
        assert (await state.admit(ORG, f"s{second}", [spec], now=now)).admitted
        assert not (await state.admit(ORG, f"x{second}", [spec], now=now)).admitted


async def test_no_double_burst_at_a_window_boundary(state: StateBackend) -> None:
    spec = requests(50)  # 50 per minute; a fixed window would admit 100 around t=60
    assert await admitted_count(state, 100, spec, T0 + 59.9) == 50
    assert await admitted_count(state, 100, spec, T0 + 60.1) == 0
    # refill is gradual: 50 per 60 s, so 30 s later 25 more
    assert await admitted_count(state, 100, spec, T0 + 90.1) == 25


async def test_a_refused_request_changes_no_limiter(state: StateBackend) -> None:
    loose, tight = requests(100), LimitSpec("rl:team:ml:r2:requests", 1, 60.0)
    assert (await state.admit(ORG, "a", [loose, tight], now=T0)).admitted
    refused = await state.admit(ORG, "b", [loose, tight], now=T0)
    assert refused.denied_by == tight.key
    assert refused.limits[0].remaining == 99  # as before the refused request
    assert (await state.admit(ORG, "c", [loose], now=T0)).limits[0].remaining == 98


async def test_peek_answers_as_admit_would_and_consumes_nothing(replicas: Pair) -> None:
    """A dry run's read: the same figures admit gives, read by the other replica, and the
    limiter and budget exactly as they were (admit still admits as many afterwards)."""
    a, b = replicas
    spec, spend = requests(3), budget("b:user:alice:r2:2023-11-14", 1.0, 0.4)
    assert (await a.admit(ORG, "first", [spec], [spend], now=T0)).admitted
    for _ in range(5):
        peeked = await b.peek(ORG, [spec], [spend], now=T0)
        assert peeked.admitted
        assert peeked.limits[0].remaining == 1
        assert (peeked.budgets[0].spent_before_usd, peeked.budgets[0].spent_after_usd) == (0.4, 0.8)
    assert (await a.admit(ORG, "second", [spec], [spend], now=T0)).admitted
    # Now the budget cannot hold another 0.4: peek says so, naming the budget, as admit does.
    peeked = await b.peek(ORG, [spec], [spend], now=T0)
    admitted = await a.admit(ORG, "third", [spec], [spend], now=T0)
    assert (peeked.admitted, peeked.denied_by) == (False, spend.key)
    assert (admitted.admitted, admitted.denied_by) == (False, spend.key)
    assert peeked.limits == admitted.limits and peeked.budgets == admitted.budgets


async def test_peek_sees_an_exhausted_limiter_with_its_wait(state: StateBackend) -> None:
    spec = requests(2)
    assert await admitted_count(state, 2, spec, T0) == 2
    peeked = await state.peek(ORG, [spec], now=T0)
    refused = await state.admit(ORG, "over", [spec], now=T0)
    assert not peeked.admitted
    assert peeked.denied_by == refused.denied_by == spec.key
    assert peeked.retry_after_s == pytest.approx(refused.retry_after_s)
    assert await admitted_count(state, 2, spec, T0 + 30.0) == 1  # the steady refill, unchanged


async def test_a_cost_above_capacity_never_fits(state: StateBackend) -> None:
    refused = await state.admit(ORG, "big", [tokens(1000, 5000)], now=T0)
    assert not refused.admitted
    assert math.isinf(refused.retry_after_s)


async def test_limits_are_per_org(state: StateBackend) -> None:
    spec = requests(1)
    assert (await state.admit("acme", "a", [spec], now=T0)).admitted
    assert (await state.admit("globex", "a", [spec], now=T0)).admitted
    assert not (await state.admit("acme", "b", [spec], now=T0)).admitted


async def test_200_concurrent_requests_against_50_admit_exactly_50(replicas: Pair) -> None:
    spec = requests(50)
    for r in replicas:  # connected, a Cluster's slots learnt: the 200 calls then overlap
        await r.admit(ORG, "warm", [LimitSpec("rl:user:warm:r1:requests", 1, 60.0, 0)], now=T0)
    calls = [replicas[i % 2].admit(ORG, f"c{i}", [spec], now=T0) for i in range(200)]
    results = await asyncio.wait_for(asyncio.gather(*calls), HANG_GUARD_S)
    assert sum(r.admitted for r in results) == 50


@pytest.mark.parametrize("where", ["redis_url", "cluster_url"])
async def test_more_calls_at_once_than_connections_wait_for_one(
    where: str, request: pytest.FixtureRequest
) -> None:
    # A Cluster's (and a Sentinel's) pool fails a call past its size at once (redis-py's
    # MaxConnectionsError): 100 calls on 4 connections failed closed, under load 200 on 64 did.
    state = RedisState.from_url(request.getfixturevalue(where), timeout_s=5, max_connections=4)
    spec = requests(50)
    try:
        assert (await state.admit(ORG, "first", [spec], now=T0)).admitted
        calls = [state.admit(ORG, f"w{i}", [spec], now=T0) for i in range(100)]
        results = await asyncio.wait_for(asyncio.gather(*calls), HANG_GUARD_S)
    finally:
        await state.close()
    assert sum(r.admitted for r in results) == 49


# -- budgets ---------------------------------------------------------------------------


async def test_budget_with_room_for_n_admits_n_of_3n_arriving_together(replicas: Pair) -> None:
    n = 10
    spec = budget("budget:team:ml:b1:day", 1.0, 0.1)  # 0.1 * 10 == 1.0 only in exact money
    calls = [replicas[i % 2].admit(ORG, f"b{i}", (), [spec], now=T0) for i in range(3 * n)]
    results = await asyncio.wait_for(asyncio.gather(*calls), HANG_GUARD_S)
    assert sum(r.admitted for r in results) == n
    assert {r.denied_by for r in results if not r.admitted} == {spec.key}
    assert await spent(replicas[1], spec.key) == pytest.approx(1.0)


async def test_all_or_none_a_request_that_fits_the_user_but_not_the_team(
    state: StateBackend,
) -> None:
    user = budget("budget:user:alice:b1:day", 10.0, 1.0)
    team = budget("budget:team:ml:b2:day", 1.5, 1.0)
    assert (await state.admit(ORG, "first", (), [user, team], now=T0)).admitted
    refused = await state.admit(ORG, "second", [requests(100)], [user, team], now=T0)
    assert refused.denied_by == team.key
    assert [(b.spent_before_usd, b.spent_after_usd) for b in refused.budgets] == [
        (1.0, 1.0),
        (1.0, 1.0),
    ]
    assert await spent(state, user.key) == 1.0 and await spent(state, team.key) == 1.0
    # the refused request consumed no request either: this is the first
    assert (await state.admit(ORG, "third", [requests(100)], now=T0)).limits[0].remaining == 99


async def test_a_spent_budget_refuses_even_a_zero_estimate(state: StateBackend) -> None:
    spec = budget("budget:user:alice:b1:day", 1.0, 1.0)
    assert (await state.admit(ORG, "a", (), [spec], now=T0)).admitted
    zero = budget("budget:user:alice:b1:day", 1.0, 0.0)
    assert (await state.admit(ORG, "b", (), [zero], now=T0)).denied_by == zero.key


async def test_notify_budget_admits_over_its_limit_and_reports_crossings(
    state: StateBackend,
) -> None:
    spec = budget("budget:org:acme:b3:day", 1.0, 0.45, enforce=False)
    first = await state.admit(ORG, "a", (), [spec], now=T0)
    assert first.budgets[0].crossed([0.5, 0.8, 1.0]) == ()
    second = await state.admit(ORG, "b", (), [spec], now=T0)
    assert second.budgets[0].crossed([0.5, 0.8, 1.0]) == (0.5, 0.8)
    third = await state.admit(ORG, "c", (), [spec], now=T0)
    assert third.admitted and third.budgets[0].crossed([0.5, 0.8, 1.0]) == (1.0,)
    assert third.budgets[0].spent_after_usd == pytest.approx(1.35)


async def test_a_key_named_twice_is_checked_against_itself(state: StateBackend) -> None:
    spec = budget("budget:user:alice:b1:day", 1.0, 0.6)
    refused = await state.admit(ORG, "a", (), [spec, spec], now=T0)
    assert refused.denied_by == spec.key
    assert await spent(state, spec.key) == 0.0


# -- reservations ----------------------------------------------------------------------


async def test_reconcile_replaces_the_reservation_once(state: StateBackend) -> None:
    user, team = (
        budget("budget:user:alice:b1:day", 10, 1.0),
        budget("budget:team:ml:b2:day", 10, 1.0),
    )
    await state.admit(ORG, "r", (), [user, team], now=T0)
    actual = {user.key: 0.25, team.key: 0.25}
    assert await state.reconcile(ORG, "r", actual_usd=actual, actual_tokens={}, now=T0 + 1)
    assert await spent(state, user.key) == 0.25 and await spent(state, team.key) == 0.25
    assert not await state.reconcile(ORG, "r", actual_usd=actual, actual_tokens={}, now=T0 + 2)
    assert not await state.release(ORG, "r", now=T0 + 2)
    assert await spent(state, user.key) == 0.25


async def test_reconcile_charges_an_unnamed_budget_at_its_estimate(state: StateBackend) -> None:
    user = budget("budget:user:alice:b1:day", 10, 1.0)
    await state.admit(ORG, "r", (), [user], now=T0)
    assert await state.reconcile(ORG, "r", actual_usd={}, actual_tokens={}, now=T0)
    assert await spent(state, user.key) == 1.0


async def test_release_gives_the_reservation_back_once(state: StateBackend) -> None:
    user = budget("budget:user:alice:b1:day", 10, 3.0)
    await state.admit(ORG, "a", (), [user], now=T0)
    await state.admit(ORG, "b", (), [user], now=T0)
    assert await state.release(ORG, "a", now=T0)
    assert not await state.release(ORG, "a", now=T0)
    assert not await state.reconcile(ORG, "a", actual_usd={user.key: 9}, actual_tokens={}, now=T0)
    assert await spent(state, user.key) == 3.0


async def test_an_expired_reservation_is_released_by_the_sweep(state: StateBackend) -> None:
    user = budget("budget:user:alice:b1:day", 10, 4.0)
    await state.admit(ORG, "lost", (), [user], now=T0, reservation_ttl_s=30)
    await state.admit(ORG, "live", (), [user], now=T0 + 20, reservation_ttl_s=30)
    assert await state.expire_reservations(now=T0 + 31) == 1
    assert await state.expire_reservations(now=T0 + 31) == 0
    assert await spent(state, user.key, now=T0 + 31) == 4.0
    # the response came after all: it is charged in full, once
    late = {user.key: 2.5}
    assert await state.reconcile(ORG, "lost", actual_usd=late, actual_tokens={}, now=T0 + 40)
    assert not await state.reconcile(ORG, "lost", actual_usd=late, actual_tokens={}, now=T0 + 41)
    assert await spent(state, user.key, now=T0 + 41) == 6.5


async def test_admit_releases_expired_reservations_of_its_org_by_itself(
    state: StateBackend,
) -> None:
    user = budget("budget:user:alice:b1:day", 1.0, 1.0)
    assert (await state.admit(ORG, "lost", (), [user], now=T0, reservation_ttl_s=30)).admitted
    assert not (await state.admit(ORG, "a", (), [user], now=T0 + 29)).admitted
    assert (await state.admit(ORG, "b", (), [user], now=T0 + 31)).admitted


async def test_a_reused_request_id_adds_to_its_reservation(state: StateBackend) -> None:
    user = budget("budget:user:alice:b1:day", 10, 1.0)
    await state.admit(ORG, "same", (), [user], now=T0)
    await state.admit(ORG, "same", (), [user], now=T0)
    assert await state.release(ORG, "same", now=T0)
    assert await spent(state, user.key) == 0.0


# -- token limits ----------------------------------------------------------------------


async def test_real_token_usage_makes_the_next_request_refused_at_once(
    state: StateBackend,
) -> None:
    assert (await state.admit(ORG, "a", [tokens(1000, 100)], now=T0)).admitted
    assert (await state.admit(ORG, "b", [tokens(1000, 100)], now=T0)).limits[0].remaining == 800
    key = tokens(1000, 0).key
    assert await state.reconcile(ORG, "a", actual_usd={}, actual_tokens={key: 900}, now=T0 + 1)
    refused = await state.admit(ORG, "c", [tokens(1000, 100)], now=T0 + 1)
    assert refused.denied_by == key
    # fewer tokens than estimated give the difference back
    assert await state.reconcile(ORG, "b", actual_usd={}, actual_tokens={key: 0}, now=T0 + 1)
    assert (await state.admit(ORG, "d", [tokens(1000, 100)], now=T0 + 1)).admitted


async def test_release_gives_estimated_tokens_back(state: StateBackend) -> None:
    await state.admit(ORG, "a", [tokens(1000, 600)], now=T0)
    assert not (await state.admit(ORG, "b", [tokens(1000, 600)], now=T0)).admitted
    assert await state.release(ORG, "a", now=T0)
    assert (await state.admit(ORG, "c", [tokens(1000, 600)], now=T0)).admitted


# -- circuit breakers ------------------------------------------------------------------


async def test_breaker_cycle_is_shared_by_replicas(replicas: Pair) -> None:
    a, b = replicas

    async def record(backend: StateBackend, ok: bool, at: float) -> str:
        state = await backend.breaker_record(
            "openai", ok, window_s=30, failure_threshold=3, cooldown_s=60, now=T0 + at
        )
        return state.status

    assert await record(a, False, 0) == "closed"
    assert await record(b, False, 1) == "closed"
    assert await record(a, False, 40) == "closed"  # the first two fell out of the window
    assert await record(b, False, 41) == "closed"
    assert await record(a, False, 42) == "open"
    state = await b.breaker_state("openai", cooldown_s=60, now=T0 + 50)
    assert (state.status, state.retry_at) == ("open", T0 + 102)
    assert await record(b, True, 60) == "open"  # a straggler's success changes nothing
    assert (await a.breaker_state("openai", cooldown_s=60, now=T0 + 102)).status == "half_open"
    assert await record(b, False, 103) == "open"  # the probe failed: a new cooldown
    assert (await a.breaker_state("openai", cooldown_s=60, now=T0 + 150)).status == "open"
    assert await record(a, True, 163) == "closed"
    assert (await b.breaker_state("openai", cooldown_s=60, now=T0 + 164)).failures == 0
    assert (await b.breaker_state("anthropic", cooldown_s=60, now=T0)).status == "closed"


async def test_breaker_with_a_failure_ratio_opens_on_the_share_not_the_count(
    replicas: Pair,
) -> None:
    a, b = replicas
    spec = {"window_s": 30, "failure_threshold": 3, "cooldown_s": 60, "failure_ratio": 0.5}

    async def record(backend: StateBackend, ok: bool, at: float) -> str:
        state = await backend.breaker_record("openai", ok, **spec, min_requests=6, now=T0 + at)
        return state.status

    # Busy and mostly fine: 3 failures (the count threshold) are no reason to open here.
    for i in range(6):
        assert await record(a if i % 2 else b, True, i) == "closed"
    for i in range(3):
        assert await record(b, False, 6 + i) == "closed"  # 3 of 9 failed
    assert await record(a, False, 10) == "closed"  # 4 of 10
    assert await record(b, False, 11) == "closed"  # 5 of 11
    assert await record(a, False, 12) == "open"  # 6 of 12: half
    assert (await b.breaker_state("openai", cooldown_s=60, now=T0 + 13)).status == "open"
    # After the cooldown, a successful probe closes it and forgets the old outcomes.
    assert await record(b, True, 73) == "closed"
    # Too few requests in the window to judge: 2 failures out of 2 are not a ratio.
    assert await record(a, False, 74) == "closed"
    assert await record(b, False, 75) == "closed"
    assert await record(a, True, 120) == "closed"  # both failures left the window


# -- approvals -------------------------------------------------------------------------


def approval(approval_id: str = "ap1", org: str = ORG) -> Approval:
    return Approval(approval_id, org, "alice", "fp-1", T0, T0 + 3600, details={"model": "o1"})


async def test_approval_is_decided_and_consumed_once(replicas: Pair) -> None:
    a, b = replicas
    await a.approval_put(approval(), now=T0)
    got = await b.approval_get("ap1", now=T0 + 1)
    assert got == approval()
    assert not await b.approval_consume("ap1", "fp-1", "alice", now=T0 + 2)  # still pending
    decided = await b.approval_decide("ap1", True, "bob", "ok for the demo", now=T0 + 3)
    assert decided is not None
    assert (decided.status, decided.approver, decided.reason) == (
        "approved",
        "bob",
        "ok for the demo",
    )
    again = await a.approval_decide("ap1", False, "eve", "no", now=T0 + 4)
    assert again is not None and again.status == "approved"  # a decision is final
    assert not await a.approval_consume("ap1", "fp-2", "alice", now=T0 + 5)
    assert not await a.approval_consume("ap1", "fp-1", "mallory", now=T0 + 5)
    results = await asyncio.gather(
        *(r.approval_consume("ap1", "fp-1", "alice", now=T0 + 6) for r in (a, b, a, b))
    )
    assert sorted(results) == [False, False, False, True]
    consumed = await b.approval_get("ap1", now=T0 + 7)
    assert consumed is not None and consumed.status == "consumed"


async def test_a_denied_or_expired_approval_cannot_be_used(state: StateBackend) -> None:
    await state.approval_put(approval("denied"), now=T0)
    await state.approval_decide("denied", False, "bob", "too expensive", now=T0)
    assert not await state.approval_consume("denied", "fp-1", "alice", now=T0)
    await state.approval_put(approval("late"), now=T0)
    await state.approval_decide("late", True, "bob", now=T0)
    assert not await state.approval_consume("late", "fp-1", "alice", now=T0 + 3600)
    assert await state.approval_get("late", now=T0 + 3600) is None
    assert await state.approval_decide("late", True, "bob", now=T0 + 3600) is None
    assert await state.approval_get("unknown", now=T0) is None


async def test_approvals_are_listed_by_org(state: StateBackend) -> None:
    await state.approval_put(approval("a1"), now=T0)
    await state.approval_put(approval("g1", org="globex"), now=T0)
    assert [a.id for a in await state.approval_list(now=T0)] == ["a1", "g1"]
    assert [a.id for a in await state.approval_list("globex", now=T0)] == ["g1"]
    assert await state.approval_list(now=T0 + 3600) == []


# -- Redis only ------------------------------------------------------------------------


async def test_one_round_trip_per_admit_and_every_key_in_the_org_slot_expires(
    redis_url: str,
) -> None:
    state = RedisState.from_url(redis_url, timeout_s=5)
    limits = [requests(10), tokens(10_000, 500)]
    budgets = [budget(f"budget:{who}:b:day", 10, 0.5) for who in ("user:a", "team:t", "org:o")]
    await state.admit(ORG, "warm", limits, budgets)  # loads the scripts
    await state.reconcile(ORG, "warm", actual_usd={}, actual_tokens={})
    with (
        redis.Redis.from_url(redis_url, decode_responses=True) as probe,
        redis.Redis.from_url(redis_url, decode_responses=True) as watcher,
    ):
        probe.ping()  # connect (and handshake) before monitoring, so only the state talks
        # MONITOR shows every command a client sent, and those a script ran as "lua"
        with watcher.monitor() as monitor:
            for i in range(5):
                await state.admit(ORG, f"r{i}", limits, budgets)
            await state.reconcile(ORG, "r0", actual_usd={}, actual_tokens={})
            probe.echo("end of test")
            sent = []
            while (command := monitor.next_command())["command"] != "ECHO end of test":
                if command["client_type"] != "lua":
                    sent.append(command["command"].split()[0])
        assert sent == ["EVALSHA"] * 6
        keys = probe.keys("*")
        assert keys and all(k.startswith("pe:{acme}:") for k in keys)
        assert len({key_slot(k.encode()) for k in keys}) == 1
        assert all(probe.pttl(k) > 0 for k in keys)
    await state.close()


CHILD = """
import asyncio, sys
from policy_extproc.state.base import LimitSpec
from policy_extproc.state.redis import RedisState

async def main(url, name):
    state = RedisState.from_url(url, timeout_s=5)
    await state.ping()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    spec = LimitSpec("rl:user:alice:r1:requests", 50, 60.0)
    calls = [state.admit("acme", f"{name}-{i}", [spec], now=1.7e9) for i in range(100)]
    print(sum(r.admitted for r in await asyncio.gather(*calls)), flush=True)
    await state.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_two_processes_share_the_limit(redis_url: str) -> None:
    async def replica(name: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, redis_url, name,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
        return proc

    procs = await asyncio.wait_for(asyncio.gather(replica("p1"), replica("p2")), HANG_GUARD_S)
    for proc in procs:  # both are connected and waiting: go
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    outputs = await asyncio.wait_for(
        asyncio.gather(*(p.communicate() for p in procs)), HANG_GUARD_S
    )
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(int(out) for out, _ in outputs) == 50


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a condition that the running load makes true (a hang guard, not a timer)."""
    async with asyncio.timeout(HANG_GUARD_S):
        while not condition():
            await asyncio.sleep(0.01)


async def test_redis_killed_mid_load_then_restarted(own_redis: RedisServer) -> None:
    state = RedisState.from_url(own_redis.url, timeout_s=1)
    outcomes: list[str] = []
    stop = asyncio.Event()

    async def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            call = state.admit(ORG, f"w{w}-{i}", [requests(10**6)], [budget("b", 1e6, 0.01)])
            try:
                await asyncio.wait_for(call, HANG_GUARD_S)
                outcomes.append("ok")
            except StateError:  # any other exception type fails the test
                outcomes.append("error")
            await asyncio.sleep(0)

    workers = [asyncio.create_task(worker(w)) for w in range(8)]
    await until(lambda: outcomes.count("ok") >= 50)
    await asyncio.to_thread(own_redis.kill)
    await until(lambda: outcomes.count("error") >= 50)
    await asyncio.to_thread(own_redis.start)  # empty, same port: scripts must be reloaded
    restarted = len(outcomes)
    await until(lambda: outcomes[restarted:].count("ok") >= 50)
    stop.set()
    await asyncio.gather(*workers)
    assert "ok" in outcomes[-8:]  # load runs normally again
    await state.close()


async def test_a_paused_redis_times_out_then_recovers(own_redis: RedisServer) -> None:
    state = RedisState.from_url(own_redis.url, timeout_s=0.2)
    await state.ping()
    own_redis.pause()
    try:
        with pytest.raises(StateError, match="no answer"):
            await asyncio.wait_for(state.admit(ORG, "a", [requests(5)]), HANG_GUARD_S)
    finally:
        own_redis.resume()
    assert (await state.admit(ORG, "b", [requests(5)])).admitted
    await state.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.admit(ORG, "a", [requests(5)]),
        lambda s: s.reconcile(ORG, "a", actual_usd={}, actual_tokens={}),
        lambda s: s.release(ORG, "a"),
        lambda s: s.breaker_state("openai", cooldown_s=1),
        lambda s: s.approval_get("x"),
        lambda s: s.ping(),
    ],
)
async def test_no_redis_raises_state_error(call: Callable[[RedisState], Awaitable[object]]) -> None:
    state = RedisState.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    with pytest.raises(StateError):
        await asyncio.wait_for(call(state), HANG_GUARD_S)
    await state.close()


# -- pending responses (serve --response-accounting observe) ------------------------------------


async def test_a_pending_response_is_read_by_any_replica_and_taken_once(replicas: Pair) -> None:
    a, b = replicas
    await a.pending_put(ORG, "r-obs", '{"v": 1}', ttl_s=60, now=T0)
    assert await b.pending_get(ORG, "r-obs", now=T0 + 1) == '{"v": 1}'
    assert await b.pending_get("globex", "r-obs", now=T0 + 1) is None  # another org's
    assert await b.pending_take(ORG, "r-obs", now=T0 + 1) == '{"v": 1}'
    assert await a.pending_take(ORG, "r-obs", now=T0 + 2) is None
    assert await a.pending_get(ORG, "r-obs", now=T0 + 2) is None


async def test_of_two_concurrent_takers_one_gets_the_pending_response(replicas: Pair) -> None:
    a, b = replicas
    for i in range(20):
        await a.pending_put(ORG, f"race-{i}", str(i), ttl_s=60, now=T0)
        got = await asyncio.gather(
            a.pending_take(ORG, f"race-{i}", now=T0), b.pending_take(ORG, f"race-{i}", now=T0)
        )
        assert sorted(got, key=str) == [str(i), None]


async def test_a_pending_response_expires_after_its_ttl() -> None:
    memory = MemoryState()
    await memory.pending_put(ORG, "r-ttl", "x", ttl_s=10, now=T0)
    assert await memory.pending_get(ORG, "r-ttl", now=T0 + 9) == "x"
    assert await memory.pending_take(ORG, "r-ttl", now=T0 + 10) is None


async def test_a_pending_response_in_redis_carries_its_ttl(redis_url: str) -> None:
    state = RedisState.from_url(redis_url, timeout_s=5)
    raw = redis.Redis.from_url(redis_url)
    try:
        await state.pending_put(ORG, "r-pttl", "x", ttl_s=30)
        ttl_ms = raw.pttl("pe:{acme}:pend:r-pttl")
        assert 0 < ttl_ms <= 30_000  # expires by itself: a lost observe stream leaks nothing
    finally:
        raw.close()
        await state.close()
