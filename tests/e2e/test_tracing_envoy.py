"""Through a real Envoy with its OpenTelemetry tracer on: one trace per request, Envoy's spans and
the sidecar's at one real OTLP/gRPC receiver (tests/otlp_receiver.py).

Envoy (envoy/envoy.yaml.tmpl rendered, then envoy_harness.enable_tracing) samples every request
and exports its spans to the receiver; the sidecar's OtelSink exports its policy.decision spans
to the same receiver. The chain asserted:

    Envoy's request span (the HTTP connection manager's, ingress)
      └── Envoy's ext_proc span (the filter's gRPC stream: "async ...ExternalProcessor.Process")
            ├── policy.decision, phase request
            └── policy.decision, phase response

Both phases travel on one ext_proc stream, so both decisions have the ext_proc span as parent,
whose traceparent Envoy sends as gRPC metadata; a client's traceparent only makes the trace
Envoy's request span belongs to (the client stays the root).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policy_extproc.mockprovider import MockProvider
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import (
    EnvoyPorts,
    EnvoyProcess,
    enable_tracing,
    http_request,
    render_config,
    validate_config,
)
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
# A response rule, so the response phases reach the sidecar (and get a span of their own).
POLICIES = """
policy_name: traced
org: acme
rules:
  - {type: content_filter, id: secrets, keywords: [confidential], action: block}
  - {type: content_filter, id: codenames, keywords: [aurora], action: redact,
     direction: response}
"""
HEADERS = {"x-org-id": "acme", "x-team-id": "ml", "x-user-id": "alice"}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
EXT_PROC_SPAN = "ExternalProcessor.Process"


def chat(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def sidecar(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSidecar]:
    workdir = tmp_path_factory.mktemp("traced")
    # audit_otlp off: the audit's OTLP log records are not what this module looks at.
    with running_sidecar(
        POLICIES, workdir, otlp_endpoint=receiver.endpoint, audit_otlp=False, admin_listen=None
    ) as running:
        yield running


def _config(providers: dict[str, MockProvider], extproc: int, collector: str) -> str:
    ports = EnvoyPorts(
        extproc=extproc,
        openai=providers["openai"].port,
        azure=providers["azure-openai"].port,
        anthropic=providers["anthropic"].port,
        listen=0,
        admin=0,
    )
    return enable_tracing(render_config(ports), collector, service_name="envoy-under-test")


@pytest.fixture(scope="module")
def envoy(
    sidecar: RunningSidecar,
    receiver: OtlpReceiver,
    mock_providers: dict[str, MockProvider],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EnvoyProcess]:
    config = _config(mock_providers, sidecar.port, receiver.endpoint)
    proc = EnvoyProcess(
        EnvoyPorts(), config_text=config, workdir=tmp_path_factory.mktemp("envoy")
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def _trace(receiver: OtlpReceiver, request_id: str, decisions: int = 2) -> list[ReceivedSpan]:
    """Every span of the trace the request's decisions belong to, once its decision spans and
    Envoy's two spans of that trace (its request span and its ext_proc span) have arrived."""

    def complete(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
        ours = [s for s in spans if s.attributes.get("policy.request_id") == request_id]
        if len(ours) < decisions:
            return None
        trace = [s for s in spans if s.trace_id == ours[0].trace_id]
        envoys = [s for s in trace if s.resource.get("service.name") == "envoy-under-test"]
        return trace if len(envoys) >= 2 else None

    return receiver.wait_for(complete, 60.0)


def _one(spans: list[ReceivedSpan], match: Any) -> ReceivedSpan:
    [span] = [s for s in spans if match(s)]
    return span


def test_the_decisions_are_children_of_envoys_ext_proc_span(
    envoy: EnvoyProcess, receiver: OtlpReceiver, sidecar: RunningSidecar,
    mock_provider: MockProvider,
) -> None:  # fmt: skip
    resp = http_request(envoy.url, CHAT, chat("hello, traced"), headers=HEADERS)
    assert resp.status == 200, resp.body
    request_id = resp.headers["x-request-id"]

    trace = _trace(receiver, request_id)
    by_id = {s.span_id: s for s in trace}
    ext_proc = _one(trace, lambda s: EXT_PROC_SPAN in s.name)
    request_decision = _one(trace, lambda s: s.attributes.get("policy.phase") == "request")
    response_decision = _one(trace, lambda s: s.attributes.get("policy.phase") == "response")

    # Both phases in one trace, both under Envoy's ext_proc span, which is under Envoy's
    # request span: the root, as the client sent no traceparent.
    assert request_decision.trace_id == response_decision.trace_id == ext_proc.trace_id
    assert request_decision.parent_span_id == ext_proc.span_id
    assert response_decision.parent_span_id == ext_proc.span_id
    root = by_id[ext_proc.parent_span_id]
    assert root.parent_span_id == ""
    assert root.kind == "SPAN_KIND_SERVER"
    assert ext_proc.kind == "SPAN_KIND_CLIENT"
    assert root.attributes.get("guid:x-request-id") == request_id

    # What each side says at the receiver.
    assert ext_proc.resource["service.name"] == "envoy-under-test"
    assert request_decision.resource["service.name"] == "policy-extproc"
    assert request_decision.resource["service.version"]
    assert request_decision.name == "policy.decision"
    assert request_decision.attributes["policy.decision"] == "allow"
    assert request_decision.attributes["gen_ai.operation.name"] == "chat"
    assert request_decision.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert request_decision.attributes["gen_ai.provider.name"] == "openai"
    assert request_decision.attributes["enduser.id"] == "alice"
    assert request_decision.attributes["policy.org"] == "acme"
    assert request_decision.attributes["policy.team"] == "ml"
    assert response_decision.attributes["gen_ai.usage.input_tokens"] > 0
    assert response_decision.attributes["gen_ai.usage.output_tokens"] > 0
    assert response_decision.attributes["policy.request_id"] == request_id
    # What the provider's answer said about itself, and where the request went (the catalog's
    # address of the provider: the mock stands in for api.openai.com).
    answer = resp.json()
    assert response_decision.attributes["gen_ai.response.model"] == answer["model"]
    assert response_decision.attributes["gen_ai.response.id"] == answer["id"]
    assert response_decision.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    for decision in (request_decision, response_decision):
        assert decision.attributes["server.address"] == "api.openai.com"
        assert decision.attributes["server.port"] == 443
    [record] = [r for r in sidecar.records(request_id) if r.phase == "response"]
    assert (record.response_model, record.response_id) == (answer["model"], answer["id"])
    assert record.finish_reasons == ("stop",)


def test_a_streamed_answer_names_its_model_id_and_finish_reason(
    envoy: EnvoyProcess, receiver: OtlpReceiver, sidecar: RunningSidecar,
    mock_provider: MockProvider,
) -> None:  # fmt: skip
    # A streamed answer names its model, id and finish reason across its chunks.
    body = {**chat("stream, traced"), "stream": True, "stream_options": {"include_usage": True}}
    resp = http_request(envoy.url, CHAT, body, headers=HEADERS)
    assert resp.status == 200, resp.body
    chunks = [json.loads(data) for _, data in resp.sse() if data != "[DONE]"]

    trace = _trace(receiver, resp.headers["x-request-id"])
    ext_proc = _one(trace, lambda s: EXT_PROC_SPAN in s.name)
    response_decision = _one(trace, lambda s: s.attributes.get("policy.phase") == "response")
    assert response_decision.parent_span_id == ext_proc.span_id
    assert response_decision.attributes["gen_ai.response.model"] == chunks[0]["model"]
    assert response_decision.attributes["gen_ai.response.id"] == chunks[0]["id"]
    assert response_decision.attributes["gen_ai.response.finish_reasons"] == ("stop",)


def test_a_client_traceparent_is_kept_and_envoy_stays_the_decisions_parent(
    envoy: EnvoyProcess, receiver: OtlpReceiver, mock_provider: MockProvider
) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    resp = http_request(
        envoy.url, CHAT, chat("hello again"), headers={**HEADERS, "traceparent": traceparent}
    )
    assert resp.status == 200, resp.body

    trace = _trace(receiver, resp.headers["x-request-id"])
    assert {s.trace_id for s in trace} == {CLIENT_TRACE}
    by_id = {s.span_id: s for s in trace}
    ext_proc = _one(trace, lambda s: EXT_PROC_SPAN in s.name)
    decisions = [s for s in trace if s.name == "policy.decision"]
    assert {s.attributes["policy.phase"] for s in decisions} == {"request", "response"}
    # Not the client's span: Envoy's ext_proc span, itself under Envoy's request span, which
    # is the child of the client's.
    assert all(s.parent_span_id == ext_proc.span_id for s in decisions)
    assert by_id[ext_proc.parent_span_id].parent_span_id == CLIENT_SPAN


def test_a_blocked_request_is_one_trace_under_envoys_ext_proc_span(
    envoy: EnvoyProcess, receiver: OtlpReceiver, mock_provider: MockProvider
) -> None:
    resp = http_request(envoy.url, CHAT, chat("this is confidential"), headers=HEADERS)
    assert resp.status == 403
    request_id = resp.headers["x-request-id"]

    trace = _trace(receiver, request_id, decisions=1)
    [decision] = [s for s in trace if s.name == "policy.decision"]
    assert decision.attributes["policy.decision"] == "block"
    assert decision.attributes["policy.rule"] == "secrets"
    assert decision.attributes["policy.phase"] == "request"
    # A block is the policy working, not an error of the span.
    assert decision.status_code != "STATUS_CODE_ERROR"
    ext_proc = _one(trace, lambda s: EXT_PROC_SPAN in s.name)
    assert decision.parent_span_id == ext_proc.span_id
    assert mock_provider.stats()["total"] == 0


def test_the_traced_config_validates(
    mock_providers: dict[str, MockProvider], tmp_path: Path
) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(_config(mock_providers, 50051, "127.0.0.1:4317"))
    ok, output = validate_config(path)
    assert ok, output
