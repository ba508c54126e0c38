"""What a rule type is: the ``RuleKind`` its module in ``policy.rules`` declares.

A kind names its rule class (a frozen ``Rule`` subclass, which also answers the compiler:
``build``, ``patterns``, ``by_meaning``, ``reads_response``), its fields (the loader validates
them and the JSON Schema of the policy format is made from them), a check across fields, the
checks it runs on a request and on a response, and the shared state it needs (those checks are
the enforcement layer's: ``enforce.stateful``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from .. import fields as f
from ..model import Rule

if TYPE_CHECKING:
    from ..compiler import EffectiveSet
    from ..decision import RequestContext
    from ..findings import Findings, TextPart

R = TypeVar("R", bound=Rule)

# What a kind needs from the state backend, checked by enforce/: limiters, budgets, approvals,
# circuit breakers, the catalog's residency.
State = Literal["rate", "budget", "approval", "breaker", "residency"]


@dataclass(frozen=True, slots=True)
class Field:
    """A field of a rule in a policy file: the rule attribute it sets and its parser."""

    parse: f.Parser
    attr: str | None = None  # default: the field's own name
    required: bool = False


@dataclass(frozen=True, slots=True)
class RuleKind(Generic[R]):
    """One rule type: its rule class, fields, cross-field check, checks and state."""

    rule: type[R]
    fields: Mapping[str, Field]
    # The rule's fields together (one needs another); a message for the author, or None.
    check: Callable[[R], str | None] | None = None
    # Request-only checks, run in the order of ``KINDS``; they add to the findings.
    check_request: Callable[[EffectiveSet, RequestContext, Findings], None] | None = None
    # Output guardrails, run on an answer (or a stream's window).
    check_response: Callable[[EffectiveSet, Sequence[TextPart], Findings], None] | None = None
    state: tuple[State, ...] = ()

    @property
    def name(self) -> str:
        return self.rule.type

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(key for key, spec in self.fields.items() if spec.required)


DIRECTION = f.one_of("request", "response", "both")
ON_ERROR = f.one_of("open", "closed")
