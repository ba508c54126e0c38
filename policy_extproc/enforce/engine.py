"""Decides requests and watches responses: the core, the state backend and the audit, wired.

The engine is the only async part of the decision path. It asks the pure core for everything it
can decide from the request alone, then the stateful checks, and writes the audit record before
the answer goes back to Envoy (the audit log append is one ``os.write``: a kill -9 after the
answer cannot lose the record).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..audit.builder import record_for
from ..audit.sink import AuditSink
from ..errors import BodyTooLarge, PolicyExtprocError, RequestError
from ..llm.catalog import Catalog, load_catalog
from ..llm.request import LlmRequest, parse_request, rewrite_request
from ..llm.response import SseParser, Usage, parse_response
from ..policy.compiler import EffectiveSet, Snapshot
from ..policy.context import DEFAULT_IDENTITY, IdentityConfig, build_context
from ..policy.decision import Decision, RequestContext
from ..policy.evaluator import check_request, decide
from ..policy.store import PolicyStore
from ..state.base import StateBackend
from ..state.memory import MemoryState
from . import responses

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 4 * 1024 * 1024  # agrees with envoy/envoy.yaml's buffer limits (DESIGN s8)
_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_body_bytes: int = DEFAULT_MAX_BODY
    identity: IdentityConfig = DEFAULT_IDENTITY


@dataclass(slots=True)
class Exchange:
    """One request and its response as the engine sees them, from headers to the last byte."""

    headers: Mapping[str, str]
    started_ns: int
    # Verified JWT claims (Envoy's jwt_authn metadata): they name the caller in every record of
    # the exchange, refusals included, ahead of the headers a client can set (DESIGN.md s4).
    claims: Mapping[str, Any] | None = None
    ctx: RequestContext = field(default_factory=RequestContext)
    decision: Decision | None = None
    snapshot: Snapshot | None = None
    es: EffectiveSet | None = None
    request: LlmRequest | None = None
    status: int = 0
    streaming: bool = False
    sse: SseParser | None = None
    response_chunks: list[bytes] = field(default_factory=list)
    usage: Usage | None = None
    finished: bool = False
    error_code: str | None = None

    @property
    def request_id(self) -> str:
        return self.headers.get("x-request-id", "")

    @property
    def trace_context(self) -> dict[str, str] | None:
        tc = {k: self.headers[k] for k in _TRACE_HEADERS if k in self.headers}
        return tc or None


class Engine:
    """Turns request phases into decisions and audit records."""

    def __init__(
        self,
        store: PolicyStore,
        sink: AuditSink,
        config: EngineConfig | None = None,
        *,
        state: StateBackend | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.config = config or EngineConfig()
        self.state: StateBackend = state if state is not None else MemoryState()
        self.catalog = catalog if catalog is not None else load_catalog()

    def begin(
        self, headers: Mapping[str, str], claims: Mapping[str, Any] | None = None
    ) -> Exchange:
        return Exchange(headers=headers, started_ns=time.time_ns(), claims=claims)

    def early_refusal(self, ex: Exchange) -> Decision | None:
        """A decision that needs no body: a declared length over the limit."""
        length = ex.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.config.max_body_bytes:
            exc = BodyTooLarge(
                f"request body of {length} bytes is over the limit of "
                f"{self.config.max_body_bytes} bytes"
            )
            return self.refuse(ex, exc)
        return None

    def decide_request(
        self, ex: Exchange, body: bytes, *, complete: bool, claims: Mapping[str, Any] | None = None
    ) -> tuple[Decision, bytes | None]:
        """The decision for a request whose body (possibly empty) has arrived, and its new body."""
        if claims is None:
            claims = ex.claims
        else:
            ex.claims = claims
        if not complete or len(body) > self.config.max_body_bytes:
            return self.refuse(
                ex,
                BodyTooLarge(
                    f"request body is over the limit of {self.config.max_body_bytes} bytes"
                ),
            ), None
        snapshot = self.store.current
        ex.snapshot = snapshot
        path = ex.headers.get(":path", "/")
        try:
            if not body and ex.headers.get(":method", "POST") in ("GET", "HEAD", "OPTIONS"):
                request = None  # model listings, health checks: nothing for a policy to read
            else:
                request = parse_request(path, body)
        except RequestError as exc:
            ex.ctx = build_context(ex.headers, None, claims=claims, config=self.config.identity)
            return self.refuse(ex, exc), None
        # ``claims`` come from Envoy's jwt_authn filter: verified, so they win over headers.
        ex.request = request
        ex.ctx = ctx = build_context(
            ex.headers, request, claims=claims, config=self.config.identity
        )
        ex.es = es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
        decision = decide(es, ctx, check_request(es, ctx))
        new_body = None
        if (
            request is not None
            and (decision.new_texts or decision.reroute_model)
            and decision.action in ("allow", "modify")
        ):
            # A reroute's model mapping rewrites ``model`` too (DESIGN.md s7).
            new_body = rewrite_request(request, decision.new_texts, model=decision.reroute_model)
        ex.decision = decision
        self._audit(ex, decision)
        return decision, new_body

    def refuse(self, ex: Exchange, exc: PolicyExtprocError) -> Decision:
        """Refuse the request for an error, audited with whatever identity it carried."""
        decision = responses.request_error(exc)
        ex.error_code = exc.code
        if not ex.ctx.org and not ex.ctx.user and (ex.headers or ex.claims):
            ex.ctx = build_context(ex.headers, None, claims=ex.claims, config=self.config.identity)
        ex.decision = decision
        if ex.snapshot is None and self.store.ready:
            ex.snapshot = self.store.current
        self._audit(ex, decision)
        return decision

    def _audit(self, ex: Exchange, decision: Decision, **extra: Any) -> None:
        latency_us = (time.time_ns() - ex.started_ns) // 1000
        ctx = ex.ctx if ex.ctx.request_id else _with_request_id(ex.ctx, ex.request_id)
        trace_id = None
        tp = ex.headers.get("traceparent", "")
        if tp.count("-") >= 3:
            trace_id = tp.split("-")[1]
        record = record_for(
            decision,
            ctx,
            started_ns=ex.started_ns,
            latency_us=latency_us,
            policy_version=ex.snapshot.version if ex.snapshot else "",
            trace_id=trace_id,
            error_code=ex.error_code,
            **extra,
        )
        self.sink.emit(record, trace_context=ex.trace_context)

    # -- responses -------------------------------------------------------------------------

    def response_started(self, ex: Exchange, headers: Mapping[str, str]) -> None:
        status = headers.get(":status", "0")
        ex.status = int(status) if status.isdigit() else 0
        ex.streaming = "text/event-stream" in headers.get("content-type", "")
        if ex.streaming and ex.request is not None:
            ex.sse = SseParser(ex.request.api)

    def response_chunk(self, ex: Exchange, chunk: bytes, end: bool) -> None:
        """Watch the response body (streamed or buffered) for usage; finish at its end."""
        if ex.sse is not None:
            ex.sse.feed(chunk)
        else:
            ex.response_chunks.append(chunk)
        if end:
            self.finish(ex)

    def finish(self, ex: Exchange) -> None:
        """The response is over (or the stream closed): record what it cost."""
        if ex.finished or ex.decision is None or ex.request is None:
            return
        ex.finished = True
        if ex.sse is not None:
            ex.sse.flush()  # a last event with no blank line after it still counts
            ex.usage = ex.sse.usage
        elif ex.response_chunks and 200 <= ex.status < 300:
            try:
                ex.usage = parse_response(ex.request.api, b"".join(ex.response_chunks)).usage
            except PolicyExtprocError:
                ex.usage = None
        if ex.usage is not None:
            self._audit_usage(ex, ex.usage)

    def _audit_usage(self, ex: Exchange, usage: Usage) -> None:
        decision = ex.decision
        assert decision is not None
        self._audit(ex, decision, usage=(usage.input_tokens, usage.output_tokens), phase="response")


def _with_request_id(ctx: RequestContext, request_id: str) -> RequestContext:
    from dataclasses import replace

    return replace(ctx, request_id=request_id)
