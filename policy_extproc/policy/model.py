"""The policy language as values: policies, scopes and the eight rule types of DESIGN.md s5.

Everything here is immutable and validated by ``loader``; nothing here parses or evaluates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .identity import canonical

Action = Literal["allow", "modify", "throttle", "escalate", "block"]

# The decision is the most severe action among the rules that fire (DESIGN.md s5).
SEVERITY: Mapping[str, int] = {"allow": 0, "modify": 1, "throttle": 2, "escalate": 3, "block": 4}

SCOPE_KEYS = ("org", "team", "environment")
WINDOWS: Mapping[str, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
PER = ("user", "team", "org")
FRAMEWORKS = ("SOC2", "GDPR", "HIPAA", "PCI")


@dataclass(frozen=True, slots=True)
class Scope:
    """Which requests a policy applies to; a missing key matches any value."""

    org: str | None = None
    team: str | None = None
    environment: str | None = None

    @property
    def keys(self) -> tuple[str | None, str | None, str | None]:
        return (self.org, self.team, self.environment)

    @property
    def specificity(self) -> tuple[int, tuple[int, ...]]:
        """Sort key, least specific first: more keys named, then the deeper levels named."""
        levels = tuple(sorted((i for i, v in enumerate(self.keys) if v is not None), reverse=True))
        return (len(levels), levels)

    def matches(self, org: str, team: str, environment: str) -> bool:
        # Identity values compare canonically (policy.identity): ACME is acme.
        return all(
            v is None or canonical(v) == canonical(value)
            for v, value in zip(self.keys, (org, team, environment), strict=True)
        )

    def overlaps(self, other: Scope) -> bool:
        """Whether some request could match both scopes."""
        pairs = zip(self.keys, other.keys, strict=True)
        return all(a is None or b is None or canonical(a) == canonical(b) for a, b in pairs)

    def __str__(self) -> str:
        named = [f"{k}={v}" for k, v in zip(SCOPE_KEYS, self.keys, strict=True) if v is not None]
        return ", ".join(named) or "everyone"


@dataclass(frozen=True, slots=True)
class Rule:
    """Fields every rule has; ``index`` is 1-based within its policy, ``line`` in its file."""

    id: str
    index: int
    line: int
    final: bool
    alert: bool = True  # false: an enforced block or escalation by this rule alerts nobody

    type = "rule"


@dataclass(frozen=True, slots=True)
class ModelAccessRule(Rule):
    models: tuple[str, ...] | None = None
    deny_models: tuple[str, ...] = ()
    roles: tuple[str, ...] | None = None
    max_cost_per_day: float | None = None
    action: Literal["block", "allow"] = "block"

    type = "model_access"


@dataclass(frozen=True, slots=True)
class RateLimitRule(Rule):
    per: tuple[str, ...] = ("user",)
    requests: int | None = None
    tokens: int | None = None
    window: str = "minute"
    burst: int = 0
    on_error: Literal["open", "closed"] = "closed"
    action: Literal["throttle"] = "throttle"

    type = "rate_limit"

    @property
    def window_s(self) -> float:
        return WINDOWS[self.window]


@dataclass(frozen=True, slots=True)
class CostBudgetRule(Rule):
    limit_usd: float = 0.0
    per: tuple[str, ...] = ("user",)
    period: Literal["day", "month"] = "day"
    action: Literal["block", "notify"] = "block"
    alert_at: tuple[float, ...] = (0.5, 0.8, 1.0)
    on_error: Literal["open", "closed"] = "closed"

    type = "cost_budget"


@dataclass(frozen=True, slots=True)
class SemanticTopic:
    """A topic matched by meaning (``match: semantic``): what it means, by example; ``threshold``
    None is the classifier's default. A phrase topic stays a plain tuple of phrases."""

    examples: tuple[str, ...]
    threshold: float | None = None

    def __iter__(self) -> Iterator[str]:
        # Code that reads a topic as its phrases (the phrase database, the stream holdback)
        # sees a semantic topic as having none: its examples are meanings, never literals.
        return iter(())


@dataclass(frozen=True, slots=True)
class ContentFilterRule(Rule):
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    topics: Mapping[str, tuple[str, ...] | SemanticTopic] = field(default_factory=dict)
    action: Literal["block", "redact"] = "block"
    direction: Literal["request", "response", "both"] = "request"
    case_sensitive: bool = False
    whole_words: bool = True

    type = "content_filter"


@dataclass(frozen=True, slots=True)
class PiiRule(Rule):
    entities: tuple[str, ...] | None = None
    action: Literal["mask", "block"] = "mask"
    style: Literal["placeholder", "partial", "hash"] = "placeholder"
    allow: tuple[str, ...] = ()
    direction: Literal["request", "response", "both"] = "both"
    min_score: float = 0.5
    # Regions whose national formats (no "+") are phone numbers; None: the detector's default.
    regions: tuple[str, ...] | None = None

    type = "pii"


@dataclass(frozen=True, slots=True)
class PromptInjectionRule(Rule):
    """Prompt injection and jailbreaks (OWASP LLM01), in the prompt's parts (tool results and
    documents included) and, with ``direction`` response or both, in the answer."""

    action: Literal["block", "log"] = "block"
    sensitivity: Literal["low", "medium", "high"] = "medium"
    direction: Literal["request", "response", "both"] = "request"

    type = "prompt_injection"


@dataclass(frozen=True, slots=True)
class ApprovalRule(Rule):
    models: tuple[str, ...] = ()
    min_estimated_cost_usd: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    ttl_s: float = 3600.0
    action: Literal["escalate"] = "escalate"

    type = "approval"


@dataclass(frozen=True, slots=True)
class FailoverRule(Rule):
    provider: str = ""
    fallbacks: tuple[str, ...] = ()
    failure_threshold: int = 5
    failure_ratio: float | None = None
    min_requests: int = 10
    window_s: float = 30.0
    cooldown_s: float = 60.0
    action: Literal["reroute"] = "reroute"

    type = "failover"


@dataclass(frozen=True, slots=True)
class ComplianceRule(Rule):
    framework: str = "SOC2"
    mode: Literal["enforce", "log"] = "enforce"

    type = "compliance"


RULE_TYPES: Mapping[str, type[Rule]] = {
    cls.type: cls
    for cls in (
        ModelAccessRule,
        RateLimitRule,
        CostBudgetRule,
        ContentFilterRule,
        PiiRule,
        ApprovalRule,
        FailoverRule,
        ComplianceRule,
        PromptInjectionRule,
    )
}


@dataclass(frozen=True, slots=True)
class Policy:
    """One named policy: who it applies to and its rules, in file order."""

    name: str
    scope: Scope
    rules: tuple[Rule, ...]
    mode: Literal["enforce", "log"] = "enforce"
    compliance: tuple[str, ...] = ()
    description: str = ""
    file: str = "<memory>"
    line: int = 1
    # Accept prompts given as token ids (/v1/completions, /v1/embeddings): no rule can read
    # them, so they are refused unless a policy that applies to the request says so.
    allow_token_prompts: bool = False


def allows_token_prompts(policies: Iterable[Policy]) -> bool:
    """Whether any of the policies applying to a request accepts token-id prompts."""
    return any(p.allow_token_prompts for p in policies)
