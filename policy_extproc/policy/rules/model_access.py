"""``model_access``: the models a scope may call (allow and deny globs), by role.

Its ``max_cost_per_day`` shorthand is a per-user daily budget, checked with the budgets
(``enforce.limits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...llm import model_names
from .. import fields as f
from ..compiler import EffectiveRule, EffectiveSet
from ..decision import RequestContext
from ..findings import Findings
from ..identity import canonical
from ..model import Policy, Rule, Secrets
from .kind import Field, RuleKind

_MODEL_CACHE_LIMIT = 4096  # model names come from clients: bound what is remembered


@dataclass(frozen=True, slots=True)
class ModelAccessRule(Rule):
    models: tuple[str, ...] | None = None
    deny_models: tuple[str, ...] = ()
    roles: tuple[str, ...] | None = None
    max_cost_per_day: float | None = None
    action: Literal["block", "allow"] = "block"

    type = "model_access"

    def build(self, policy: Policy, secrets: Secrets) -> frozenset[str] | None:
        """Its roles, canonical (a request's roles are, see context); None: everyone."""
        return None if self.roles is None else frozenset(canonical(r) for r in self.roles)


def roles_of(e: EffectiveRule[ModelAccessRule]) -> frozenset[str] | None:
    """The canonical roles ``e`` applies to (None: everyone), as compiled."""
    roles = e.built
    assert roles is None or isinstance(roles, frozenset)
    return roles


def _shown(model: str) -> str:
    """A client's model name as reasons quote it: bounded, whatever the client sent."""
    return repr(model if len(model) <= 80 else model[:77] + "...")


def check_models(es: EffectiveSet, ctx: RequestContext, out: Findings) -> None:
    """Allow and deny lists against the model the request is judged as (``ctx.model``).

    That name is canonical and, for an Azure deployment, the deployment's model (context.py);
    deny lists also see the model's other spellings, allow lists only the canonical name.
    """
    req = ctx.request
    if req is None:
        return
    deployment = req.deployment
    model = ctx.model
    if not model:  # a context built by hand, without a catalog
        model = model_names.canonical(deployment if deployment is not None else req.model)
    key = (model, deployment, ctx.roles)
    cached = es.model_cache.get(key)
    if cached is None:
        shown = _shown(model)
        if deployment is not None:
            shown = f"{shown} (deployment {_shown(deployment)})"
        fired: list[tuple[EffectiveRule, str, str]] = []
        for e in es.rules_of(ModelAccessRule):
            rule = e.rule
            roles = roles_of(e)
            if roles is not None and not ctx.roles.intersection(roles):
                continue
            if rule.deny_models and es.matches_model(rule.deny_models, model, any_spelling=True):
                fired.append((e, "block", f"model {shown} is denied"))
            elif rule.models is not None and rule.action == "block":
                if not model:
                    fired.append((e, "block", "the request names no model"))
                elif not es.matches_model(rule.models, model):
                    allowed = ", ".join(rule.models)
                    why = f"model {shown} is not allowed (allowed: {allowed})"
                    fired.append((e, "block", why))
        cached = tuple(fired)
        if len(es.model_cache) >= _MODEL_CACHE_LIMIT:
            es.model_cache.clear()
        es.model_cache[key] = cached
    for e, action, reason in cached:
        out.fire(e, action, reason)


KIND = RuleKind(
    ModelAccessRule,
    {
        "models": Field(f.string_list(f.glob)),
        "deny_models": Field(f.string_list(f.glob)),
        "roles": Field(f.string_list()),
        "max_cost_per_day": Field(f.number(0.0, exclusive=True)),
        "action": Field(f.one_of("block", "allow")),
    },
    check_request=check_models,
    state=("budget",),  # max_cost_per_day
)
