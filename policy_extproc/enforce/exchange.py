"""One request and its response as the engine sees them, from the headers to the last byte.

The data only, grouped by what belongs together: who asked and when (``Exchange`` itself), the
rules in force and the parsed request, what was decided, what the stateful checks left to
settle (``Held``), what the response showed so far (``ResponseWatch``), and the I/O asked for
and not yet performed (``outbox``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..llm.request import LlmRequest
from ..llm.response import ResponseInfo, SseParser, Usage, UsageChunkFilter
from ..policy.compiler import EffectiveSet, Snapshot
from ..policy.decision import Decision, RequestContext
from ..policy.evaluator import Findings
from . import failover, guard, limits
from .effects import Effect

_TRACE_HEADERS = ("traceparent", "tracestate")
# Before the body is parsed: one shared, immutable empty context (its tags read-only too),
# rather than a new one built for every exchange only to be replaced.
_NO_CONTEXT = RequestContext(tags=MappingProxyType({}))


@dataclass(slots=True)
class Held:
    """What the stateful checks admitted, to settle when the response is over."""

    plan: limits.Plan | None = None  # limiters and budgets admitted, to reconcile at the end
    route: failover.Route | None = None  # where it went, and the breaker watching that provider
    # We asked the stream for usage the client did not ask for (pipeline.usage_fields): the
    # usage-only chunk is removed from what the client gets (ResponseWatch.usage_filter).
    hide_usage: bool = False
    # The answer is read for accounting by the observe filter, not inline (observe.py): the
    # response phases were skipped; ``expected`` once its pending response is asked for.
    observed: bool = False
    expected: bool = False


@dataclass(slots=True)
class ResponseWatch:
    """The response so far: its status, how it is read, and what it showed."""

    status: int = 0
    streaming: bool = False
    guarded: bool = False  # output guardrails apply to this answer
    stream_guard: guard.StreamGuard | None = None  # ... and it is streamed
    sse: SseParser | None = None  # streamed, read for its usage only
    usage_filter: UsageChunkFilter | None = None  # streamed, the usage chunk taken out
    chunks: list[bytes] = field(default_factory=list)  # buffered
    usage: Usage | None = None
    output_tokens: int | None = None  # its output text counted (llm/tokens.py), once read
    answer: ResponseInfo | None = None  # the answer's model, id, finish reasons
    findings: Findings | None = None  # what the output guardrails found
    finished: bool = False  # its record is written, its reservation settled


@dataclass(slots=True)
class Exchange:
    """One request and its response as the engine sees them."""

    headers: Mapping[str, str]
    started_ns: int
    # Verified JWT claims (Envoy's jwt_authn metadata): they name the caller in every record of
    # the exchange, refusals included, ahead of the headers a client can set (DESIGN.md s4).
    claims: Mapping[str, Any] | None = None
    # Made when first needed: Envoy always sends x-request-id, and uuid4 reads the kernel's
    # random source (a system call) on every call.
    request_id_fallback: str = ""
    # The clock's monotonic_ns() after which Envoy no longer waits for the message being decided.
    deadline_ns: int | None = None
    # The rules in force: the snapshot decided on, and the identity's rules before the body.
    snapshot: Snapshot | None = None
    scope: EffectiveSet | None = None
    identity_ok: bool = False  # the identity was checked (one org, no ambiguity): not again
    # The request as parsed, its context, and the rules in force for that context.
    ctx: RequestContext = _NO_CONTEXT
    request: LlmRequest | None = None
    es: EffectiveSet | None = None
    # What was decided, and why the client got something else if it did.
    decision: Decision | None = None
    error_code: str | None = None
    outcome: str | None = None  # what the client got when it is not the decision
    held: Held = field(default_factory=Held)
    response: ResponseWatch = field(default_factory=ResponseWatch)
    # The I/O asked for and not yet performed (effects.py), in order.
    outbox: list[Effect] = field(default_factory=list)

    def take_effects(self) -> list[Effect]:
        """The effects asked for so far, in order; the outbox is empty after."""
        out, self.outbox = self.outbox, []
        return out

    @property
    def request_id(self) -> str:
        # Envoy generates x-request-id (generate_request_id); direct gRPC callers may not.
        given = self.headers.get("x-request-id")
        if given:
            return given
        if not self.request_id_fallback:
            self.request_id_fallback = uuid.uuid4().hex
        return self.request_id_fallback

    @property
    def trace_context(self) -> dict[str, str] | None:
        tc = {k: self.headers[k] for k in _TRACE_HEADERS if k in self.headers}
        return tc or None
