"""``approval``: models, an estimated cost or request tags that need a person's approval.

Checked by ``enforce.approvals`` (an approval opened, presented and used in shared state).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .. import fields as f
from ..model import Rule
from .kind import Field, RuleKind


@dataclass(frozen=True, slots=True)
class ApprovalRule(Rule):
    models: tuple[str, ...] = ()
    min_estimated_cost_usd: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    ttl_s: float = 3600.0
    action: Literal["escalate"] = "escalate"

    type = "approval"


def _check(r: ApprovalRule) -> str | None:
    if not r.models and r.min_estimated_cost_usd is None and not r.tags:
        return "needs at least one trigger: 'models', 'min_estimated_cost_usd' or 'tags'"
    return None


KIND = RuleKind(
    ApprovalRule,
    {
        "models": Field(f.string_list(f.glob)),
        "min_estimated_cost_usd": Field(f.number(0.0)),
        "tags": Field(f.str_mapping),
        "ttl": Field(f.duration, "ttl_s"),
        "action": Field(f.one_of("escalate")),
    },
    check=_check,
    state=("approval",),
)
