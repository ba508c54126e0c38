"""The one request decision pipeline: the server, the admin dry run and ``eval`` all call it.

examined request (parsed, request-only rules checked: ``work.examine``) -> stateful checks
(``stateful.py``, consuming or not) -> ``evaluator.decide`` -> the rewritten body. The server
(``Engine.decide_request``) wraps it with what only a live request has: identity and size
refusals, Envoy's deadline, the audit record; the dry run (``admin/evaluate.py``) with a read of
the state that consumes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..llm.apis import BY_API
from ..llm.request import LlmRequest, rewrite_request
from ..policy.compiler import EffectiveSet
from ..policy.decision import Decision
from ..policy.evaluator import decide
from .examine import Examined
from .stateful import NOTHING, Stateful, StatefulChecks, passes


@dataclass(frozen=True, slots=True)
class Ruled:
    """The decision for an examined request, and what its stateful checks left to the caller."""

    decision: Decision
    stateful: Stateful


async def rule(
    checks: StatefulChecks,
    es: EffectiveSet,
    examined: Examined,
    request_id: str,
    *,
    consume: bool = True,
) -> Ruled:
    """Decide an examined request: its pure findings, then (only if nothing enforced refuses
    it already) the checks that need state. Raises ``PolicyExtprocError`` for a refusal that
    is not a rule's (see ``StatefulChecks.run``)."""
    findings = examined.findings
    stateful = NOTHING
    if examined.request is not None and passes(findings.fired):
        stateful = await checks.run(es, examined.ctx, findings.fired, request_id, consume=consume)
    decision = decide(es, examined.ctx, findings, stateful.outcome)
    if decision.action == "throttle" and decision.throttle is not None:
        decision = replace(decision, code=decision.throttle.code)
    return Ruled(decision, stateful)


def rewritten(
    request: LlmRequest | None, decision: Decision, fields: Mapping[str, Any] | None = None
) -> bytes | None:
    """The body to send instead of the client's (None: unchanged): redactions, a reroute's
    model (DESIGN.md s7), and body fields the enforcement needs (``fields``)."""
    if request is None or decision.action not in ("allow", "modify"):
        return None
    if not (decision.new_texts or decision.reroute_model or fields):
        return None
    return rewrite_request(
        request, decision.new_texts, model=decision.reroute_model, set_fields=dict(fields or {})
    )


def usage_fields(request: LlmRequest | None, budgeted: bool) -> tuple[dict[str, Any], bool]:
    """Body fields to add, and whether we added them: ask a streamed OpenAI answer for its usage
    when a budget or token limit (``budgeted``) needs it.

    The client did not ask for it, so the usage-only chunk it brings is taken out of the stream
    again (``Held.hide_usage``): the client gets the stream it asked for. (With
    ``--response-accounting observe`` the inline filter no longer reads that answer, so the
    usage-only chunk reaches the client: README, "Response accounting off the answer path".)
    """
    if not budgeted or request is None or not request.stream:
        return {}, False
    if not BY_API[request.api].usage_opt_in:
        return {}, False  # Anthropic and the Responses API always report usage in the stream
    opts = request.body.get("stream_options")
    if isinstance(opts, dict) and opts.get("include_usage") is True:
        return {}, False
    return {
        "stream_options": {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
    }, True
