"""The policy language as values: policies, scopes, and what every rule has.

Each rule type is a kind in ``policy.rules`` (one module per type, subclassing ``Rule``).
Everything here is immutable and validated by ``loader``; nothing here parses or evaluates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from .identity import canonical

if TYPE_CHECKING:
    from ..detect.semantic.embedder import Embedder
    from ..detect.semantic.injection import InjectionDetector

Action = Literal["allow", "modify", "throttle", "escalate", "block"]

# The decision is the most severe action among the rules that fire (DESIGN.md s5).
SEVERITY: Mapping[str, int] = {"allow": 0, "modify": 1, "throttle": 2, "escalate": 3, "block": 4}

SCOPE_KEYS = ("org", "team", "environment")
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

    def overlaps(self, other: Scope) -> bool:
        """Whether some request could match both scopes."""
        pairs = zip(self.keys, other.keys, strict=True)
        return all(a is None or b is None or canonical(a) == canonical(b) for a, b in pairs)

    def __str__(self) -> str:
        named = [f"{k}={v}" for k, v in zip(SCOPE_KEYS, self.keys, strict=True) if v is not None]
        return ", ".join(named) or "everyone"


class Models(Protocol):
    """The semantic guards' models, read by the edge (``sources.models.ShippedModels``) when a
    compile first asks for them; the core never reads a model's files."""

    def embedder(self, name: str = ...) -> Embedder:
        """A shipped static embedding model (topics use the default one)."""
        ...

    def injection(self) -> InjectionDetector:
        """The prompt-injection detector, with its exemplar library (one per process)."""
        ...

    def one_blas_thread(self) -> bool:
        """Whether the process's BLAS runs on one thread (the topics' products are then one
        call each, not blocks small enough for one thread)."""
        ...


@dataclass(frozen=True, slots=True)
class Secrets:
    """What compiling a policy set needs that is not in the policies, read by the edge and
    handed in, so the core reads no environment, file or clock: the pseudonym key and the
    current year (``sources.secrets``), and the semantic guards' models (``sources.models``).
    ``models`` is not compared: two snapshots with the same keys and year compile alike."""

    pii_hash_key: bytes | None = None  # the pseudonym key of pii rules with style: hash
    # The year it is (PII detectors: a birth date lies in no later year). A snapshot is built
    # for one year: the store compiles again when the year turns. None: not known, no bound.
    year: int | None = None
    models: Models | None = field(default=None, compare=False)

    def __repr__(self) -> str:  # never print a key
        return (f"Secrets(pii_hash_key={'set' if self.pii_hash_key else None}, "
                f"year={self.year}, models={self.models!r})")  # fmt: skip


NO_SECRETS = Secrets()


@dataclass(frozen=True, slots=True)
class Rule:
    """Fields every rule has; ``index`` is 1-based within its policy, ``line`` in its file."""

    id: str
    index: int
    line: int
    final: bool
    alert: bool = True  # false: an enforced block or escalation by this rule alerts nobody

    type = "rule"

    # What the compiler asks of every rule (policy.compiler), answered by the rule's kind
    # (policy.rules.<type>); these defaults are a rule that prepares nothing and reads no text.

    def build(self, policy: Policy, secrets: Secrets) -> object | None:
        """What the rule compiles to once per snapshot (a detector, a classifier), or None;
        raises ``PolicyError`` for what cannot be built (a missing key, no model)."""
        return None

    def pattern_specs(self, direction: str) -> Iterator[PatternSpec]:
        """The literals and regular expressions scanned for in ``direction``'s text, compiled
        with the policy's other rules' into one database per direction."""
        return iter(())

    def by_meaning(self, direction: str) -> bool:
        """Whether it classifies ``direction``'s sentences by meaning (the semantic model)."""
        return False

    @property
    def reads_response(self) -> bool:
        """Whether it needs the response phases (its text, status or usage)."""
        return False

    @property
    def compliance_tags(self) -> tuple[str, ...]:
        """Compliance tags it adds to every decision of its scope."""
        return ()


@dataclass(frozen=True, slots=True)
class PatternSpec:
    """One literal or regular expression of a rule, and the label reasons name it by."""

    expr: str
    kind: Literal["literal", "regex"]
    case_sensitive: bool
    whole_words: bool
    label: str


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
