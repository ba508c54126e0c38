"""Request context + snapshot -> decision, for the rules decided from the request alone.

Each rule kind (``policy.rules``) brings its own checks of a request and of a response; they
run here in the order of ``KINDS``. Rules that need shared state (rate limits, budgets,
approvals, breakers) are checked by the enforcement layer, whose ``StateOutcome`` ``decide``
takes; everything here is pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..detect.joined import Remembering
from .compiler import EffectiveSet
from .decision import NO_STATE, Decision, RequestContext, StateOutcome, combine
from .findings import Findings, TextPart
from .rules import KINDS

_REQUEST_CHECKS = tuple(k.check_request for k in KINDS if k.check_request is not None)
_RESPONSE_CHECKS = tuple(k.check_response for k in KINDS if k.check_response is not None)


def check_request(es: EffectiveSet, ctx: RequestContext) -> Findings:
    """Firings and rewrites of the rules decided from the request alone."""
    out = Findings()
    if ctx.request is None:
        return out
    with Remembering():  # the parts' canonical forms, shared by the checks, then forgotten
        for check in _REQUEST_CHECKS:
            check(es, ctx, out)
    return out


def check_response(es: EffectiveSet, parts: Sequence[TextPart]) -> Findings:
    """Firings and rewrites of the output guardrails (direction response or both)."""
    out = Findings()
    with Remembering():
        for check in _RESPONSE_CHECKS:
            check(es, parts, out)
    return out


def decide(
    es: EffectiveSet, ctx: RequestContext, out: Findings, state: StateOutcome = NO_STATE
) -> Decision:
    """The decision for ``out``'s firings and the stateful checks' ``state``, with the prompt
    rewrites they ask for."""
    parts = ctx.request.parts if ctx.request is not None else ()
    return combine(
        out.fired,
        compliance=es.compliance,
        redactions=dict(out.redactions),
        new_texts=out.new_texts(parts) if out.edits else {},
        state=state,
    )


__all__ = ["Findings", "TextPart", "check_request", "check_response", "decide"]
