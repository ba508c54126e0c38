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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ..policy.rules.cost_budget import CostBudgetRule
from ..policy.rules.rate_limit import WINDOWS, RateLimitRule
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


def period_starts(now: float, tz: str) -> tuple[float, float]:
    """Epoch seconds at which today and this month began, in ``tz``."""
    local = datetime.fromtimestamp(now, ZoneInfo(tz))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp(), day.replace(day=1).timestamp()


Key = tuple[str, str, str, str]  # org, team, environment, user


def since(now: float, tz: str) -> float:
    """The oldest decision the figures read: the start of the month, or a day back."""
    return min(period_starts(now, tz)[1], now - WINDOWS["day"])


def compute(
    index: DecisionIndex | Iterable[Entry],
    policies: PolicySet | None,
    *,
    now: float | None = None,
    tz: str = "UTC",
) -> Spend:
    """Two steps: one pass over this month's decisions adds them up per (org, team,
    environment, user); then the budgets and limits in force for each such key are applied to
    its sums. So the cost is one cheap pass, whatever the number of rules."""
    now = time.time() if now is None else now
    day_start, month_start = period_starts(now, tz)
    windows = sorted(WINDOWS.items(), key=lambda kv: kv[1])
    cost: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0])  # today, this month
    requests: dict[Key, list[int]] = defaultdict(lambda: [0] * len(windows))
    tokens: dict[Key, list[int]] = defaultdict(lambda: [0] * len(windows))
    blocked: Counter[str] = Counter()
    out = Spend()
    # A list taken on the event loop when called from a thread: the index changes under it.
    entries = index.since(since(now, tz)) if isinstance(index, DecisionIndex) else index
    for e in entries:
        if e.ts < month_start and now - e.ts > WINDOWS["day"]:
            break
        out.entries += 1
        key = (e.org, e.team, e.environment, e.user)
        if e.cost_usd and e.ts >= month_start:
            acc = cost[key]
            acc[1] += e.cost_usd
            if e.ts >= day_start:
                acc[0] += e.cost_usd
        age = now - e.ts
        if age > WINDOWS["day"]:
            continue
        counted = e.phase == "request" and e.decision not in ("throttle", "block")
        for n, (_, seconds) in enumerate(windows):
            if age <= seconds:
                if counted:
                    requests[key][n] += 1
                if e.tokens:
                    tokens[key][n] += e.tokens
        if e.decision == "block" and e.phase == "request":
            for r in e.rules or (f"{e.policy}/-",):
                blocked[r] += 1
    _totals(out, cost)
    _apply(out, policies, cost, requests, tokens, [w for w, _ in windows])
    out.blocked = blocked.most_common(10)
    return out


def _totals(out: Spend, cost: dict[Key, list[float]]) -> None:
    sums: dict[str, dict[str, list[float]]] = {"org": {}, "team": {}, "user": {}}
    for (org, team, _, user), (today, month) in cost.items():
        for per, value in (("org", org), ("team", team), ("user", user)):
            if not value:
                continue
            name = value if per == "org" else f"{value} ({org})"
            acc = sums[per].setdefault(name, [0.0, 0.0])
            acc[0] += today
            acc[1] += month
    out.by_org = {k: (v[0], v[1]) for k, v in sorted(sums["org"].items())}
    out.by_team = {k: (v[0], v[1]) for k, v in sorted(sums["team"].items())}
    out.by_user = {k: (v[0], v[1]) for k, v in sorted(sums["user"].items())}


def _subject(per: str, key: Key) -> str | None:
    org, team, _, user = key
    value = {"user": user, "team": team, "org": org}[per]
    if not value:
        return None
    return f"org {org}" if per == "org" else f"{per} {value} ({org})"


def _apply(
    out: Spend,
    policies: PolicySet | None,
    cost: dict[Key, list[float]],
    requests: dict[Key, list[int]],
    tokens: dict[Key, list[int]],
    windows: list[str],
) -> None:
    if policies is None or policies.snapshot is None:
        return
    snapshot = policies.snapshot
    budget: dict[tuple[str, str, str], float] = defaultdict(float)
    limit_n: dict[tuple[str, str, str], int] = defaultdict(int)
    limit_t: dict[tuple[str, str, str], int] = defaultdict(int)
    rules: dict[tuple[str, str], CostBudgetRule | RateLimitRule] = {}
    for key in cost.keys() | requests.keys() | tokens.keys():
        es = snapshot.resolve(key[0], key[1], key[2])
        for e in es.rules_of("cost_budget"):
            rule = e.rule
            assert isinstance(rule, CostBudgetRule)
            rules[(e.policy_name, rule.id)] = rule
            spent = cost.get(key, (0.0, 0.0))[0 if rule.period == "day" else 1]
            for per in rule.per:
                subject = _subject(per, key)
                if subject and spent:
                    budget[(e.policy_name, rule.id, subject)] += spent
        for e in es.rules_of("rate_limit"):
            rule = e.rule
            assert isinstance(rule, RateLimitRule)
            rules[(e.policy_name, rule.id)] = rule
            n = windows.index(rule.window)
            got_n = requests.get(key, [0] * len(windows))[n]
            got_t = tokens.get(key, [0] * len(windows))[n]
            for per in rule.per:
                subject = _subject(per, key)
                if subject and (got_n or got_t):
                    limit_n[(e.policy_name, rule.id, subject)] += got_n
                    limit_t[(e.policy_name, rule.id, subject)] += got_t
    for (policy, rule_id, subject), spent in budget.items():
        b = rules[(policy, rule_id)]
        assert isinstance(b, CostBudgetRule)
        out.budgets.append(BudgetRow(policy, rule_id, subject, b.period, spent, b.limit_usd))
    out.budgets.sort(key=lambda row: (-row.fraction, row.subject))
    for key3 in limit_n.keys() | limit_t.keys():
        r = rules[(key3[0], key3[1])]
        assert isinstance(r, RateLimitRule)
        out.limits.append(LimitRow(key3[0], key3[1], key3[2], r.window, limit_n[key3],
                                   r.requests, limit_t[key3], r.tokens))  # fmt: skip
    out.limits.sort(key=lambda row: (-_used(row), row.subject))


def _used(row: LimitRow) -> float:
    n = row.requests / row.requests_limit if row.requests_limit else 0.0
    t = row.tokens / row.tokens_limit if row.tokens_limit else 0.0
    return max(n, t)
