"""The checks that need shared state: approvals, limits and budgets, failover, GDPR residency.

``StatefulChecks.run`` returns a ``Stateful``: the ``StateOutcome`` the decision is combined
with (policy/decision.py), what the exchange keeps to settle later (the admitted plan, the
route), and the notifications to send. It never changes the pure rules' findings, and it
notifies nobody itself: the caller does (or, for a dry run, does not).

``consume=False`` is the dry run (admin ``Evaluate``, ``eval``, ``policy-extproc test``): the
same checks, against a read of the state that changes nothing. Limits and budgets are
``peek``ed instead of admitted, an approval that would be opened is reported (escalate) but
not stored, and an approval presented is checked but not used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import PolicyExtprocError, StateError
from ..llm.catalog import Catalog
from ..policy.compiler import EffectiveRule, EffectiveSet
from ..policy.compliance import PACKS
from ..policy.decision import NO_STATE, Fired, RequestContext, StateOutcome, Throttle
from ..policy.rules.approval import ApprovalRule
from ..policy.rules.compliance import ComplianceRule
from ..policy.rules.failover import FailoverRule
from ..state.base import StateBackend
from . import approvals, failover, limits
from .clock import SYSTEM_CLOCK, Clock
from .failover import default_provider
from .limits import needs_state

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    """An alert to send (the webhook), and the key it is rate-limited by (None: its text)."""

    payload: Mapping[str, Any]
    key: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class Stateful:
    """What the stateful checks found, and what they leave to the caller."""

    outcome: StateOutcome = NO_STATE
    plan: limits.Plan | None = None  # limiters and budgets admitted, to settle at the end
    route: failover.Route | None = None  # where it goes, and the breaker watching that provider
    notices: tuple[Notice, ...] = ()
    degraded_admission: bool = False  # admitted without the state backend (on_error: open)


NOTHING = Stateful()


@dataclass(slots=True)
class _Run:
    """The checks' working values for one request (local to ``run``)."""

    fired: list[Fired] = field(default_factory=list)
    alerts: tuple[str, ...] = ()
    throttle: Throttle | None = None
    degraded: tuple[str, ...] = ()
    reroute: tuple[str | None, str | None] = (None, None)
    approval_id: str | None = None
    plan: limits.Plan | None = None
    route: failover.Route | None = None
    notices: list[Notice] = field(default_factory=list)
    degraded_admission: bool = False

    def result(self) -> Stateful:
        outcome = StateOutcome(
            fired=tuple(self.fired),
            throttle=self.throttle,
            reroute=self.reroute[0],
            reroute_model=self.reroute[1],
            approval_id=self.approval_id,
            alerts=self.alerts,
            degraded=self.degraded,
        )
        return Stateful(
            outcome, self.plan, self.route, tuple(self.notices), self.degraded_admission
        )


def passes(fired: Sequence[Fired], also: tuple[str, ...] = ()) -> bool:
    """Whether nothing enforced refuses the request so far (only then is state consumed)."""
    refusing = ("block", "escalate", *also)
    return not any(f.mode == "enforce" and f.action in refusing for f in fired)


def _fire(
    e: EffectiveRule, action: str, reason: str, mode: Literal["enforce", "log"] | None = None
) -> Fired:
    """A firing of ``e``; its mode is the policy's unless the rule says (compliance log)."""
    m = mode or e.policy.policy.mode
    return Fired(e.policy_name, e.rule.id, e.rule.type, action, reason, m)


class StatefulChecks:
    """The stateful checks of one configuration: its state backend, catalog and limit settings."""

    def __init__(
        self,
        state: StateBackend,
        catalog: Catalog,
        settings: limits.Settings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.state = state
        self.catalog = catalog
        self.settings = settings
        self.clock = clock

    async def run(
        self,
        es: EffectiveSet,
        ctx: RequestContext,
        pure: Sequence[Fired],
        request_id: str,
        *,
        consume: bool = True,
    ) -> Stateful:
        """Approvals, limits and budgets, failover, residency, after the pure firings ``pure``.

        Raises ``PolicyExtprocError`` for a refusal that is not a rule's (missing identity,
        state unavailable and failing closed, an approval id that does not fit).
        """
        assert ctx.request is not None
        run = _Run()
        presented = None
        est = None  # estimated once, for approvals and budgets alike
        if es.rules_of(ApprovalRule):
            est = limits.estimate(ctx.request, self.catalog, self.settings)
            triggers = approvals.triggered(es, ctx, est.usd)
            for t in triggers:
                if t.rule.policy.policy.mode == "log":
                    run.fired.append(_fire(t.rule, "escalate", t.reason))  # shadow: would escalate
            enforced = [t for t in triggers if t.rule.policy.policy.mode == "enforce"]
            if enforced and ctx.approval_id:
                presented = await approvals.check_presented(self.state, ctx)
            elif enforced:
                run.fired.extend(_fire(t.rule, "escalate", t.reason) for t in enforced)
                if not consume:
                    return run.result()  # would escalate; no approval is opened
                approval = await approvals.open_approval(
                    self.state, ctx, enforced[0], est.usd, now=self.clock.wall_s()
                )
                run.notices.append(
                    Notice(
                        {
                            "type": "approval_required",
                            "approval_id": approval.id,
                            "org": ctx.org,
                            "user": ctx.user,
                            **approval.details,
                        },
                        key=(enforced[0].rule.policy_name, enforced[0].rule.rule.id, ctx.user),
                    )
                )
                run.approval_id = approval.id
                run.alerts = (f"approval {approval.id} requested",)
                return run.result()
        if needs_state(es):
            await self._admit(run, es, ctx, (*pure, *run.fired), request_id, est, consume)
        if presented is not None and passes((*pure, *run.fired), also=("throttle",)):
            # Used only by a request that goes through: a throttled one keeps its approval.
            if consume:
                try:
                    await approvals.consume(self.state, ctx, presented)
                except PolicyExtprocError:
                    if run.plan is not None:  # admitted, but the approval was used meanwhile
                        await self.state.release(ctx.org or "-", request_id)
                    raise
            run.fired.append(
                Fired(
                    presented.details.get("policy", ""),
                    presented.details.get("rule", "approval"),
                    "approval",
                    "allow",
                    f"approved by {presented.approver} ({presented.id})",
                )
            )
        if es.rules_of(FailoverRule) and passes((*pure, *run.fired)):
            await self._route(run, es, ctx)
        self._residency(run, es, ctx)
        return run.result()

    async def _admit(
        self,
        run: _Run,
        es: EffectiveSet,
        ctx: RequestContext,
        fired: Sequence[Fired],
        request_id: str,
        est: limits.Estimate | None,
        consume: bool,
    ) -> None:
        """Consume every limiter and reserve every budget of the request, all or none (or, not
        consuming, read what that would answer)."""
        now = self.clock.wall_s()
        p = limits.plan(es, ctx, self.catalog, self.settings, now, est)
        if p.empty:
            return
        model = ctx.request.model if ctx.request else None
        alerts = []
        if not p.price_known:
            alerts.append(
                f"model {model!r} has no price in the catalog: cost estimated at the fallback price"
            )
        org = ctx.org or "-"
        try:
            if consume:
                adm = await self.state.admit(
                    org,
                    request_id,
                    p.limits,
                    p.budgets,
                    now=now,
                    reservation_ttl_s=self.settings.reservation_ttl_s,
                )
            else:
                adm = await self.state.peek(org, p.limits, p.budgets, now=now)
        except StateError as exc:
            if not p.fail_open:
                raise StateError(
                    f"limits and budgets cannot be checked ({exc.message}); "
                    "failing closed (on_error: closed)"
                ) from exc
            log.warning("state backend unavailable, admitting (on_error: open): %s", exc)
            run.degraded_admission = True
            run.degraded, run.alerts = ("state_unavailable:open",), tuple(alerts)
            return
        oc = limits.outcome(p, adm, now)
        if adm.admitted and consume:
            run.plan = p
        alerts.extend(oc.alerts)
        run.notices.extend(
            Notice(
                {
                    "alert": text,
                    "org": ctx.org,
                    "team": ctx.team,
                    "user": ctx.user,
                    "model": model,
                    "request_id": request_id,
                }
            )
            for text in alerts
        )
        run.fired.extend(oc.fired)
        run.alerts, run.throttle = tuple(alerts), oc.throttle

    async def _route(self, run: _Run, es: EffectiveSet, ctx: RequestContext) -> None:
        assert ctx.request is not None
        try:
            r = await failover.route(
                self.state, es, ctx.request, self.catalog, now=self.clock.wall_s()
            )
        except StateError as exc:
            # Breakers unreadable: send the request where it was going anyway.
            log.warning("circuit breaker state unavailable: %s", exc)
            run.degraded = (*run.degraded, "breaker_unavailable:open")
            return
        run.route = r
        if r.fired is not None:
            run.fired.append(r.fired)
        if r.reroute:
            run.reroute = (r.reroute, r.model)

    def _residency(self, run: _Run, es: EffectiveSet, ctx: RequestContext) -> None:
        """GDPR pack: personal data goes only to providers the catalog marks EU-resident."""
        assert ctx.request is not None
        for e in es.rules_of(ComplianceRule):
            if not PACKS[e.rule.framework].eu_only:
                continue
            r = run.route
            provider = r.provider if r else default_provider(ctx.request, self.catalog)
            info = self.catalog.provider(provider)
            if info is None or not info.eu_resident:
                mode: Literal["log"] | None = "log" if e.rule.mode == "log" else None
                reason = f"{e.rule.framework}: provider {provider} is not EU-resident (catalog)"
                run.fired.append(_fire(e, "block", reason, mode))
