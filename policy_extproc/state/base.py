"""The state layer's contract: the value types and the ``StateBackend`` protocol.

Two backends implement it: ``memory.MemoryState`` (embedded default for one replica, and the
test double) and ``redis.RedisState`` (shared by every replica). Both keep the same semantics:

- Rate limits are GCRA limiters: ``limit + burst`` units pass at once, then ``limit`` units per
  ``window_s`` at a steady rate. There is no window boundary, so no 2x burst at one: in any
  interval of length d at most ``limit + burst + limit * d / window_s`` units pass.
- Budgets are counters of micro-USD spent, reservations of requests in flight included, so a
  check and a reservation are one step and concurrent requests cannot overrun a budget.
- ``admit`` is all or none: every limiter is consumed and every budget reserved, or nothing
  changes. ``reconcile`` replaces a reservation with the real cost, ``release`` gives it back,
  and a reservation whose response never comes is released after its ttl.

Money is counted in integer micro-USD inside the backends: float sums drift (0.1 + 0.2 > 0.3)
and would refuse the last request that exactly fits a budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

MICROS_PER_USD = 1_000_000

# A released (expired) reservation stays readable this long: a response that arrives after
# the sweep gave the estimate back is still charged, at its full real cost, by reconcile.
LATE_RECONCILE_S = 3600.0

# An open reservation's record outlives its ttl this long, so a sweep that runs late (no
# traffic for the org, no replica sweeping it) still finds what to give back.
RESERVATION_KEEP_S = 2 * 86400.0

# A breaker nobody has reported on for this long (beyond its window and cooldown) is forgotten,
# which reads as closed.
BREAKER_KEEP_S = 3600.0

# Relative slack in GCRA comparisons: float sums of intervals (60 / 7 + ...) must not refuse
# the unit that exactly fits. A hundredth of one unit never admits an extra whole unit.
GCRA_ROUNDING = 0.01

BreakerStatus = Literal["closed", "open", "half_open"]
ApprovalStatus = Literal["pending", "approved", "denied", "consumed"]


def to_micros(usd: float) -> int:
    """USD as integer micro-USD, rounded to the nearest micro-dollar."""
    return round(usd * MICROS_PER_USD)


def clock(now: float | None) -> float:
    """The caller's clock if given (tests pass one), else wall time in epoch seconds."""
    return time.time() if now is None else now


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One GCRA limiter a request must pass: ``limit + burst`` at once, ``limit`` per window."""

    key: str  # counter identity inside the org, e.g. "rl:user:alice:<rule id>:requests"
    limit: int  # units per window (requests or tokens)
    window_s: float
    burst: int = 0  # extra units allowed at once on top of the steady rate
    cost: int = 1  # units this request consumes now (estimated tokens for token limits)
    estimated: bool = False  # cost is an estimate that reconcile()/release() correct (tokens)

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_s <= 0 or self.burst < 0 or self.cost < 0:
            raise ValueError(f"invalid limit {self!r}")

    @property
    def interval_s(self) -> float:
        """Seconds one unit occupies: the GCRA emission interval."""
        return self.window_s / self.limit

    @property
    def capacity(self) -> int:
        """Units that may pass at once."""
        return self.limit + self.burst


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """One budget to reserve a request's estimated cost against."""

    key: str  # e.g. "budget:team:ml:<rule id>:2026-11-24" (see budget_period)
    limit_usd: float
    amount_usd: float  # estimated cost reserved now
    expires_at: float  # epoch seconds after which the counter may go (period end + slack)
    enforce: bool = True  # False (action notify): always admit, still reserve and report

    def __post_init__(self) -> None:
        if self.limit_usd < 0 or self.amount_usd < 0:
            raise ValueError(f"invalid budget {self!r}")


@dataclass(frozen=True, slots=True)
class LimitState:
    """A limiter after the admission step, for the x-ratelimit-* headers."""

    key: str
    limit: int
    remaining: int  # units that would pass right now (up to limit + burst)
    reset_after_s: float  # seconds until the limiter is full again
    retry_after_s: float  # 0 if it passed; math.inf if cost exceeds limit + burst (never fits)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A budget before and after the admission step (reservations included)."""

    key: str
    limit_usd: float
    spent_before_usd: float
    spent_after_usd: float  # equal to spent_before_usd when the request was refused
    enforce: bool

    @property
    def fraction(self) -> float:
        """Share of the limit spent after this step (inf for a zero limit with spending)."""
        if self.limit_usd > 0:
            return self.spent_after_usd / self.limit_usd
        return math.inf if self.spent_after_usd > 0 else 0.0

    def crossed(self, thresholds: Iterable[float]) -> tuple[float, ...]:
        """The thresholds (fractions such as 0.5, 0.8, 1.0) this step crossed, for alerts."""
        before, after = to_micros(self.spent_before_usd), to_micros(self.spent_after_usd)
        return tuple(t for t in thresholds if before < to_micros(t * self.limit_usd) <= after)


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer of ``admit``: admitted or not, and every limiter and budget after it."""

    admitted: bool
    denied_by: str | None  # key of the first limiter or budget that refused
    retry_after_s: float  # longest wait among refusing limiters (0 if only a budget refused)
    limits: tuple[LimitState, ...]  # one per LimitSpec, in order
    budgets: tuple[BudgetState, ...]  # one per BudgetSpec, in order

    @property
    def tightest(self) -> LimitState | None:
        """The limiter to show in x-ratelimit-* headers: the refusing one, else fewest left."""
        if not self.limits:
            return None
        for state in self.limits:
            if state.key == self.denied_by:
                return state
        return min(self.limits, key=lambda s: (s.remaining, -s.reset_after_s))


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A provider's circuit breaker, shared by every replica."""

    provider: str
    status: BreakerStatus
    failures: int  # failures counted in the current window
    opened_at: float | None
    retry_at: float | None  # when an open breaker turns half_open


@dataclass(frozen=True, slots=True)
class Approval:
    """A request waiting for (or granted) human approval; usable once, before it expires."""

    id: str
    org: str
    user: str
    fingerprint: str  # hash of the request it approves; a different request cannot use it
    created_at: float
    expires_at: float
    status: ApprovalStatus = "pending"
    approver: str | None = None
    reason: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)  # what the approver is shown


class StateBackend(Protocol):
    """Counters, limiters, breakers and approvals; every call is atomic."""

    # True when no call awaits anything (in memory): the follow-ups of an answer may then run
    # to their end in the caller, without a task (enforce/settle.py).
    never_waits: bool

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
        ...

    async def peek(
        self,
        org: str,
        limits: Sequence[LimitSpec] = (),
        budgets: Sequence[BudgetSpec] = (),
        *,
        now: float | None = None,
    ) -> Admission:
        """What ``admit`` would answer now, changing nothing (dry runs)."""
        ...

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
        ...

    async def release(self, org: str, request_id: str, *, now: float | None = None) -> bool:
        """Give back the reservation of a request that never went upstream."""
        ...

    async def expire_reservations(self, now: float | None = None) -> int:
        """Release reservations older than their ttl; returns how many."""
        ...

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
        """Count one upstream outcome and return the breaker after it.

        A closed breaker opens on ``failure_threshold`` failures within ``window_s``; with a
        ``failure_ratio``, instead, when at least ``min_requests`` outcomes in the window hold
        that share of failures or more.
        """
        ...

    async def breaker_state(
        self, provider: str, *, cooldown_s: float, now: float | None = None
    ) -> BreakerState:
        """The breaker as it stands (an open one turns half_open after the cooldown)."""
        ...

    async def approval_put(self, approval: Approval, *, now: float | None = None) -> None:
        """Store an approval until its ``expires_at``."""
        ...

    async def approval_get(self, approval_id: str, *, now: float | None = None) -> Approval | None:
        """The approval, or None if unknown or expired."""
        ...

    async def approval_decide(
        self,
        approval_id: str,
        approved: bool,
        approver: str,
        reason: str = "",
        *,
        now: float | None = None,
    ) -> Approval | None:
        """Approve or deny a pending approval; a decided one is returned unchanged."""
        ...

    async def approval_consume(
        self, approval_id: str, fingerprint: str, user: str, *, now: float | None = None
    ) -> bool:
        """Use an approved approval once, for the same request and user; True if it was."""
        ...

    async def approval_list(
        self, org: str | None = None, *, now: float | None = None
    ) -> list[Approval]:
        """Unexpired approvals, oldest first, of one org or all."""
        ...

    async def pending_put(
        self, org: str, request_id: str, payload: str, *, ttl_s: float, now: float | None = None
    ) -> None:
        """Keep what an observe stream needs to settle the request, until taken or ``ttl_s``."""
        ...

    async def pending_get(
        self, org: str, request_id: str, *, now: float | None = None
    ) -> str | None:
        """The request's pending payload, left in place; None if absent or expired."""
        ...

    async def pending_take(
        self, org: str, request_id: str, *, now: float | None = None
    ) -> str | None:
        """The request's pending payload, removed: of two takers only one gets it."""
        ...

    async def ping(self) -> None:
        """Raise StateError if the backend cannot answer (readiness probes)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def check_org(org: str) -> None:
    """Refuse an empty org: its keys would lose their shared Redis Cluster hash slot."""
    if not org:
        raise ValueError("org must not be empty")


def gcra_step(tat: float | None, now: float, spec: LimitSpec) -> tuple[float, float, bool]:
    """One GCRA check: (current arrival time, arrival time after this cost, whether it fits).

    ``tat`` is the stored theoretical arrival time, the moment the limiter is full again; one
    in the past means full now. state/lua/admit.lua carries the same arithmetic, and the
    shared behaviour tests keep the two equal.
    """
    interval = spec.interval_s
    base = tat if tat is not None and tat > now else now
    new_tat = base + spec.cost * interval
    fits = new_tat - now <= (spec.capacity + GCRA_ROUNDING) * interval
    return base, new_tat, fits


def limit_state(spec: LimitSpec, now: float, tat: float, retry_after_s: float) -> LimitState:
    """The headers' view of a limiter whose arrival time is ``tat``."""
    interval = spec.interval_s
    left = math.floor(spec.capacity - (tat - now) / interval + GCRA_ROUNDING)
    return LimitState(spec.key, spec.limit, max(left, 0), max(tat - now, 0.0), retry_after_s)


def retry_after(spec: LimitSpec, now: float, new_tat: float) -> float:
    """Seconds until ``spec.cost`` fits; inf when it exceeds ``limit + burst`` (never fits)."""
    if spec.cost > spec.capacity:
        return math.inf
    return max(new_tat - now - spec.capacity * spec.interval_s, 0.0)


def peek_admission(
    limits: Sequence[LimitSpec],
    budgets: Sequence[BudgetSpec],
    tats: Mapping[str, float],
    spent_micros: Mapping[str, int],
    now: float,
) -> Admission:
    """What ``admit`` would answer, from a read of the limiters' arrival times and the budgets'
    micro-USD spent (keys absent: full limiter, nothing spent). The same arithmetic as admit's
    phase 1 (memory.py, lua/admit.lua), a key named twice checked against its own first use."""
    tat: dict[str, float] = {}
    steps: list[tuple[float, float, bool]] = []
    denied_by: str | None = None
    for spec in limits:
        base, new_tat, fits = gcra_step(tat.get(spec.key, tats.get(spec.key)), now, spec)
        steps.append((base, new_tat, fits))
        tat[spec.key] = new_tat if fits else base
        if not fits and denied_by is None:
            denied_by = spec.key
    spent: dict[str, int] = {}
    befores: list[int] = []
    for b in budgets:
        before = spent[b.key] if b.key in spent else spent_micros.get(b.key, 0)
        amount, limit = to_micros(b.amount_usd), to_micros(b.limit_usd)
        if b.enforce and not (before < limit and before + amount <= limit) and denied_by is None:
            denied_by = b.key
        befores.append(before)
        spent[b.key] = before + amount
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
            before / MICROS_PER_USD,
            (before + to_micros(b.amount_usd) if admitted else before) / MICROS_PER_USD,
            b.enforce,
        )
        for b, before in zip(budgets, befores, strict=True)
    )
    return Admission(admitted, denied_by, longest, tuple(states), budget_states)
