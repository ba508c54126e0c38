"""Provider failover: circuit breakers fed by the responses the sidecar sees, shared by replicas.

A ``failover`` rule watches one provider. Failures (5xx, 429, Envoy's own 503/504 for connect
failures and timeouts) within ``window`` open its breaker; while open, requests go to the first
fallback whose breaker is not open and that serves the model (under the catalog's name for it
there); after ``cooldown`` the breaker is half-open and traffic goes back to the provider, where
one success closes it and one failure opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..llm.apis import BY_API
from ..llm.catalog import Catalog
from ..llm.request import LlmRequest
from ..policy.compiler import EffectiveRule, EffectiveSet
from ..policy.decision import Fired
from ..policy.rules.failover import FailoverRule
from ..state.base import StateBackend


def default_provider(req: LlmRequest, catalog: Catalog) -> str:
    """The provider Envoy's routes send this request to when nobody reroutes it."""
    info = catalog.model(req.model) if req.model else None
    if info is not None:
        return info.provider
    return BY_API[req.api].provider


def is_failure(status: int) -> bool:
    """What counts against a provider: server errors and rate limiting (not client errors)."""
    return status >= 500 or status == 429


@dataclass(frozen=True, slots=True)
class Route:
    provider: str  # where the request goes
    reroute: str | None  # set when that is not where Envoy would send it
    model: str | None  # the model name to send there, when it differs
    fired: Fired | None
    rule: EffectiveRule[FailoverRule] | None  # the breaker rule watching ``provider``


def watching(es: EffectiveSet, provider: str) -> EffectiveRule[FailoverRule] | None:
    """The failover rule in force for ``provider``, if any."""
    for e in es.rules_of(FailoverRule):
        if e.rule.provider == provider:
            return e
    return None


async def route(
    state: StateBackend, es: EffectiveSet, req: LlmRequest, catalog: Catalog, *, now: float
) -> Route:
    """Where this request goes: its provider, or a fallback while the provider's breaker is open
    (``now``: wall-clock seconds, the stateful checks' clock)."""
    primary = default_provider(req, catalog)
    e = watching(es, primary)
    if e is None:
        return Route(primary, None, None, None, None)
    rule = e.rule
    breaker = await state.breaker_state(primary, cooldown_s=rule.cooldown_s, now=now)
    if breaker.status != "open":
        return Route(primary, None, None, None, e)
    for fallback in rule.fallbacks:
        target = catalog.model_at(req.model, fallback) if catalog.model(req.model) else req.model
        if target is None:
            continue  # the fallback does not serve this model
        fb_rule = watching(es, fallback)
        if fb_rule is not None:
            fb = fb_rule.rule
            fb_state = await state.breaker_state(fallback, cooldown_s=fb.cooldown_s, now=now)
            if fb_state.status == "open":
                continue
        reason = (
            f"provider {primary} is failing ({breaker.failures} failures, circuit open); "
            f"rerouted to {fallback}"
        )
        fired = Fired(e.policy_name, rule.id, rule.type, "reroute", reason, e.policy.policy.mode)
        if e.policy.policy.mode == "log":
            return Route(primary, None, None, fired, e)  # shadow: say so, change nothing
        return Route(fallback, fallback, target if target != req.model else None, fired, fb_rule)
    return Route(primary, None, None, None, e)  # every fallback is down too: try the provider


async def record(
    state: StateBackend, e: EffectiveRule[FailoverRule], provider: str, status: int, *, now: float
) -> None:
    """Feed one response status into the provider's breaker (``now``: when it answered)."""
    rule = e.rule
    await state.breaker_record(
        provider,
        not is_failure(status),
        window_s=rule.window_s,
        failure_threshold=rule.failure_threshold,
        cooldown_s=rule.cooldown_s,
        failure_ratio=rule.failure_ratio,
        min_requests=rule.min_requests,
        now=now,
    )
