"""An in-process OTLP/gRPC receiver for tests: a collector that keeps every span and log record.

    with OtlpReceiver() as receiver:
        exporter_endpoint = receiver.endpoint          # "127.0.0.1:<free port>"
        ...
        [span] = receiver.wait_for_spans(1)
        assert span.attributes["policy.decision"] == "block"

It serves ``opentelemetry.proto.collector.trace.v1.TraceService`` on port 0 of 127.0.0.1 (so
tests never collide), decodes what it receives into ``ReceivedSpan`` values with plain Python
attributes, and can be told to fail (``fail_with``) to test exporters against a broken collector.
Anything that speaks OTLP/gRPC can export to it: the sidecar's ``OtelSink``, or Envoy's
OpenTelemetry tracer in end-to-end tests. It serves ``LogsService`` too: ``wait_for_logs``
returns ``ReceivedLog`` values (the audit lines and checkpoints of ``OtelAuditLogs``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as received; ids are lower-case hex, ``parent_span_id`` is "" at a root."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    kind: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: str
    status_message: str
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]
    scope: str


@dataclass(frozen=True, slots=True)
class ReceivedLog:
    """One log record as received: its body (as Python), event name and attributes."""

    body: Any
    event_name: str
    time_unix_nano: int
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]
    scope: str


class OtlpReceiver:
    """A trace collector on a free local port that keeps every span it receives."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._logs: list[ReceivedLog] = []
        self._changed = threading.Condition()
        self.requests = 0
        self.log_requests = 0
        self.fail_with: grpc.StatusCode | None = None
        """When set, every Export is answered with this status and its spans are not kept."""
        self._server: grpc.Server | None = None
        self._port = 0

    @property
    def endpoint(self) -> str:
        """``host:port`` for an OTLP/gRPC exporter (insecure)."""
        if self._server is None:
            raise RuntimeError("receiver not started")
        return f"127.0.0.1:{self._port}"

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._changed:
            return list(self._spans)

    def start(self) -> OtlpReceiver:
        """Start serving; returns self."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        self._port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving (pending calls are cancelled); idempotent."""
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def wait_for_spans(self, count: int, timeout: float = 30.0) -> list[ReceivedSpan]:
        """Block until at least ``count`` spans have arrived and return all of them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._spans) >= count, timeout):
                raise AssertionError(f"expected {count} spans, received {len(self._spans)}")
            return list(self._spans)

    def wait_for(self, found: Callable[[list[ReceivedSpan]], T | None], timeout: float = 30.0) -> T:
        """Block until ``found(spans so far)`` returns something (not None) and return it."""
        result: T | None = None

        def check() -> bool:
            nonlocal result
            result = found(self._spans)
            return result is not None

        with self._changed:
            if not self._changed.wait_for(check, timeout):
                raise AssertionError(f"spans received do not match: {self._spans}")
        assert result is not None
        return result

    @property
    def logs(self) -> list[ReceivedLog]:
        """Every log record received so far, in arrival order."""
        with self._changed:
            return list(self._logs)

    def wait_for_logs(
        self, predicate: Callable[[list[ReceivedLog]], bool], timeout: float = 30.0
    ) -> list[ReceivedLog]:
        """Block until ``predicate(logs so far)`` holds and return the logs."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self._logs), timeout):
                raise AssertionError(f"log records received do not match: {self._logs}")
            return list(self._logs)

    def clear(self) -> None:
        """Forget the spans received so far."""
        with self._changed:
            self._spans.clear()
            self._logs.clear()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _receive(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = [
            _span(span, _attributes(rs.resource.attributes), ss.scope.name)
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]
        with self._changed:
            self.requests += 1
            self._spans.extend(received)
            self._changed.notify_all()

    def _receive_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        received = [
            ReceivedLog(
                body=_value(record.body),
                event_name=record.event_name,
                time_unix_nano=record.time_unix_nano,
                attributes=_attributes(record.attributes),
                resource=_attributes(rl.resource.attributes),
                scope=sl.scope.name,
            )
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for record in sl.log_records
        ]
        with self._changed:
            self.log_requests += 1
            self._logs.extend(received)
            self._changed.notify_all()


class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self,
        request: logs_service_pb2.ExportLogsServiceRequest,
        context: grpc.ServicerContext,
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        failure = self._receiver.fail_with
        if failure is not None:
            context.abort(failure, "failing on purpose (OtlpReceiver.fail_with)")
        self._receiver._receive_logs(request)
        return logs_service_pb2.ExportLogsServiceResponse()


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        failure = self._receiver.fail_with
        if failure is not None:
            context.abort(failure, "failing on purpose (OtlpReceiver.fail_with)")
        self._receiver._receive(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def _span(span: trace_pb2.Span, resource: Mapping[str, Any], scope: str) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        trace_state=span.trace_state,
        kind=trace_pb2.Span.SpanKind.Name(span.kind),
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
        status_code=trace_pb2.Status.StatusCode.Name(span.status.code),
        status_message=span.status.message,
        attributes=_attributes(span.attributes),
        resource=resource,
        scope=scope,
    )


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as Python: arrays become tuples, key-value lists dicts."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if which is None:
        return None
    return getattr(value, which)
