"""Rate limits and cost budgets of one request: what to ask the state backend, and what it means.

``plan`` turns the rules in force into limiter and budget specs (keys per user, team or org, a
calendar period for budgets, the estimated cost reserved now); ``outcome`` turns the backend's
``Admission`` back into firings, 429 figures and alerts. Both are pure; the engine does the I/O.

Token limits charge the *estimated* tokens at admission, so a token limit bites on the request
that would exceed it, not the next one; ``reconcile`` then corrects by the real usage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import MissingIdentity
from ..llm.catalog import Catalog
from ..llm.request import LlmRequest
from ..llm.response import Usage
from ..llm.tokens import estimate_request_tokens
from ..policy.compiler import EffectiveRule, EffectiveSet
from ..policy.decision import Fired, RequestContext, Throttle
from ..policy.rules.cost_budget import CostBudgetRule
from ..policy.rules.model_access import ModelAccessRule, roles_of
from ..policy.rules.rate_limit import RateLimitRule
from ..state.base import Admission, BudgetSpec, LimitSpec
from ..state.budget_period import Period, budget_period

_HEADER = {"user": "x-user-id", "team": "x-team-id", "org": "x-org-id"}


@dataclass(frozen=True, slots=True)
class Settings:
    """How costs are estimated before the response says what they were."""

    default_output_tokens: int = 1024  # when the request sets no max_tokens
    # A model the catalog does not know is priced like an expensive one, so a budget can't be
    # escaped by naming an unknown model; the decision says the price was a guess.
    unknown_input_per_mtok: float = 15.0
    unknown_output_per_mtok: float = 60.0
    time_zone: str = "UTC"  # calendar days and months of budgets
    reservation_ttl_s: float = 600.0


@dataclass(slots=True)
class Owner:
    """Which rule a limiter or budget key belongs to."""

    rule: EffectiveRule
    per: str
    subject: str
    kind: str  # requests, tokens, budget
    period_end: float = 0.0
    alert_at: tuple[float, ...] = ()
    period: str = "day"  # of a budget


@dataclass(slots=True)
class Plan:
    limits: list[LimitSpec] = field(default_factory=list)
    budgets: list[BudgetSpec] = field(default_factory=list)
    owners: dict[str, Owner] = field(default_factory=dict)
    fail_open: bool = True  # every rule involved says on_error: open
    input_tokens: int = 0
    output_tokens: int = 0
    estimated_usd: float = 0.0
    price_known: bool = True

    @property
    def empty(self) -> bool:
        return not self.limits and not self.budgets

    @property
    def token_keys(self) -> list[str]:
        return [k for k, o in self.owners.items() if o.kind == "tokens"]

    @property
    def budget_keys(self) -> list[str]:
        return [k for k, o in self.owners.items() if o.kind == "budget"]


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a request is expected to cost before its response says what it did."""

    input_tokens: int
    output_tokens: int
    usd: float
    price_known: bool


def estimate(req: LlmRequest, catalog: Catalog, settings: Settings) -> Estimate:
    """Prompt tokens from the text, output tokens from max_tokens or the default, at list price."""
    tokens_in = estimate_request_tokens(req)
    tokens_out = req.max_tokens or settings.default_output_tokens
    # Priced as the model the request is judged as: an Azure deployment's model (catalog).
    cost = catalog.estimate_cost(
        catalog.judged_model(req.model, req.deployment), tokens_in, tokens_out
    )
    if cost is not None:
        return Estimate(tokens_in, tokens_out, cost, True)
    guess = (
        tokens_in * settings.unknown_input_per_mtok + tokens_out * settings.unknown_output_per_mtok
    ) / 1e6
    return Estimate(tokens_in, tokens_out, guess, False)


def needs_state(es: EffectiveSet) -> bool:
    """Whether any limiter or budget could apply in this scope (decided once per scope)."""
    if bool(es.rules_of(RateLimitRule)) or bool(es.rules_of(CostBudgetRule)):
        return True
    return any(e.rule.max_cost_per_day for e in es.rules_of(ModelAccessRule))


def needs_usage(es: EffectiveSet) -> bool:
    """Whether a limiter or budget of this scope is settled from the response's usage.

    Budgets and token limits reserve an estimate that the real usage replaces; request counts
    are final when admitted, so a scope with only those need not see the response.
    """
    if es.rules_of(CostBudgetRule):
        return True
    if any(e.rule.tokens for e in es.rules_of(RateLimitRule)):
        return True
    return any(e.rule.max_cost_per_day for e in es.rules_of(ModelAccessRule))


def _subject(ctx: RequestContext, per: str, e: EffectiveRule) -> str:
    value = {"user": ctx.user, "team": ctx.team, "org": ctx.org}[per]
    if not value:
        raise MissingIdentity(
            f"rule '{e.rule.id}' of policy '{e.policy_name}' limits per {per}, but the request "
            f"names no {per} (header {_HEADER[per]} or a verified token claim)"
        )
    return value


def plan(
    es: EffectiveSet,
    ctx: RequestContext,
    catalog: Catalog,
    settings: Settings,
    now: float,
    est: Estimate | None = None,
) -> Plan:
    """Every limiter and budget this request must pass, with its estimated tokens and cost
    (``est``, when the caller has estimated the request already)."""
    p = Plan()
    req = ctx.request
    if req is None:
        return p
    if est is None:
        est = estimate(req, catalog, settings)
    p.input_tokens, p.output_tokens = est.input_tokens, est.output_tokens
    p.estimated_usd, p.price_known = est.usd, est.price_known
    tokens = p.input_tokens + p.output_tokens
    for e in es.rules_of(RateLimitRule):
        rl = e.rule
        p.fail_open &= rl.on_error == "open"
        for per in rl.per:
            subject = _subject(ctx, per, e)
            base = f"rl:{per}:{subject}:{e.policy_name}:{rl.id}"
            if rl.requests is not None:
                key = f"{base}:req"
                p.limits.append(LimitSpec(key, rl.requests, rl.window_s, rl.burst, 1))
                p.owners[key] = Owner(e, per, subject, "requests")
            if rl.tokens is not None:
                key = f"{base}:tok"
                p.limits.append(LimitSpec(key, rl.tokens, rl.window_s, 0, tokens, estimated=True))
                p.owners[key] = Owner(e, per, subject, "tokens")
    for eb in es.rules_of(CostBudgetRule):
        cb = eb.rule
        p.fail_open &= cb.on_error == "open"
        for per in cb.per:
            _budget(
                p,
                eb,
                ctx,
                per,
                cb.period,
                cb.limit_usd,
                cb.action == "block",
                cb.alert_at,
                settings,
                now,
                cb.id,
            )
    for em in es.rules_of(ModelAccessRule):
        ma = em.rule
        if ma.max_cost_per_day is None:
            continue
        roles = roles_of(em)  # canonical, as the request's roles are
        if roles is not None and not ctx.roles.intersection(roles):
            continue
        # The seed's shorthand: a per-user daily budget, enforced, alerting at 50/80/100 %.
        p.fail_open = False
        _budget(
            p,
            em,
            ctx,
            "user",
            "day",
            ma.max_cost_per_day,
            True,
            (0.5, 0.8, 1.0),
            settings,
            now,
            f"{ma.id}.max_cost_per_day",
        )
    return p


def _budget(
    p: Plan,
    e: EffectiveRule,
    ctx: RequestContext,
    per: str,
    period: Period,
    limit: float,
    enforce: bool,
    alert_at: tuple[float, ...],
    settings: Settings,
    now: float,
    rule_id: str,
) -> None:
    subject = _subject(ctx, per, e)
    bp = budget_period(period, now, settings.time_zone)
    key = f"b:{per}:{subject}:{e.policy_name}:{rule_id}:{bp.label}"
    p.budgets.append(BudgetSpec(key, limit, p.estimated_usd, bp.expires_at, enforce))
    p.owners[key] = Owner(e, per, subject, "budget", bp.end, alert_at, period)


def fallback_cost(settings: Settings, usage: Usage) -> float:
    """The cost of ``usage`` of a model the catalog does not price."""
    return (
        usage.input_tokens * settings.unknown_input_per_mtok
        + usage.output_tokens * settings.unknown_output_per_mtok
    ) / 1e6


def price(catalog: Catalog, settings: Settings, model: str, usage: Usage) -> float:
    """What ``usage`` of ``model`` cost: at the catalog's price, else at the fallback's."""
    cost = catalog.cost(model, usage)
    return fallback_cost(settings, usage) if cost is None else cost


def _fire(o: Owner, action: str, reason: str) -> Fired:
    e = o.rule
    return Fired(e.policy_name, e.rule.id, e.rule.type, action, reason, e.policy.policy.mode)


@dataclass(slots=True)
class Outcome:
    fired: list[Fired] = field(default_factory=list)
    throttle: Throttle | None = None
    alerts: list[str] = field(default_factory=list)


def outcome(p: Plan, adm: Admission, now: float) -> Outcome:
    """Firings, 429 figures and alerts of one admission."""
    out = Outcome()
    for b in adm.budgets:
        o = p.owners[b.key]
        for t in b.crossed(o.alert_at):
            out.alerts.append(
                f"budget {o.rule.policy_name}/{o.rule.rule.id} per {o.per} "
                f"{o.subject}: {t:.0%} of ${b.limit_usd:.2f} reached "
                f"(${b.spent_after_usd:.2f})"
            )
        if not b.enforce and b.fraction > 1.0:
            out.fired.append(
                _fire(o, "notify", f"budget ${b.limit_usd:.2f} per {o.per} exceeded (notify only)")
            )
    if adm.admitted:
        tight = adm.tightest
        if tight is not None:
            out.throttle = Throttle(
                tight.limit, max(0, min(tight.remaining, tight.limit)), tight.reset_after_s, 0.0
            )
        return out
    key = adm.denied_by or ""
    denied = p.owners.get(key)
    if denied is None:
        return out
    o = denied
    if o.kind == "budget":
        b = next(x for x in adm.budgets if x.key == key)
        wait = max(1.0, o.period_end - now)
        reason = (
            f"{_period_word(o)} budget of ${b.limit_usd:.2f} per {o.per} reached "
            f"(${b.spent_before_usd:.2f} spent, this request needs ~${p.estimated_usd:.4f})"
        )
        out.fired.append(_fire(o, "throttle", reason))
        out.throttle = Throttle(math.ceil(b.limit_usd), 0, wait, wait, "budget_exceeded")
        out.alerts.append(
            f"blocked by budget {o.rule.policy_name}/{o.rule.rule.id} per {o.per} {o.subject}"
        )
        return out
    state = next(x for x in adm.limits if x.key == key)
    rl = o.rule.rule
    assert isinstance(rl, RateLimitRule)
    unit = "requests" if o.kind == "requests" else "tokens"
    if math.isinf(state.retry_after_s):
        # More tokens than the limit allows at once: waiting will never help.
        out.fired.append(
            _fire(
                o,
                "block",
                f"request needs more {unit} than the limit of "
                f"{state.limit} per {rl.window} per {o.per} allows",
            )
        )
        return out
    out.fired.append(
        _fire(
            o,
            "throttle",
            f"rate limit of {state.limit} {unit} per {rl.window} per {o.per} exceeded",
        )
    )
    out.throttle = Throttle(state.limit, 0, state.reset_after_s, state.retry_after_s)
    return out


def _period_word(o: Owner) -> str:
    return "daily" if o.period == "day" else "monthly"
