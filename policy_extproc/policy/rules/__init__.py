"""The rule types of the policy language, one module each: ``KINDS`` is the registry.

A module declares its ``KIND`` (``rules.kind.RuleKind``): the rule class (which answers the
compiler: what it builds, which patterns it scans for, whether it reads the response), its
fields (the loader and the JSON Schema derive from them), a cross-field check, its request
and response checks, and the shared state it needs. Adding a rule type is adding a module and
its line below; the order is the order of the checks, and of the types in messages.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import (
    approval,
    compliance,
    content_filter,
    cost_budget,
    failover,
    max_prompt_tokens,
    model_access,
    pii,
    prompt_injection,
    rate_limit,
)
from .kind import Field, RuleKind

KINDS: tuple[RuleKind, ...] = (
    model_access.KIND,
    rate_limit.KIND,
    cost_budget.KIND,
    content_filter.KIND,
    pii.KIND,
    approval.KIND,
    failover.KIND,
    compliance.KIND,
    prompt_injection.KIND,
    max_prompt_tokens.KIND,
)

BY_NAME: Mapping[str, RuleKind] = {k.name: k for k in KINDS}

__all__ = ["BY_NAME", "KINDS", "Field", "RuleKind"]
