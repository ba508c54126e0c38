"""gRPC servicers: they only move messages between Envoy and the stream state machines.

They are served by grpc.aio or by the lean HTTP/2 transport (``serve --transport h2``,
policy_extproc/transport/): both hand ``Process`` a context with ``read()``, ``write()`` and
``invocation_metadata()`` (``StreamContext``), and cancel its task when Envoy resets the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg

from ..logformat import bind_request
from . import extauthz, translate
from .admission import Admission
from .driver import ExtProcStream
from .engine import Engine
from .envoy_replies import Extend

log = logging.getLogger(__name__)


class StreamContext(Protocol):
    """What ``Process`` uses of its context: grpc.aio's, or a transport.Call."""

    async def read(self) -> Any:
        """The next ProcessingRequest, or grpc.aio.EOF."""

    async def write(self, message: Any) -> None:
        """Send one ProcessingResponse."""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None:
        """The stream's gRPC metadata."""


class ExternalProcessor(epg.ExternalProcessorServicer):
    """envoy.service.ext_proc.v3.ExternalProcessor: one state machine per stream."""

    def __init__(
        self,
        engine: Engine,
        *,
        on_phase: Callable[[str, float], None] | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.engine = engine
        self.admission = admission  # shared with the ext_authz servicer: one bound per process
        # Told how long each message took to answer, by phase (the phase latency metric).
        self.on_phase = on_phase
        self.open_streams = 0

    async def Process(
        self,
        request_iterator: AsyncIterator[ep.ProcessingRequest] | None,
        context: StreamContext,
    ) -> None:
        # context.read() and context.write(), not ``async for`` over request_iterator and
        # ``yield``: grpc.aio wraps both of those in async generators of its own, and skipping
        # them took 0.08 ms of CPU off each four-message exchange of a do-nothing server
        # written both ways (benchmarks/e2e.py, 0.83 -> 0.75 ms). request_iterator is unread.
        stream = ExtProcStream(
            self.engine, trace_context=_trace_context(context), admission=self.admission
        )
        self.open_streams += 1
        observed = None  # an observability-mode stream: the observe filter (observe.py)
        try:
            while (msg := await context.read()) is not grpc.aio.EOF:
                if msg.observability_mode:
                    # Read, never answered (Envoy ignores answers); closing says "no more".
                    observed = observed or self.engine.observer.stream()
                    own = translate.own_metadata(msg) if observed.key is None else None
                    if not await observed.feed(translate.event(msg), own):
                        return
                    continue
                started = time.perf_counter()
                ev = translate.event(msg)
                if ev.phase == "request_headers":
                    # Log lines of this stream's task name its request (--log-format json).
                    trace = stream.trace_context.get("traceparent") or ev.headers.get("traceparent")
                    tp = (trace or "").split("-")
                    bind_request(ev.headers.get("x-request-id", ""), tp[1] if len(tp) > 3 else None)
                more = stream.extension(ev)
                if more is not None:
                    # A large body goes to a worker: ask Envoy to wait for it (one override
                    # per message), before the work starts.
                    await context.write(translate.extend(Extend(more)))
                reply = await stream.handle(ev)
                response = translate.response(reply)
                if self.on_phase is not None:
                    self.on_phase(ev.phase or "unknown", time.perf_counter() - started)
                await context.write(response)
        except asyncio.CancelledError:
            # Envoy reset the stream (client gone, message timeout): ``close`` audits a request
            # that was not decided yet, saying what happened to it.
            log.debug("ext_proc stream cancelled in state %s", stream.state.value)
            raise
        finally:
            stream.close()
            self.open_streams -= 1


def _trace_context(context: StreamContext) -> dict[str, str]:
    """W3C trace context of Envoy's own span, sent as gRPC metadata on the Process stream.

    With tracing on, Envoy puts its span's ``traceparent`` there even when the client sent
    none, so the policy.decision span joins the request's trace in the tracing backend.
    """
    out = {}
    for key, value in context.invocation_metadata() or ():
        if key in ("traceparent", "tracestate") and isinstance(value, str):
            out[key] = value
    return out


class Authorization(external_auth_pb2_grpc.AuthorizationServicer):
    """envoy.service.auth.v3.Authorization, for deployments that only need allow or deny."""

    def __init__(self, engine: Engine, *, admission: Admission | None = None) -> None:
        self.engine = engine
        self.admission = admission

    async def Check(self, request: CheckRequest, context: Any) -> CheckResponse:
        return await extauthz.check(self.engine, request, admission=self.admission)
