"""Audit records as OpenTelemetry spans; the one module that imports OpenTelemetry.

Each record becomes one span ``policy.decision`` (kind INTERNAL) covering the decision, from
the record's ``timestamp`` for ``latency_us``. When the request carried W3C trace context
(``traceparent``/``tracestate``), the span is a child of the caller's span; otherwise it starts
a trace of its own. Spans are batched and exported over OTLP/gRPC from a background thread, so
``emit`` never waits on the network; when the collector is down the queue fills and spans are
dropped (the JSONL log keeps every record regardless). The sink counts spans queued, exported
and failed, for the metrics endpoint (``backlog``).

Sampling follows the SDK's default, parent-based: a ``traceparent`` whose sampled flag is off
yields no span, as the rest of that trace is not kept either. ``OTEL_TRACES_SAMPLER`` and the
``OTEL_BSP_*``/``OTEL_EXPORTER_OTLP_*`` variables apply as usual.

Attributes use OpenTelemetry names where they exist, ``policy.*`` otherwise (see ``attributes``).
The GenAI names are the conventions' current ones. The first version of this sidecar emitted the
v1.36 name ``gen_ai.system`` too, so it still does, as the conventions' transition plan asks of an
instrumentation that emitted v1.36 or older, until ``OTEL_SEMCONV_STABILITY_OPT_IN`` names
``gen_ai_latest_experimental``: then only the current names are emitted.
The request id is ``policy.request_id``: the semantic convention for a request header,
``http.request.header.x-request-id``, is a string array describing HTTP, which this span is not.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from policy_extproc.audit.record import AuditRecord, timestamp_ns

SPAN_NAME = "policy.decision"
MAX_OPEN_REQUESTS = 10_000
# gen_ai.operation.name of each API (OpenTelemetry GenAI conventions' well-known values).
OPERATIONS = {
    "openai.chat": "chat",
    "openai.responses": "chat",
    "anthropic.messages": "chat",
    "openai.completions": "text_completion",
    "openai.embeddings": "embeddings",
    "gemini.generate_content": "generate_content",
    "bedrock.converse": "chat",
}
# gen_ai.provider.name's well-known values for the catalog's provider names; others as named.
PROVIDERS = {
    "azure-openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "aws-bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "vertex-ai": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
}

# gen_ai.system (v1.36 and older) spelt three of those values differently.
LEGACY_SYSTEMS = {"azure.ai.openai": "az.ai.openai", "azure.ai.inference": "az.ai.inference",
                  "x_ai": "xai"}  # fmt: skip
GENAI_OPT_IN = "gen_ai_latest_experimental"

logger = logging.getLogger(__name__)
_propagator = TraceContextTextMapPropagator()


class OtelSink:
    """Exports one ``policy.decision`` span per record to an OTLP/gRPC collector.

    ``endpoint`` is the collector (``host:port`` or ``http://host:port``); ``exporter``
    replaces the OTLP exporter (then ``endpoint`` is unused). ``close`` waits at most
    ``close_timeout_s`` for pending spans to be exported.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        service_name: str = "policy-extproc",
        insecure: bool = True,
        legacy_genai: bool | None = None,
        exporter: SpanExporter | None = None,
        close_timeout_s: float = 5.0,
    ) -> None:
        if exporter is None:
            exporter = OTLPSpanExporter(endpoint=endpoint, insecure=insecure)
        self._exporter = exporter
        # Not the global provider: the sidecar's spans should not depend on (or change) what
        # other code in the process registers. No atexit flush either: close() is bounded,
        # the SDK's exit hook is not, and a dead collector must not hold up a pod's exit.
        self._provider = TracerProvider(resource=resource(service_name), shutdown_on_exit=False)
        self._provider.add_span_processor(
            BatchSpanProcessor(_CountingExporter(self._exporter, self))
        )
        self._tracer = self._provider.get_tracer("policy_extproc.audit")
        self._legacy_genai = (
            not latest_genai_opted_in(os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", ""))
            if legacy_genai is None else legacy_genai
        )  # fmt: skip
        self._close_timeout_s = close_timeout_s
        self._closed = False
        # request_id -> the request span, until the response record comes (bounded: a request
        # whose answer never comes is forgotten, oldest first).
        self._requests: OrderedDict[str, SpanContext] = OrderedDict()
        self.failed = 0
        """Records that could not be turned into a span (logged, never raised)."""
        # The SDK keeps its queue length and its drops private, so the sink counts both ends:
        # spans handed to the batch processor, and spans its worker handed to the exporter.
        self.queued = 0
        """Sampled spans handed to the batch processor."""
        self.exported = 0
        """Spans the collector accepted."""
        self.export_failed = 0
        """Spans whose export failed after the exporter's retries (lost)."""

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        """Queue the span for ``record``; never raises and never blocks on export."""
        try:
            start = timestamp_ns(record.timestamp)
            parent = _parent(trace_context)
            if not trace_context and record.phase == "response" and record.request_id:
                # No trace context from Envoy: the response span joins its request's trace
                # as a child of the request's span, so one request is one trace.
                request_span = self._requests.pop(record.request_id, None)
                if request_span is not None:
                    parent = set_span_in_context(NonRecordingSpan(request_span), Context())
            span = self._tracer.start_span(
                SPAN_NAME,
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=attributes(record, legacy_genai=self._legacy_genai),
                start_time=start,
            )
            if not trace_context and record.phase == "request" and record.request_id:
                self._remember(record.request_id, span.get_span_context())
            if record.error_code is not None:
                span.set_status(Status(StatusCode.ERROR, record.error_code))
            span.end(end_time=start + record.latency_us * 1000)
            if span.get_span_context().trace_flags.sampled:
                self.queued += 1
        except Exception:
            # The span is the second copy of the record; the durable log has the first. Losing
            # a span must not fail a request, but it is counted and logged.
            self.failed += 1
            logger.exception("audit span for request %s not created", record.request_id)

    def _remember(self, request_id: str, context: SpanContext) -> None:
        self._requests[request_id] = context
        if len(self._requests) > MAX_OPEN_REQUESTS:
            self._requests.popitem(last=False)

    def close(self) -> None:
        """Export pending spans (waiting at most ``close_timeout_s``) and shut down; idempotent."""
        if self._closed:
            return
        self._closed = True
        bounded_shutdown(self._provider, self._exporter, self._close_timeout_s, "audit spans")

    @property
    def backlog(self) -> int:
        """Spans queued and not yet exported or failed: the batch queue and the batch in flight,
        plus any the SDK dropped because its queue was full (it does not report those)."""
        return max(0, self.queued - self.exported - self.export_failed)


class _CountingExporter(SpanExporter):
    """Passes batches to the real exporter and counts the outcome on the sink."""

    def __init__(self, exporter: SpanExporter, sink: OtelSink) -> None:
        self._exporter = exporter
        self._sink = sink

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # Called from the batch processor's one worker thread: the counters have one writer.
        try:
            result = self._exporter.export(spans)
        except Exception:
            self._sink.export_failed += len(spans)
            raise
        if result is SpanExportResult.SUCCESS:
            self._sink.exported += len(spans)
        else:
            self._sink.export_failed += len(spans)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def latest_genai_opted_in(opt_in: str) -> bool:
    """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` (a comma-separated list) asks for the latest
    GenAI conventions only."""
    return GENAI_OPT_IN in (item.strip() for item in opt_in.split(","))


def attributes(record: AuditRecord, *, legacy_genai: bool = False) -> dict[str, AttributeValue]:
    """The span attributes for ``record``; absent values and empty lists are left out.
    ``legacy_genai`` adds the v1.36 ``gen_ai.system`` beside ``gen_ai.provider.name``."""
    attrs: dict[str, AttributeValue] = {
        "policy.decision": record.decision,
        "policy.reason": record.reason,
        "policy.mode": record.mode,
        "policy.latency_us": record.latency_us,
        "policy.phase": record.phase,
    }
    provider = PROVIDERS.get(record.provider, record.provider) if record.provider else None
    optional: dict[str, str | int | float | None] = {
        "gen_ai.operation.name": OPERATIONS.get(record.api or ""),
        "gen_ai.request.model": record.model,
        "gen_ai.provider.name": provider,
        "gen_ai.usage.input_tokens": None if record.usage is None else record.usage.input_tokens,
        "gen_ai.usage.output_tokens": None if record.usage is None else record.usage.output_tokens,
        "gen_ai.response.model": record.response_model,
        "gen_ai.response.id": record.response_id,
        "server.address": record.server_address,
        "server.port": record.server_port,
        "enduser.id": record.user,
        # The request's environment (x-environment). deployment.environment.name is the
        # sidecar's own, a resource attribute (OTEL_RESOURCE_ATTRIBUTES), as the conventions say.
        "policy.environment": record.environment,
        "policy.api": record.api,
        "policy.outcome": record.outcome,
        "policy.name": record.policy,
        "policy.rule": record.rule,
        "policy.org": record.org,
        "policy.team": record.team,
        "policy.would_decide": record.would_decide,
        "policy.request_id": record.request_id,
        "policy.cost_usd": record.cost_usd,
        "policy.version": record.policy_version or None,
        "policy.error_code": record.error_code,
    }
    attrs.update((k, v) for k, v in optional.items() if v is not None)
    if legacy_genai and provider is not None:
        attrs["gen_ai.system"] = LEGACY_SYSTEMS.get(provider, provider)
    lists: dict[str, tuple[str, ...]] = {
        "gen_ai.response.finish_reasons": record.finish_reasons,
        "policy.compliance": record.compliance,
        "policy.fired": tuple(f"{f.policy}/{f.rule}:{f.action}" for f in record.fired),
        "policy.redactions": tuple(f"{kind}={count}" for kind, count in record.redactions),
        "policy.alerts": record.alerts,
        "policy.degraded": record.degraded,
    }
    attrs.update((k, v) for k, v in lists.items() if v)
    return attrs


class _Provider(Protocol):
    def force_flush(self, timeout_millis: int = ...) -> bool: ...

    def shutdown(self) -> Any: ...


class _Exporter(Protocol):
    def shutdown(self) -> Any: ...


def bounded_shutdown(provider: _Provider, exporter: _Exporter, timeout_s: float, what: str) -> None:
    """Flush and shut ``provider`` down, waiting at most ``timeout_s``.

    The SDK's force_flush ignores its timeout and an export retries for up to 10 s per batch,
    so the wait is bounded here, from outside: past it the exporter is shut down, which
    interrupts its retry back-off, and what was queued is given up (and logged).
    """

    def flush_and_shutdown() -> None:
        provider.force_flush()
        provider.shutdown()

    worker = threading.Thread(target=flush_and_shutdown, name="otel-close", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        logger.warning("%s not exported within %.1f s of close; giving up on them", what,
                       timeout_s)  # fmt: skip
        exporter.shutdown()


def resource(service_name: str = "policy-extproc") -> Resource:
    """The process's resource: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win (the
    SDK reads them), then ``service.name`` policy-extproc and ``service.version``."""
    try:
        version = importlib.metadata.version("policy-extproc")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    # Resource.create merges the OTEL_* variables over what it is given; OTEL_SERVICE_NAME
    # would lose to an explicit service.name, so it is passed only when the variable is unset.
    given: dict[str, str] = {SERVICE_VERSION: version}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        given[SERVICE_NAME] = service_name
    return Resource.create(given)


def _parent(trace_context: Mapping[str, str] | None) -> Context:
    # An explicit empty Context, never the ambient one: without trace context from Envoy the
    # span starts its own trace rather than joining whatever happens to be current.
    if not trace_context:
        return Context()
    carrier = {k.lower(): v for k, v in trace_context.items()}
    return _propagator.extract(carrier, context=Context())
