"""``cost_budget``: spend per day or month, per user, team or organisation.

Checked against shared state by ``enforce.limits`` (a budget reserved per request, settled by
the real usage); the pure evaluation has nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import fields as f
from ..model import Rule
from .kind import ON_ERROR, Field, RuleKind


@dataclass(frozen=True, slots=True)
class CostBudgetRule(Rule):
    limit_usd: float = 0.0
    per: tuple[str, ...] = ("user",)
    period: Literal["day", "month"] = "day"
    action: Literal["block", "notify"] = "block"
    alert_at: tuple[float, ...] = (0.5, 0.8, 1.0)
    on_error: Literal["open", "closed"] = "closed"

    type = "cost_budget"


KIND = RuleKind(
    CostBudgetRule,
    {
        "per": Field(f.per),
        "limit_usd": Field(f.number(0.0, exclusive=True), required=True),
        "period": Field(f.one_of("day", "month")),
        "action": Field(f.one_of("block", "notify")),
        "alert_at": Field(f.string_list(f.fraction, allow_empty=True)),
        "on_error": Field(ON_ERROR),
    },
    state=("budget",),
)
