"""envoy/*.yaml validate with the real Envoy, and the shipped config works end to end.

The ext_proc filter points at PassThroughProcessor (tests/envoy_harness.py), which lets every
request through, so these tests exercise Envoy's side only: routes, ports, processing modes,
mode override, header and body mutations, route-cache clearing, metadata, the body limit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from policy_extproc.mockprovider import MockProvider
from tests.e2e.conftest import EnvoyFactory, ExtProcServer
from tests.envoy_harness import (
    BODY_LIMIT,
    DEFAULT_CONFIG,
    DEFAULT_PORTS,
    ENVOY_DIR,
    EnvoyProcess,
    Response,
    StreamRecord,
    http_request,
    render_config,
    validate_config,
)

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def chat(text: str, **extra: object) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def stream_of(ext: ExtProcServer, resp: Response) -> StreamRecord:
    """The ext_proc stream that handled resp, found by the x-request-id Envoy gave both."""
    request_id = resp.headers["x-request-id"]
    matches = [
        s for s in ext.processor.streams if s.request_headers.get("x-request-id") == request_id
    ]
    assert len(matches) == 1, f"no single ext_proc stream for {request_id}"
    return matches[0]


@pytest.mark.parametrize("path", sorted(ENVOY_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_validates(path: Path) -> None:
    ok, output = validate_config(path)
    assert ok, output


def test_baseline_without_ext_proc_validates(tmp_path: Path) -> None:
    rendered = render_config(DEFAULT_PORTS, ext_proc=False)
    assert "envoy.filters.http.ext_proc" not in rendered
    (tmp_path / "envoy.yaml").write_text(rendered)
    ok, output = validate_config(tmp_path / "envoy.yaml")
    assert ok, output


def test_envoy_yaml_is_the_rendered_template() -> None:
    assert DEFAULT_CONFIG.read_text() == render_config(DEFAULT_PORTS), (
        "envoy/envoy.yaml is out of date: run .venv/bin/python -m tests.envoy_harness render"
    )


def test_chat_completion_through_envoy(
    envoy: EnvoyProcess, mock_provider: MockProvider, passthrough_extproc: ExtProcServer
) -> None:
    body = chat("hello through envoy")
    resp = http_request(envoy.url, CHAT, body, headers={"traceparent": TRACEPARENT})

    assert resp.status == 200
    assert resp.json()["choices"][0]["message"]["content"] == "echo: hello through envoy"
    assert resp.headers["x-mock-provider"] == "openai"
    assert resp.headers["x-test-seen"] == "1"
    assert resp.headers["x-request-id"]
    stats = mock_provider.stats()
    assert stats["last_body"] == body
    assert stats["last_headers"]["x-request-id"] == resp.headers["x-request-id"]

    seen = stream_of(passthrough_extproc, resp)
    assert seen.phases == ["request_headers", "request_body", "response_headers", "response_body"]
    assert seen.request_headers[":path"] == CHAT
    assert seen.request_headers[":method"] == "POST"
    assert seen.request_headers["traceparent"] == TRACEPARENT


def test_streamed_chat_completion_through_envoy(
    envoy: EnvoyProcess, mock_provider: MockProvider, passthrough_extproc: ExtProcServer
) -> None:
    body = chat("stream me please", stream=True, stream_options={"include_usage": True})
    resp = http_request(envoy.url, CHAT, body)

    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["x-test-seen"] == "1"
    data = [d for _, d in resp.sse()]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: stream me please"
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    # mode_override switched the response body to STREAMED: body chunks, not one buffered body.
    seen = stream_of(passthrough_extproc, resp)
    assert seen.phases[:3] == ["request_headers", "request_body", "response_headers"]
    assert "response_body" in seen.phases


def test_anthropic_stream_through_envoy(envoy: EnvoyProcess, mock_provider: MockProvider) -> None:
    body = {
        "model": "claude-3-haiku",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "hi claude"}],
    }
    resp = http_request(envoy.url, "/v1/messages", body)

    assert resp.status == 200
    assert resp.headers["x-mock-provider"] == "anthropic"
    names = [name for name, _ in resp.sse()]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]


@pytest.mark.parametrize(
    ("path", "headers", "provider"),
    [
        (CHAT, {}, "openai"),
        ("/v1/embeddings", {}, "openai"),
        ("/v1/messages", {}, "anthropic"),
        (CHAT, {"x-policy-provider": "azure-openai"}, "azure-openai"),
        (CHAT, {"x-policy-provider": "anthropic"}, "anthropic"),
        ("/v1/messages", {"x-policy-provider": "openai"}, "openai"),
        (CHAT, {"x-policy-provider": "no-such-provider"}, "openai"),
    ],
)
def test_routes(
    envoy: EnvoyProcess,
    mock_provider: MockProvider,
    path: str,
    headers: dict[str, str],
    provider: str,
) -> None:
    body = {"model": "m", "input": "x", "messages": [{"role": "user", "content": "x"}]}
    resp = http_request(envoy.url, path, body, headers=headers)
    assert resp.status == 200
    assert resp.headers["x-mock-provider"] == provider


def test_sidecar_reroute_clears_route_cache(
    envoy: EnvoyProcess, mock_providers: dict[str, MockProvider], mock_provider: MockProvider
) -> None:
    resp = http_request(
        envoy.url, CHAT, chat("go elsewhere"), headers={"x-test-reroute": "azure-openai"}
    )
    assert resp.status == 200
    assert resp.headers["x-mock-provider"] == "azure-openai"
    assert (
        mock_providers["azure-openai"].stats()["last_headers"]["x-policy-provider"]
        == "azure-openai"
    )
    assert mock_provider.stats()["total"] == 0


def test_sidecar_body_rewrite_reaches_provider(
    envoy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    resp = http_request(envoy.url, CHAT, chat("rewrite me"), headers={"x-test-model": "rewritten"})
    assert resp.status == 200
    stats = mock_provider.stats()
    assert stats["last_body"]["model"] == "rewritten"
    assert int(stats["last_headers"]["content-length"]) == len(json.dumps(stats["last_body"]))


def test_access_log_carries_request_id_and_decision(
    envoy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    resp = http_request(envoy.url, CHAT, chat("log me"))
    request_id = resp.headers["x-request-id"]
    deadline = time.monotonic() + 10  # the harness has Envoy flush access logs every 100 ms
    entries: list[dict[str, object]] = []
    while not entries and time.monotonic() < deadline:
        entries = [e for e in envoy.access_log() if e.get("request_id") == request_id]
        time.sleep(0.1)
    assert entries, "no access-log line for the request"
    assert entries[0]["decision"] == "allow"
    assert entries[0]["upstream_cluster"] == "openai"


def test_body_just_under_the_limit_passes(
    envoy: EnvoyProcess, mock_provider: MockProvider, passthrough_extproc: ExtProcServer
) -> None:
    text = "a" * (BODY_LIMIT - 64 * 1024)
    resp = http_request(envoy.url, "/v1/embeddings", {"model": "e", "input": text})
    assert resp.status == 200, resp.body[:300]
    assert mock_provider.stats()["last_body"]["input"] == text


def test_body_over_the_limit_gets_json_413(
    envoy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    text = "a" * (BODY_LIMIT + 64 * 1024)
    resp = http_request(envoy.url, "/v1/embeddings", {"model": "e", "input": text})
    assert resp.status == 413
    assert resp.json()["error"]["code"] == "body_too_large"
    assert resp.json()["request_id"] == resp.headers["x-request-id"]
    assert mock_provider.stats()["total"] == 0


def test_provider_errors_pass_through(envoy: EnvoyProcess, mock_provider: MockProvider) -> None:
    resp = http_request(envoy.url, CHAT, chat("fail"), headers={"x-mock-status": "503"})
    assert resp.status == 503
    assert resp.json()["error"]["type"] == "server_error"
    assert resp.headers["x-test-seen"] == "1"


def test_sidecar_down_fails_closed(
    envoy_factory: EnvoyFactory, mock_provider: MockProvider
) -> None:
    no_sidecar = envoy_factory(None)
    resp = http_request(no_sidecar.url, CHAT, chat("nobody checks me"))
    assert resp.status == 503  # status_on_error; the JSON body: tests/e2e/test_tls_envoy.py
    assert resp.json()["error"]["code"] == "policy_unavailable"
    assert mock_provider.stats()["total"] == 0


def test_baseline_envoy_without_ext_proc(
    envoy_factory: EnvoyFactory, mock_provider: MockProvider
) -> None:
    baseline = envoy_factory(ext_proc=False)
    resp = http_request(baseline.url, CHAT, chat("no sidecar here"))
    assert resp.status == 200
    assert "x-test-seen" not in resp.headers
    assert resp.json()["choices"][0]["message"]["content"] == "echo: no sidecar here"


def test_response_over_the_limit_gets_json_500(
    envoy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    # The request fits; the echo, with the JSON around it, is over the limit. Buffered response
    # bodies share the listener's buffer limit, so Envoy answers 500 (rs_too_large).
    resp = http_request(envoy.url, CHAT, chat("a" * (BODY_LIMIT - 150)))
    assert resp.status == 500
    assert resp.json()["error"]["code"] == "response_too_large"
    assert mock_provider.stats()["total"] == 1
