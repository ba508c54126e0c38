"""Spend and limits, from the decisions the dashboard holds: spend today and this month against
every budget in force, requests and tokens in the current window against every rate limit, and
the rules that block most.

These figures come from the audit records (the cost and usage of each answer), over what the
capped stream holds; the sidecars' counters in shared state are what enforcement uses. Which
budget or limit applies to a request is decided by the sidecar's own compiler (``resolve``), so
an overridden or inherited rule counts where the sidecar would count it.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ..policy.model import WINDOWS, CostBudgetRule, RateLimitRule
from .decisions import DecisionIndex, Entry
from .policies import PolicySet


@dataclass(frozen=True, slots=True)
class BudgetRow:
    policy: str
    rule: str
    subject: str  # "team ml (acme)"
    period: str
    spent: float
    limit: float

    @property
    def fraction(self) -> float:
        return self.spent / self.limit if self.limit else 0.0


@dataclass(frozen=True, slots=True)
class LimitRow:
    policy: str
    rule: str
    subject: str
    window: str
    requests: int
    requests_limit: int | None
    tokens: int
    tokens_limit: int | None


@dataclass
class Spend:
    """Everything the Spend and limits page shows."""

    by_org: dict[str, tuple[float, float]] = field(default_factory=dict)  # (today, month)
    by_team: dict[str, tuple[float, float]] = field(default_factory=dict)
    by_user: dict[str, tuple[float, float]] = field(default_factory=dict)
    budgets: list[BudgetRow] = field(default_factory=list)
    limits: list[LimitRow] = field(default_factory=list)
    blocked: list[tuple[str, int]] = field(default_factory=list)
    entries: int = 0


def _subject(per: str, e: Entry) -> str | None:
    value = {"user": e.user, "team": e.team, "org": e.org}[per]
    if not value:
        return None
    return f"{per} {value}" if per == "org" else f"{per} {value} ({e.org})"


def period_starts(now: float, tz: str) -> tuple[float, float]:
    """Epoch seconds at which today and this month began, in ``tz``."""
    local = datetime.fromtimestamp(now, ZoneInfo(tz))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp(), day.replace(day=1).timestamp()


def compute(
    index: DecisionIndex, policies: PolicySet | None, *, now: float | None = None, tz: str = "UTC"
) -> Spend:
    """One pass over this month's decisions (newest first)."""
    now = time.time() if now is None else now
    day_start, month_start = period_starts(now, tz)
    out = Spend()
    totals: dict[str, dict[str, list[float]]] = {"org": {}, "team": {}, "user": {}}
    budget: dict[tuple[str, str, str, str], float] = defaultdict(float)
    limit_n: dict[tuple[str, str, str], int] = defaultdict(int)
    limit_t: dict[tuple[str, str, str], int] = defaultdict(int)
    blocked: Counter[str] = Counter()
    in_force: dict[tuple[str, str, str], list[tuple[str, str, object]]] = {}
    rules: dict[tuple[str, str], object] = {}

    def applying(e: Entry) -> list[tuple[str, str, object]]:
        key = (e.org, e.team, e.environment)
        found = in_force.get(key)
        if found is None:
            found = []
            if policies is not None and policies.snapshot is not None:
                es = policies.snapshot.resolve(*key)
                for r in (*es.rules_of("cost_budget"), *es.rules_of("rate_limit")):
                    found.append((r.policy_name, r.rule.id, r.rule))
                    rules[(r.policy_name, r.rule.id)] = r.rule
            in_force[key] = found
        return found

    for e in index.since(min(month_start, now - WINDOWS["day"])):
        out.entries += 1
        if e.decision == "block" and e.phase == "request" and e.ts >= now - WINDOWS["day"]:
            for r in e.rules or (f"{e.policy}/-",):
                blocked[r] += 1
        for policy, rule_id, rule in applying(e):
            if isinstance(rule, CostBudgetRule) and e.cost_usd:
                start = day_start if rule.period == "day" else month_start
                if e.ts >= start:
                    for per in rule.per:
                        subject = _subject(per, e)
                        if subject:
                            budget[(policy, rule_id, subject, rule.period)] += e.cost_usd
            elif isinstance(rule, RateLimitRule) and e.ts >= now - rule.window_s:
                for per in rule.per:
                    subject = _subject(per, e)
                    if not subject:
                        continue
                    if e.phase == "request" and e.decision not in ("throttle", "block"):
                        limit_n[(policy, rule_id, subject)] += 1
                    limit_t[(policy, rule_id, subject)] += e.tokens
        if e.cost_usd and e.ts >= month_start:
            for per in ("org", "team", "user"):
                value = {"org": e.org, "team": e.team, "user": e.user}[per]
                if not value:
                    continue
                name = value if per == "org" else f"{value} ({e.org})"
                acc = totals[per].setdefault(name, [0.0, 0.0])
                acc[1] += e.cost_usd
                if e.ts >= day_start:
                    acc[0] += e.cost_usd
    out.by_org = {k: (v[0], v[1]) for k, v in sorted(totals["org"].items())}
    out.by_team = {k: (v[0], v[1]) for k, v in sorted(totals["team"].items())}
    out.by_user = {k: (v[0], v[1]) for k, v in sorted(totals["user"].items())}
    for (policy, rule_id, subject, period), spent in budget.items():
        rule = rules[(policy, rule_id)]
        assert isinstance(rule, CostBudgetRule)
        out.budgets.append(BudgetRow(policy, rule_id, subject, period, spent, rule.limit_usd))
    out.budgets.sort(key=lambda b: -b.fraction)
    for policy, rule_id, subject in limit_n.keys() | limit_t.keys():
        rule = rules[(policy, rule_id)]
        assert isinstance(rule, RateLimitRule)
        key = (policy, rule_id, subject)
        out.limits.append(LimitRow(policy, rule_id, subject, rule.window, limit_n.get(key, 0),
                                   rule.requests, limit_t.get(key, 0), rule.tokens))  # fmt: skip
    out.limits.sort(key=lambda r: (-(r.requests / r.requests_limit if r.requests_limit else 0),
                                   r.subject))  # fmt: skip
    out.blocked = blocked.most_common(10)
    return out
