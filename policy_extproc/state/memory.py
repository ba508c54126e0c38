"""In-process state: the embedded default for one replica, and the test double.

Every public coroutine runs to completion without awaiting, so within one event loop each call
is atomic exactly as a Lua script is in Redis. Expired entries are purged as time passes, so
memory stays bounded by the traffic of the last window, period and reservation ttl.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policy_extproc.state.base import (
    BREAKER_KEEP_S,
    LATE_RECONCILE_S,
    RESERVATION_KEEP_S,
    Admission,
    Approval,
    BreakerState,
    BudgetSpec,
    BudgetState,
    LimitSpec,
    LimitState,
    check_org,
    clock,
    gcra_step,
    limit_state,
    peek_admission,
    retry_after,
    to_micros,
)
from policy_extproc.state.memory_approvals import MemoryApprovals
from policy_extproc.state.memory_breakers import Breaker, state_of, trips
from policy_extproc.state.memory_pending import MemoryPending

# How often (in the callers' clock) the whole store is scanned for expired entries.
PURGE_EVERY_S = 60.0

_Key = tuple[str, str]  # (org, key): an org's counters never meet another org's


@dataclass(slots=True)
class _Counter:
    micros: int
    expires_at: float


@dataclass(slots=True)
class _Reservation:
    deadline: float  # the sweep releases it after this
    keep_until: float  # a released (expired) reservation is forgotten after this
    ttl: float  # the expiry queue it waits in while open
    open: bool = True
    budgets: dict[_Key, int] = field(default_factory=dict)  # micro-USD reserved
    tokens: dict[_Key, tuple[int, float]] = field(default_factory=dict)  # (units, interval)


class MemoryState(MemoryApprovals, MemoryPending):
    """StateBackend held in this process's memory."""

    never_waits = True  # StateBackend: no call awaits anything

    def __init__(self) -> None:
        self._tats: dict[_Key, float] = {}
        self._spent: dict[_Key, _Counter] = {}
        self._reservations: dict[_Key, _Reservation] = {}  # (org, request id)
        # The open reservations by ttl, each queue in the order they were made, which is the
        # order of their deadlines (same ttl, a clock that goes forward): so the sweep pops
        # from the front, and a settled reservation leaves its queue at once, in O(1), rather
        # than waiting for its deadline (at 100 req/s and a 600 s ttl, 60,000 entries). One
        # ttl is configured, so there is one queue. A clock stepping back delays the expiry
        # of what was made meanwhile by at most the step.
        self._expiry: dict[float, OrderedDict[_Key, float]] = {}
        self._breakers: dict[str, Breaker] = {}
        self._approvals: dict[str, Approval] = {}
        self._pending: dict[_Key, tuple[str, float]] = {}  # memory_pending.py
        self._next_purge = 0.0

    def scheduled(self) -> int:
        """Entries waiting for their deadline: the open reservations, nothing settled."""
        return sum(len(queue) for queue in self._expiry.values())

    def stored(self) -> int:
        """Entries held (limiters, counters, reservations, breakers, approvals): memory use."""
        held = (
            self._tats, self._spent, self._reservations, self._breakers, self._approvals,
            self._pending,
        )  # fmt: skip
        return sum(len(entries) for entries in held)

    # -- limits and budgets ------------------------------------------------------------

    async def admit(
        self,
        org: str,
        request_id: str,
        limits: Sequence[LimitSpec] = (),
        budgets: Sequence[BudgetSpec] = (),
        *,
        now: float | None = None,
        reservation_ttl_s: float = 300.0,
    ) -> Admission:
        """Consume every limiter and reserve every budget, or change nothing."""
        check_org(org)
        now = clock(now)
        self._sweep(now)
        self._maybe_purge(now)
        # Phase 1 reads through overlays, so a key named twice in one request is checked
        # against its own earlier use; nothing is written until every check has passed.
        tats: dict[_Key, float] = {}
        spent: dict[_Key, int] = {}
        steps: list[tuple[float, float, bool]] = []
        denied_by: str | None = None
        for spec in limits:
            k = (org, spec.key)
            base, new_tat, fits = gcra_step(tats.get(k, self._tats.get(k)), now, spec)
            steps.append((base, new_tat, fits))
            tats[k] = new_tat if fits else base
            if not fits and denied_by is None:
                denied_by = spec.key
        befores: list[int] = []
        for budget in budgets:
            k = (org, budget.key)
            before = spent[k] if k in spent else self._live_micros(k, now)
            amount, limit = to_micros(budget.amount_usd), to_micros(budget.limit_usd)
            fits = before < limit and before + amount <= limit
            if budget.enforce and not fits and denied_by is None:
                denied_by = budget.key
            befores.append(before)
            spent[k] = before + amount
        admitted = denied_by is None
        if admitted:
            self._commit(org, request_id, limits, budgets, tats, now, reservation_ttl_s)
        return _admission(limits, budgets, steps, befores, now, denied_by)

    async def peek(
        self,
        org: str,
        limits: Sequence[LimitSpec] = (),
        budgets: Sequence[BudgetSpec] = (),
        *,
        now: float | None = None,
    ) -> Admission:
        """What ``admit`` would answer now, changing nothing (dry runs)."""
        check_org(org)
        now = clock(now)
        tats = {s.key: self._tats[(org, s.key)] for s in limits if (org, s.key) in self._tats}
        spent = {b.key: self._live_micros((org, b.key), now) for b in budgets}
        return peek_admission(limits, budgets, tats, spent, now)

    def _commit(
        self,
        org: str,
        request_id: str,
        limits: Sequence[LimitSpec],
        budgets: Sequence[BudgetSpec],
        tats: dict[_Key, float],
        now: float,
        ttl_s: float,
    ) -> None:
        self._tats.update(tats)
        if not budgets and not any(spec.estimated for spec in limits):
            return  # nothing that reconcile or release could change
        key = (org, request_id)
        res = self._reservations.get(key)
        if res is None or not res.open:
            # A reused request id adds to its open reservation, so nothing reserved leaks.
            res = _Reservation(now + ttl_s, now + ttl_s + RESERVATION_KEEP_S, ttl_s)
            self._reservations[key] = res
            self._expiry.setdefault(ttl_s, OrderedDict())[key] = res.deadline
        for budget in budgets:
            k = (org, budget.key)
            amount = to_micros(budget.amount_usd)
            counter = self._spent.get(k)
            if counter is None or counter.expires_at <= now:
                counter = self._spent[k] = _Counter(0, budget.expires_at)
            counter.micros += amount
            counter.expires_at = budget.expires_at
            res.budgets[k] = res.budgets.get(k, 0) + amount
        for spec in limits:
            if spec.estimated:
                k = (org, spec.key)
                res.tokens[k] = (res.tokens.get(k, (0, 0.0))[0] + spec.cost, spec.interval_s)

    async def reconcile(
        self,
        org: str,
        request_id: str,
        *,
        actual_usd: Mapping[str, float],
        actual_tokens: Mapping[str, int],
        now: float | None = None,
    ) -> bool:
        """Replace the request's reservation with its real cost; False if there was none."""
        now = clock(now)
        self._sweep(now)
        res = self._reservations.pop((org, request_id), None)
        if res is None or res.keep_until <= now:
            return False
        self._unschedule((org, request_id), res)
        for k, est in res.budgets.items():
            # A budget the caller does not name is charged at its estimate. The sweep gave
            # an expired reservation's estimate back already, so that one is charged in full.
            actual = to_micros(actual_usd[k[1]]) if k[1] in actual_usd else est
            self._add_micros(k, actual - (est if res.open else 0), now)
        for k, (units, interval) in res.tokens.items():
            if k[1] in actual_tokens:
                self._shift_tat(k, actual_tokens[k[1]] - units, interval, now)
        return True

    async def release(self, org: str, request_id: str, *, now: float | None = None) -> bool:
        """Give back the reservation of a request that never went upstream."""
        now = clock(now)
        res = self._reservations.pop((org, request_id), None)
        if res is None or res.keep_until <= now:
            return False
        self._unschedule((org, request_id), res)
        if res.open:
            for k, est in res.budgets.items():
                self._add_micros(k, -est, now)
        # Tokens were estimated for a call that never happened: give them back too.
        for k, (units, interval) in res.tokens.items():
            self._shift_tat(k, -units, interval, now)
        return True

    async def expire_reservations(self, now: float | None = None) -> int:
        """Release reservations older than their ttl; returns how many."""
        return self._sweep(clock(now))

    def _sweep(self, now: float) -> int:
        released = 0
        for queue in self._expiry.values():
            while queue:
                key, deadline = next(iter(queue.items()))
                if deadline > now:
                    break
                del queue[key]
                res = self._reservations.get(key)
                if res is None or not res.open:
                    continue  # purged (long expired) or forgotten already
                # Budgets go back; tokens stay charged, since the call most likely happened.
                for k, est in res.budgets.items():
                    self._add_micros(k, -est, now)
                res.open = False
                res.keep_until = now + LATE_RECONCILE_S
                released += 1
        return released

    def _unschedule(self, key: _Key, res: _Reservation) -> None:
        if res.open:  # else the sweep took it out of its queue already
            queue = self._expiry.get(res.ttl)
            if queue is not None:
                queue.pop(key, None)

    def _live_micros(self, k: _Key, now: float) -> int:
        counter = self._spent.get(k)
        return counter.micros if counter is not None and counter.expires_at > now else 0

    def _add_micros(self, k: _Key, delta: int, now: float) -> None:
        counter = self._spent.get(k)
        # A counter whose period is gone is not recreated: nobody reads it any more.
        if counter is not None and counter.expires_at > now:
            counter.micros += delta

    def _shift_tat(self, k: _Key, units: int, interval: float, now: float) -> None:
        if units == 0:
            return
        tat = self._tats.get(k, now)
        if units > 0:
            tat = max(tat, now)  # extra usage counts from now if the limiter had drained
        tat += units * interval
        if tat > now:
            self._tats[k] = tat
        else:
            self._tats.pop(k, None)

    def _maybe_purge(self, now: float) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY_S
        self._tats = {k: t for k, t in self._tats.items() if t > now}
        self._spent = {k: c for k, c in self._spent.items() if c.expires_at > now}
        self._reservations = {k: r for k, r in self._reservations.items() if r.keep_until > now}
        self._approvals = {k: a for k, a in self._approvals.items() if a.expires_at > now}
        self._purge_pending(now)
        self._breakers = {p: b for p, b in self._breakers.items() if b.touched > now}
        self._expiry = {ttl: queue for ttl, queue in self._expiry.items() if queue}

    # -- circuit breakers --------------------------------------------------------------

    async def breaker_record(
        self,
        provider: str,
        ok: bool,
        *,
        window_s: float,
        failure_threshold: int,
        cooldown_s: float,
        failure_ratio: float | None = None,
        min_requests: int = 1,
        now: float | None = None,
    ) -> BreakerState:
        """Count one upstream outcome and return the breaker after it."""
        now = clock(now)
        b = self._breakers.setdefault(provider, Breaker())
        b.touched = now + max(window_s, cooldown_s) + BREAKER_KEEP_S
        for times in (b.failures, b.successes):
            while times and times[0] <= now - window_s:
                times.popleft()
        half_open = b.open and now >= b.opened_at + cooldown_s
        if half_open and ok:
            b.open = False
            b.failures.clear()
            b.successes.clear()
        elif half_open:
            b.opened_at = now  # the probe failed: another full cooldown
        elif not b.open:
            if ok and failure_ratio is None:
                pass  # counting mode needs only the failures
            else:
                (b.successes if ok else b.failures).append(now)
            if trips(len(b.failures), len(b.successes), failure_threshold, failure_ratio,
                      min_requests):  # fmt: skip
                b.open, b.opened_at = True, now
        return state_of(provider, b, now, cooldown_s)

    async def breaker_state(
        self, provider: str, *, cooldown_s: float, now: float | None = None
    ) -> BreakerState:
        """The breaker as it stands (an open one turns half_open after the cooldown)."""
        b = self._breakers.get(provider) or Breaker()
        return state_of(provider, b, clock(now), cooldown_s)

    async def ping(self) -> None:
        """Always ready."""

    async def close(self) -> None:
        """Nothing to release."""


def _admission(
    limits: Sequence[LimitSpec],
    budgets: Sequence[BudgetSpec],
    steps: Sequence[tuple[float, float, bool]],
    befores: Sequence[int],
    now: float,
    denied_by: str | None,
) -> Admission:
    admitted = denied_by is None
    states: list[LimitState] = []
    longest = 0.0
    for spec, (base, new_tat, fits) in zip(limits, steps, strict=True):
        wait = 0.0 if fits else retry_after(spec, now, new_tat)
        longest = max(longest, wait)
        states.append(limit_state(spec, now, new_tat if admitted else base, wait))
    budget_states = tuple(
        BudgetState(
            b.key,
            b.limit_usd,
            before / 1e6,
            (before + to_micros(b.amount_usd) if admitted else before) / 1e6,
            b.enforce,
        )
        for b, before in zip(budgets, befores, strict=True)
    )
    return Admission(admitted, denied_by, longest, tuple(states), budget_states)
