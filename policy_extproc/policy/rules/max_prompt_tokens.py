"""``max_prompt_tokens``: refuse a request whose estimated prompt tokens exceed a number.

The estimate is the one rate limits, budgets and approvals charge before the provider counts
(``llm.tokens.estimate_request_tokens``: the text of every part plus per-message framing), so
a prompt is judged the same way by every rule. ``action: throttle`` answers 429 as a rate limit
does (code ``rate_limited``); ``block`` (the default) answers 403. ``models`` scopes the rule
to requests for those models (globs; any of the model's spellings). The reason names the
estimate and the limit, never the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...llm.tokens import estimate_request_tokens
from .. import fields as f
from ..compiler import EffectiveSet
from ..decision import RequestContext
from ..findings import Findings
from ..model import Rule
from .kind import Field, RuleKind


@dataclass(frozen=True, slots=True)
class MaxPromptTokensRule(Rule):
    max_tokens: int = 1
    action: Literal["block", "throttle"] = "block"
    models: tuple[str, ...] | None = None

    type = "max_prompt_tokens"


def check_prompt_size(es: EffectiveSet, ctx: RequestContext, out: Findings) -> None:
    """Fire each rule in force whose limit the request's estimated prompt tokens exceed."""
    rules = es.rules_of(MaxPromptTokensRule)
    if not rules or ctx.request is None:
        return
    tokens = estimate_request_tokens(ctx.request)
    for e in rules:
        rule = e.rule
        if tokens <= rule.max_tokens:
            continue
        if rule.models is not None and not es.matches_model(
            rule.models, ctx.model, any_spelling=True
        ):
            continue
        reason = (f"prompt of ~{tokens} tokens (estimated) is over the limit of "
                  f"{rule.max_tokens} of rule '{rule.id}'")  # fmt: skip
        out.fire(e, rule.action, reason)


KIND = RuleKind(
    MaxPromptTokensRule,
    {
        "max_tokens": Field(f.integer(1), required=True),
        "action": Field(f.one_of("block", "throttle")),
        "models": Field(f.string_list(f.glob)),
    },
    check_request=check_prompt_size,
)
