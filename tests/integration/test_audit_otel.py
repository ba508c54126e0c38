"""OtelSink against a real OTLP/gRPC receiver: span shape, parentage, attributes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from policy_extproc.audit.otel import PROVIDERS, OtelSink, attributes
from policy_extproc.audit.record import (
    AuditRecord,
    FiredRule,
    Usage,
    redaction_counts,
    timestamp_ns,
)
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
# Where spans are expected, close() may take its time: a slow machine must not lose them.
PATIENT = 60.0


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def make_record(request_id: str, **changes: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "decision": "modify",
        "policy": "dev_team_restrictions",
        "rule": "pii",
        "reason": "redacted 2 EMAIL, 1 US_SSN",
        "user": "alice",
        "environment": "development",
        "timestamp": "2024-05-01T12:00:00.000250Z",
        "request_id": request_id,
        "org": "acme",
        "team": "ml",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "compliance": ("SOC2", "HIPAA"),
        "fired": (
            FiredRule("dev_team_restrictions", "pii", "modify"),
            FiredRule("org_baseline", "rate", "allow"),
        ),
        "redactions": redaction_counts({"EMAIL": 2, "US_SSN": 1}),
        "usage": Usage(input_tokens=120, output_tokens=40),
        "cost_usd": 0.0012,
        "latency_us": 850,
        "policy_version": "v7",
    }
    fields.update(changes)
    return AuditRecord(**fields)


FULL_ATTRIBUTES = {
    "policy.decision": "modify",
    "policy.reason": "redacted 2 EMAIL, 1 US_SSN",
    "policy.mode": "enforce",
    "policy.latency_us": 850,
    "policy.phase": "request",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.provider.name": "openai",
    "gen_ai.system": "openai",  # the v1.36 name, until OTEL_SEMCONV_STABILITY_OPT_IN opts out
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 40,
    "enduser.id": "alice",
    "policy.environment": "development",
    "policy.name": "dev_team_restrictions",
    "policy.rule": "pii",
    "policy.org": "acme",
    "policy.team": "ml",
    "policy.request_id": "req-child",
    "policy.cost_usd": 0.0012,
    "policy.version": "v7",
    "policy.compliance": ("SOC2", "HIPAA"),
    "policy.fired": ("dev_team_restrictions/pii:modify", "org_baseline/rate:allow"),
    "policy.redactions": ("EMAIL=2", "US_SSN=1"),
}


def by_request(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.attributes["policy.request_id"]: span for span in spans}


def test_one_span_per_record_with_parent_from_traceparent(receiver: OtlpReceiver) -> None:
    sink = OtelSink(receiver.endpoint, close_timeout_s=PATIENT)
    child = make_record("req-child")
    sink.emit(child, trace_context={"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    sink.emit(make_record("req-root"))
    sink.emit(make_record("req-other"), trace_context={"x-request-id": "no trace context here"})
    sink.close()

    spans = by_request(receiver.wait_for_spans(3))
    assert set(spans) == {"req-child", "req-root", "req-other"}

    span = spans["req-child"]
    assert span.name == "policy.decision"
    assert span.kind == "SPAN_KIND_INTERNAL"
    assert (span.trace_id, span.parent_span_id) == (TRACE_ID, PARENT_ID)
    assert span.span_id != PARENT_ID
    assert span.trace_state == "vendor=1"
    assert span.start_time_unix_nano == timestamp_ns(child.timestamp) == 1_714_564_800_000_250_000
    assert span.end_time_unix_nano == span.start_time_unix_nano + 850_000
    assert span.status_code == "STATUS_CODE_UNSET"
    assert span.resource["service.name"] == "policy-extproc"
    assert span.scope == "policy_extproc.audit"
    # Exactly these attributes: nothing beyond the record's types, counts and names.
    assert dict(span.attributes) == FULL_ATTRIBUTES

    for request_id in ("req-root", "req-other"):
        root = spans[request_id]
        assert root.parent_span_id == ""
        assert root.trace_id not in (TRACE_ID, "0" * 32)
    assert spans["req-root"].trace_id != spans["req-other"].trace_id


def test_header_names_are_matched_case_insensitively(receiver: OtlpReceiver) -> None:
    sink = OtelSink(receiver.endpoint, close_timeout_s=PATIENT)
    sink.emit(make_record("req-1"), trace_context={"Traceparent": TRACEPARENT})
    sink.close()
    [span] = receiver.wait_for_spans(1)
    assert (span.trace_id, span.parent_span_id) == (TRACE_ID, PARENT_ID)


def test_an_invalid_traceparent_starts_a_new_trace(receiver: OtlpReceiver) -> None:
    sink = OtelSink(receiver.endpoint, close_timeout_s=PATIENT)
    sink.emit(make_record("req-1"), trace_context={"traceparent": "00-zzzz-yyyy-01"})
    sink.close()
    [span] = receiver.wait_for_spans(1)
    assert span.parent_span_id == ""


def test_an_error_code_sets_status_error(receiver: OtlpReceiver) -> None:
    sink = OtelSink(receiver.endpoint, service_name="sidecar-under-test", close_timeout_s=PATIENT)
    record = make_record(
        "req-bad",
        decision="block",
        policy=None,
        rule=None,
        reason="body is not JSON",
        model=None,
        provider=None,
        compliance=(),
        fired=(),
        redactions=(),
        usage=None,
        cost_usd=None,
        error_code="malformed_body",
    )
    sink.emit(record)
    sink.close()
    [span] = receiver.wait_for_spans(1)
    assert (span.status_code, span.status_message) == ("STATUS_CODE_ERROR", "malformed_body")
    assert span.resource["service.name"] == "sidecar-under-test"
    assert dict(span.attributes) == {
        "policy.decision": "block",
        "policy.reason": "body is not JSON",
        "policy.mode": "enforce",
        "policy.latency_us": 850,
        "policy.phase": "request",
        "enduser.id": "alice",
        "policy.environment": "development",
        "policy.org": "acme",
        "policy.team": "ml",
        "policy.request_id": "req-bad",
        "policy.version": "v7",
        "policy.error_code": "malformed_body",
    }


def test_log_mode_and_degraded_paths_are_attributes() -> None:
    record = make_record(
        "req-1",
        decision="allow",
        mode="log",
        would_decide="block",
        alerts=("budget:0.8",),
        degraded=("state_unavailable:open",),
    )
    attrs = attributes(record)
    assert attrs["policy.mode"] == "log"
    assert attrs["policy.would_decide"] == "block"
    assert attrs["policy.alerts"] == ("budget:0.8",)
    assert attrs["policy.degraded"] == ("state_unavailable:open",)


def test_an_unsampled_parent_yields_no_span(receiver: OtlpReceiver) -> None:
    # Parent-based sampling, as documented in otel.py: the caller decided not to keep the trace.
    sink = OtelSink(receiver.endpoint, close_timeout_s=PATIENT)
    sink.emit(make_record("req-unsampled"), trace_context={"traceparent": TRACEPARENT[:-2] + "00"})
    sink.emit(make_record("req-sampled"), trace_context={"traceparent": TRACEPARENT})
    sink.close()  # flushes everything queued, so what is missing now was never queued
    assert set(by_request(receiver.wait_for_spans(1))) == {"req-sampled"}
    assert set(by_request(receiver.spans)) == {"req-sampled"}


def test_a_failing_collector_never_reaches_the_caller(receiver: OtlpReceiver) -> None:
    receiver.fail_with = grpc.StatusCode.UNAVAILABLE
    sink = OtelSink(receiver.endpoint, close_timeout_s=0.2)
    for n in range(10):
        sink.emit(make_record(f"req-{n}"))
    sink.close()  # bounded: gives up on the retrying export instead of waiting it out
    sink.close()
    sink.emit(make_record("req-after-close"))  # dropped by the SDK, not raised
    assert receiver.spans == []
    assert sink.failed == 0


def test_an_absent_collector_never_reaches_the_caller() -> None:
    with OtlpReceiver() as gone:
        endpoint = gone.endpoint
    sink = OtelSink(endpoint, close_timeout_s=0.2)
    sink.emit(make_record("req-1"))
    sink.close()
    assert sink.failed == 0


def test_without_trace_context_a_requests_two_records_are_one_trace(
    receiver: OtlpReceiver,
) -> None:
    sink = OtelSink(receiver.endpoint, close_timeout_s=PATIENT)
    sink.emit(make_record("req-1", usage=None, cost_usd=None))
    sink.emit(make_record("req-2", usage=None, cost_usd=None))
    sink.emit(make_record("req-1", phase="response"))
    sink.close()
    spans = receiver.wait_for_spans(3)
    request = next(s for s in spans if s.attributes["policy.request_id"] == "req-1"
                   and s.attributes["policy.phase"] == "request")  # fmt: skip
    response = next(s for s in spans if s.attributes["policy.phase"] == "response")
    other = next(s for s in spans if s.attributes["policy.request_id"] == "req-2")
    assert response.trace_id == request.trace_id != other.trace_id
    assert response.parent_span_id == request.span_id
    assert request.parent_span_id == ""


def test_the_resource_follows_the_otel_variables(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "llm-guard-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,team=plat")
    sink = OtelSink(receiver.endpoint, close_timeout_s=PATIENT)
    sink.emit(make_record("req-1"))
    sink.close()
    [span] = receiver.wait_for_spans(1)
    assert span.resource["service.name"] == "llm-guard-eu"
    assert span.resource["deployment.environment.name"] == "prod"
    assert span.resource["team"] == "plat"
    assert span.resource["service.version"]


@pytest.mark.parametrize(
    ("api", "provider", "operation", "provider_name"),
    [
        ("openai.chat", "openai", "chat", "openai"),
        ("openai.embeddings", "openai", "embeddings", "openai"),
        ("openai.completions", "azure-openai", "text_completion", "azure.ai.openai"),
        ("anthropic.messages", "anthropic", "chat", "anthropic"),
    ],
)
def test_genai_operation_and_provider_names(
    api: str, provider: str, operation: str, provider_name: str
) -> None:
    attrs = attributes(make_record("r", api=api, provider=provider))
    assert attrs["gen_ai.operation.name"] == operation
    assert attrs["gen_ai.provider.name"] == provider_name
    assert "gen_ai.system" not in attrs and "deployment.environment.name" not in attrs


@pytest.mark.parametrize(
    ("provider", "system"),
    [("openai", "openai"), ("azure-openai", "az.ai.openai"), ("xai", "xai"),
     ("bedrock", "aws.bedrock")],
)  # fmt: skip
def test_the_v136_system_name_is_kept_beside_the_provider_name(provider: str, system: str) -> None:
    attrs = attributes(make_record("r", provider=provider), legacy_genai=True)
    assert attrs["gen_ai.system"] == system
    assert attrs["gen_ai.provider.name"] == PROVIDERS.get(provider, provider)


@pytest.mark.parametrize(
    ("opt_in", "latest_only"),
    [("", False), ("http", False), ("http, gen_ai_latest_experimental", True),
     ("gen_ai_latest_experimental", True), ("gen_ai_latest_experimentalx", False)],
)  # fmt: skip
def test_the_stability_opt_in_drops_the_v136_name(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, opt_in: str, latest_only: bool
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    sink = OtelSink(receiver.endpoint, close_timeout_s=PATIENT)
    sink.emit(make_record("req-1"))
    sink.close()
    [span] = receiver.wait_for_spans(1)
    assert span.attributes["gen_ai.provider.name"] == "openai"
    assert ("gen_ai.system" in span.attributes) is not latest_only
