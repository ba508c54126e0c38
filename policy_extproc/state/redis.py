"""Redis state, shared by every replica: one Lua script call (one round trip) per request.

The only module that knows Redis. Every key of an organisation starts with ``pe:{<org>}:``,
so the org's counters share one Redis Cluster hash slot and a script may touch all of them.
Every key expires. Each call is bounded by ``timeout_s`` and is never retried (a retried
admit could consume twice); any failure or timeout becomes ``StateError`` at once, and the
caller applies the rule's ``on_error``. The connection pool drops a connection that failed and
checks pooled ones before use, so the first call after Redis comes back succeeds. The client
is a single server's, a Redis Cluster's or a Sentinel master's (``connect``). At most
``max_connections`` calls are under way at once; the others wait for one to end, within their
own bound (a Cluster's or a Sentinel's pool does not wait: past its size it fails the call at
once, so a burst of more concurrent calls than connections failed closed).

The Lua sources are in ``state/lua/``: the ARGV and return layouts are documented there.

Every call is timed: ``observe(operation, outcome, seconds)``, when given, is told each one's
operation (one of ``OPERATIONS``), its outcome (``ok``, ``error``, ``timeout``) and how long it
took, connection checks and pool waits included: what the request waited for (the latency
metric ``policy_extproc_redis_latency_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar, cast

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from policy_extproc.errors import StateError
from policy_extproc.state import connect
from policy_extproc.state import redis_codec as codec
from policy_extproc.state.base import (
    BREAKER_KEEP_S,
    LATE_RECONCILE_S,
    RESERVATION_KEEP_S,
    Admission,
    Approval,
    BreakerState,
    BudgetSpec,
    LimitSpec,
    check_org,
    clock,
    peek_admission,
    to_micros,
)

DEFAULT_TIMEOUT_S = 0.1
DEFAULT_MAX_CONNECTIONS = 64
SWEEP_BATCH = 256
_APPROVALS = "pe:{approvals}:"  # low volume: every approval and the index in one hash slot

T = TypeVar("T")
# The operations a call is observed as: a fixed set, so a metric label stays bounded.
OPERATIONS = (
    "admit", "reconcile", "release", "sweep", "breaker_record", "breaker_state", "approval_put",
    "approval_get", "approval_decide", "approval_consume", "approval_list", "ping",
    "pending_put", "pending_get", "pending_take",
)  # fmt: skip
OUTCOMES = ("ok", "error", "timeout")
Observer = Callable[[str, str, float], None]  # (operation, outcome, seconds)
log = logging.getLogger(__name__)


def _script(*names: str) -> str:
    lua = resources.files("policy_extproc.state").joinpath("lua")
    return "\n".join(lua.joinpath(name).read_text(encoding="utf-8") for name in names)


def _prefix(org: str) -> str:
    check_org(org)
    return f"pe:{{{org}}}:"


class RedisState:
    """StateBackend on Redis."""

    never_waits = False  # every call is a network round trip (and its timeout)

    def __init__(
        self,
        client: connect.Client,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        observe: Observer | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        # One connection per call: no more calls at once than the pool holds (see above).
        self._calls = asyncio.Semaphore(max_connections)
        self.observe = observe
        # Orgs this process reserved for, so expire_reservations knows whose index to sweep;
        # admit and reconcile also sweep their own org, so none is missed for long.
        self._orgs: set[str] = set()
        # Script objects run EVALSHA and load the source once on NOSCRIPT (after a restart).
        register = client.register_script
        self._admit = register(_script("reservations.lua", "admit.lua"))
        self._reconcile = register(_script("reservations.lua", "reconcile.lua"))
        self._release = register(_script("reservations.lua", "release.lua"))
        self._sweep = register(_script("reservations.lua", "sweep.lua"))
        self._breaker_record = register(_script("breaker_record.lua"))
        self._breaker_state = register(_script("breaker_state.lua"))
        self._approval_put = register(_script("approval_put.lua"))
        self._approval_decide = register(_script("approval_decide.lua"))
        self._approval_consume = register(_script("approval_consume.lua"))
        self._pending_take = register(_script("pending_take.lua"))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        observe: Observer | None = None,
    ) -> RedisState:
        """Connect lazily to ``url`` (see ``connect``: one server, Cluster, Sentinel)."""
        target = connect.parse(url)
        client = connect.client(target, timeout_s=timeout_s, max_connections=max_connections)
        return cls(client, timeout_s=timeout_s, observe=observe, max_connections=max_connections)

    async def _run(self, what: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout(self._timeout_s), self._calls:
                await connect.ready(self._client)
                result = await call
            outcome = "ok"
            return result
        except (TimeoutError, RedisTimeoutError) as exc:
            outcome = "timeout"
            ms = self._timeout_s * 1000
            raise StateError(f"redis {what}: no answer within {ms:.0f} ms") from exc
        except (RedisError, OSError) as exc:
            raise StateError(f"redis {what}: {exc}") from exc
        finally:
            if isinstance(call, Coroutine):
                call.close()  # never started when the bound passed first (a no-op if done)
            if self.observe is not None:
                try:
                    self.observe(what, outcome, time.perf_counter() - started)
                except Exception:  # a metric must never fail a state call
                    log.exception("redis %s not observed", what)

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
        prefix = _prefix(org)
        if not limits and not budgets:
            return Admission(True, None, 0.0, (), ())
        now = clock(now)
        self._orgs.add(org)
        keys = [prefix + "resv", prefix + "res:" + request_id]
        args: list[Any] = [now, request_id, prefix, reservation_ttl_s, RESERVATION_KEEP_S]
        args += (LATE_RECONCILE_S, len(limits), len(budgets))
        for spec in limits:
            keys.append(prefix + spec.key)
            args.append(f"{spec.interval_s!r} {spec.capacity} {spec.cost} {spec.estimated:d}")
        for budget in budgets:
            keys.append(prefix + budget.key)
            ttl_s = max(budget.expires_at - now, 1.0)
            limit, amount = to_micros(budget.limit_usd), to_micros(budget.amount_usd)
            args.append(f"{limit} {amount} {ttl_s!r} {budget.enforce:d}")
        raw = await self._run("admit", self._admit(keys=keys, args=args))
        return codec.admission(raw.split(), limits, budgets)

    async def peek(
        self,
        org: str,
        limits: Sequence[LimitSpec] = (),
        budgets: Sequence[BudgetSpec] = (),
        *,
        now: float | None = None,
    ) -> Admission:
        """What ``admit`` would answer now, changing nothing (dry runs): one MGET of the org's
        keys (one hash slot), checked by the arithmetic admit.lua runs."""
        prefix = _prefix(org)
        if not limits and not budgets:
            return Admission(True, None, 0.0, (), ())
        now = clock(now)
        names = [s.key for s in limits] + [b.key for b in budgets]
        raw = await self._run("peek", self._client.mget([prefix + k for k in names]))
        values = dict(zip(names, cast("list[str | None]", raw), strict=True))
        tats = {s.key: float(v) for s in limits if (v := values[s.key]) is not None}
        spent = {b.key: int(v) for b in budgets if (v := values[b.key]) is not None}
        return peek_admission(limits, budgets, tats, spent, now)

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
        prefix = _prefix(org)
        args: list[Any] = [clock(now), request_id, prefix, LATE_RECONCILE_S, len(actual_usd)]
        for key, usd in actual_usd.items():
            args += (prefix + key, to_micros(usd))
        args.append(len(actual_tokens))
        for key, units in actual_tokens.items():
            args += (prefix + key, int(units))
        keys = [prefix + "resv", prefix + "res:" + request_id]
        return bool(await self._run("reconcile", self._reconcile(keys=keys, args=args)))

    async def release(self, org: str, request_id: str, *, now: float | None = None) -> bool:
        """Give back the reservation of a request that never went upstream."""
        prefix = _prefix(org)
        keys = [prefix + "resv", prefix + "res:" + request_id]
        args: list[Any] = [clock(now), request_id]
        return bool(await self._run("release", self._release(keys=keys, args=args)))

    async def expire_reservations(self, now: float | None = None) -> int:
        """Release reservations older than their ttl, of every org this process served."""
        now = clock(now)
        released = 0
        for org in list(self._orgs):
            prefix = _prefix(org)
            while True:
                args: list[Any] = [now, prefix, SWEEP_BATCH, LATE_RECONCILE_S]
                call = self._sweep(keys=[prefix + "resv"], args=args)
                done, seen, left = await self._run("sweep", call)
                released += int(done)
                if int(seen) < SWEEP_BATCH:
                    break
            if int(left) == 0:
                self._orgs.discard(org)
        return released

    # -- pending responses (serve --response-accounting observe) -----------------------

    async def pending_put(
        self, org: str, request_id: str, payload: str, *, ttl_s: float, now: float | None = None
    ) -> None:
        """Keep ``payload`` for the request until it is taken or ``ttl_s`` passes."""
        key = _prefix(org) + "pend:" + request_id
        call = self._client.set(key, payload, px=max(1, int(ttl_s * 1000)))
        await self._run("pending_put", call)

    async def pending_get(
        self, org: str, request_id: str, *, now: float | None = None
    ) -> str | None:
        """The request's payload, left in place; None if absent or expired."""
        call = self._client.get(_prefix(org) + "pend:" + request_id)
        return cast(str | None, await self._run("pending_get", call))

    async def pending_take(
        self, org: str, request_id: str, *, now: float | None = None
    ) -> str | None:
        """The request's payload, removed (one script: only one taker gets it)."""
        call = self._pending_take(keys=[_prefix(org) + "pend:" + request_id])
        return cast(str | None, await self._run("pending_take", call))

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
        ratio = -1 if failure_ratio is None else failure_ratio
        args = [now, int(ok), window_s, failure_threshold, cooldown_s, BREAKER_KEEP_S, ratio,
                min_requests]  # fmt: skip
        call = self._breaker_record(keys=codec.breaker_keys(provider), args=args)
        raw = await self._run("breaker_record", call)
        return codec.breaker(provider, raw, now, cooldown_s)

    async def breaker_state(
        self, provider: str, *, cooldown_s: float, now: float | None = None
    ) -> BreakerState:
        """The breaker as it stands (an open one turns half_open after the cooldown)."""
        call = self._breaker_state(keys=codec.breaker_keys(provider), args=[])
        raw = await self._run("breaker_state", call)
        return codec.breaker(provider, raw, clock(now), cooldown_s)

    # -- approvals ---------------------------------------------------------------------

    async def approval_put(self, approval: Approval, *, now: float | None = None) -> None:
        """Store an approval until its ``expires_at``."""
        fields: list[Any] = []
        for name, value in codec.approval_fields(approval).items():
            fields += (name, value)
        keys = [_APPROVALS + "a:" + approval.id, _APPROVALS + "index"]
        args: list[Any] = [clock(now), approval.id, approval.expires_at, *fields]
        await self._run("approval_put", self._approval_put(keys=keys, args=args))

    async def approval_get(self, approval_id: str, *, now: float | None = None) -> Approval | None:
        """The approval, or None if unknown or expired."""
        call = self._client.hgetall(_APPROVALS + "a:" + approval_id)
        # decode_responses=True: the client answers str, which its annotations do not say
        row = cast(dict[str, str], await self._run("approval_get", call))
        return codec.approval(row, clock(now))

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
        now = clock(now)
        status = "approved" if approved else "denied"
        keys = [_APPROVALS + "a:" + approval_id]
        call = self._approval_decide(keys=keys, args=[now, status, approver, reason])
        raw = await self._run("approval_decide", call)
        fields: dict[str, str] = dict(zip(raw[::2], raw[1::2], strict=True))
        return codec.approval(fields, now)

    async def approval_consume(
        self, approval_id: str, fingerprint: str, user: str, *, now: float | None = None
    ) -> bool:
        """Use an approved approval once, for the same request and user; True if it was."""
        keys = [_APPROVALS + "a:" + approval_id]
        call = self._approval_consume(keys=keys, args=[clock(now), fingerprint, user])
        return bool(await self._run("approval_consume", call))

    async def approval_list(
        self, org: str | None = None, *, now: float | None = None
    ) -> list[Approval]:
        """Unexpired approvals, oldest first, of one org or all."""
        now = clock(now)
        index = _APPROVALS + "index"
        call = self._client.zrangebyscore(index, f"({now!r}", "+inf")
        ids = cast(list[str], await self._run("approval_list", call))
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for approval_id in ids:
            pipe.hgetall(_APPROVALS + "a:" + approval_id)
        rows = await self._run("approval_list", pipe.execute())
        found = [a for a in (codec.approval(row, now) for row in rows) if a is not None]
        return sorted(
            (a for a in found if org is None or a.org == org),
            key=lambda a: (a.created_at, a.id),
        )

    async def ping(self) -> None:
        """Raise StateError unless Redis answers within the timeout."""
        await self._run("ping", self._client.ping())

    async def close(self) -> None:
        """Close every pooled connection."""
        try:
            await self._client.aclose()
        except (RedisError, OSError) as exc:
            raise StateError(f"redis close: {exc}") from exc
