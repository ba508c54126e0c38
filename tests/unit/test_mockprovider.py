"""The mock provider: API shapes, streams, usage, failures, control, stats, HTTP framing."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy_extproc.mockprovider import (
    MockProvider,
    apis,
    error_body,
    estimate_tokens,
    main,
    parse_listen,
    serve,
)
from policy_extproc.mockprovider.apis import BadRequest
from tests.envoy_harness import MockProviderProcess

USER = {"role": "user", "content": "what is the answer"}
ECHO = "echo: what is the answer"


def sse(frames: list[bytes]) -> list[tuple[str | None, str]]:
    """(event name or None, data) per SSE frame."""
    events = []
    for frame in frames:
        fields = dict(line.split(": ", 1) for line in frame.decode().splitlines() if line)
        events.append((fields.get("event"), fields["data"]))
    return events


def as_frames(reply: apis.Reply) -> list[bytes]:
    assert isinstance(reply, list), "expected a stream"
    return reply


def as_json(reply: apis.Reply) -> dict[str, Any]:
    assert isinstance(reply, dict), "expected a JSON body"
    return reply


# --- API shapes (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "tokens"), [("", 1), ("a", 1), ("abcd", 1), ("abcde", 2)])
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_chat_completion_echoes_last_user_message_with_usage() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is"},
                    {"type": "text", "text": "the answer"},
                ],
            },
        ],
    }
    resp = as_json(apis.chat_completions(body))
    assert resp["object"] == "chat.completion"
    assert resp["model"] == "gpt-4o"
    assert resp["choices"][0]["message"] == {"role": "assistant", "content": ECHO, "refusal": None}
    assert resp["choices"][0]["finish_reason"] == "stop"
    usage = resp["usage"]
    assert usage["prompt_tokens"] == estimate_tokens("be brief\nfirst\nok\nwhat is the answer")
    assert usage["completion_tokens"] == estimate_tokens(ECHO)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_completion_shape() -> None:
    resp = as_json(apis.completions({"model": "m", "prompt": "what is the answer"}))
    assert resp["object"] == "text_completion"
    assert resp["choices"][0]["text"] == ECHO
    assert resp["usage"]["completion_tokens"] == estimate_tokens(ECHO)


def test_embeddings_shape_is_deterministic() -> None:
    resp = as_json(apis.embeddings({"model": "e", "input": ["one", "two"]}))
    assert resp["object"] == "list"
    assert [d["index"] for d in resp["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in resp["data"])
    again = as_json(apis.embeddings({"model": "e", "input": "one"}))
    assert again["data"][0]["embedding"] == resp["data"][0]["embedding"]
    assert resp["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


@pytest.mark.parametrize(
    "given_input",
    [
        "what is the answer",
        [{"role": "user", "content": [{"type": "input_text", "text": "what is the answer"}]}],
    ],
)
def test_responses_shape(given_input: object) -> None:
    resp = as_json(apis.responses({"model": "m", "input": given_input, "instructions": "brief"}))
    assert resp["object"] == "response"
    assert resp["status"] == "completed"
    assert resp["output"][0]["content"][0] == {
        "type": "output_text",
        "text": ECHO,
        "annotations": [],
    }
    assert resp["usage"]["input_tokens"] == estimate_tokens("brief\nwhat is the answer")
    assert resp["usage"]["output_tokens"] == estimate_tokens(ECHO)


def test_anthropic_message_shape() -> None:
    resp = as_json(apis.messages({"model": "claude", "system": "be brief", "messages": [USER]}))
    assert resp["type"] == "message"
    assert resp["role"] == "assistant"
    assert resp["content"] == [{"type": "text", "text": ECHO}]
    assert resp["stop_reason"] == "end_turn"
    assert resp["usage"] == {
        "input_tokens": estimate_tokens("be brief\nwhat is the answer"),
        "output_tokens": estimate_tokens(ECHO),
    }


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream(include_usage: bool) -> None:
    body = {"messages": [USER], "stream": True, "stream_options": {"include_usage": include_usage}}
    events = sse(as_frames(apis.chat_completions(body)))
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert len([d for d in deltas if d]) >= 3
    assert "".join(deltas) == ECHO
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["stop"]
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == estimate_tokens(ECHO)
    else:
        assert all("usage" not in c for c in chunks)


def test_completion_stream() -> None:
    events = sse(as_frames(apis.completions({"prompt": "what is the answer", "stream": True})))
    assert events[-1][1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["text"] for _, d in events[:-1])
    assert text == ECHO


def test_anthropic_stream_events() -> None:
    events = sse(as_frames(apis.messages({"messages": [USER], "stream": True})))
    names = [name for name, _ in events]
    deltas = names.count("content_block_delta")
    assert deltas >= 3
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(d) for _, d in events]
    assert all(d["type"] == n for d, n in zip(data, names, strict=True))
    assert "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta") == ECHO
    assert data[0]["message"]["usage"]["input_tokens"] == estimate_tokens("\nwhat is the answer")
    assert data[-2]["usage"]["output_tokens"] == estimate_tokens(ECHO)


def test_responses_stream_events() -> None:
    events = sse(as_frames(apis.responses({"input": "what is the answer", "stream": True})))
    names = [name for name, _ in events]
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"
    data = [json.loads(d) for _, d in events]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert "".join(d["delta"] for d in data if d["type"] == "response.output_text.delta") == ECHO
    assert data[-1]["response"]["usage"]["output_tokens"] == estimate_tokens(ECHO)


@given(st.text())
def test_stream_deltas_join_back_to_the_text(text: str) -> None:
    body = {"messages": [{"role": "user", "content": text}], "stream": True}
    events = sse(as_frames(apis.messages(body)))
    joined = "".join(
        json.loads(d)["delta"]["text"] for n, d in events if n == "content_block_delta"
    )
    assert joined == f"echo: {text}"


@pytest.mark.parametrize(
    ("handler", "body"),
    [
        (apis.chat_completions, {}),
        (apis.messages, {"messages": "x"}),
        (apis.embeddings, {}),
        (apis.responses, {"input": 3}),
        (apis.completions, {}),
    ],
)
def test_missing_required_field_is_a_bad_request(handler: Any, body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        handler(body)


def test_error_shapes() -> None:
    assert error_body("/v1/messages", 503, "x") == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "x"},
    }
    assert error_body("/v1/chat/completions", 400, "x")["error"]["type"] == "invalid_request_error"
    assert error_body("/v1/chat/completions", 503, "x")["error"]["type"] == "server_error"


# --- the server over HTTP ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[MockProvider]:
    provider = MockProvider(name="unit", seed=7).start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def provider(server: MockProvider) -> MockProvider:
    server.reset()
    server.configure(fail_rate=0.0, latency_ms=0.0)
    return server


def request(
    provider: MockProvider,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(provider.host, provider.port, timeout=10)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_health_and_provider_header(provider: MockProvider) -> None:
    status, headers, body = request(provider, "GET", "/healthz")
    assert status == 200
    assert headers["x-mock-provider"] == "unit"
    assert json.loads(body) == {"status": "ok"}


def test_chat_over_http(provider: MockProvider) -> None:
    status, headers, body = request(provider, "POST", "/v1/chat/completions", {"messages": [USER]})
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-mock-provider"] == "unit"
    assert json.loads(body)["choices"][0]["message"]["content"] == ECHO


def test_stream_over_http_is_chunked_sse(provider: MockProvider) -> None:
    body = {"messages": [USER], "stream": True}
    status, headers, raw = request(provider, "POST", "/v1/messages", body)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["transfer-encoding"] == "chunked"
    assert raw.decode().startswith("event: message_start\n")
    assert raw.decode().endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_azure_style_path_is_served(provider: MockProvider) -> None:
    path = "/openai/deployments/gpt4/chat/completions?api-version=2024-06-01"
    status, _, body = request(provider, "POST", path, {"messages": [USER]})
    assert status == 200
    assert json.loads(body)["object"] == "chat.completion"
    assert provider.stats()["by_path"] == {"/openai/deployments/gpt4/chat/completions": 1}


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/v1/chat/completions", 503, "server_error"),
        ("/v1/messages", 503, "overloaded_error"),
        ("/v1/chat/completions", 429, "requests"),
        ("/v1/messages", 429, "rate_limit_error"),
    ],
)
def test_status_on_demand(provider: MockProvider, path: str, status: int, kind: str) -> None:
    got, headers, body = request(
        provider, "POST", path, {"messages": [USER]}, {"x-mock-status": str(status)}
    )
    assert got == status
    assert headers["retry-after"] == "1"
    error = json.loads(body)["error"]
    assert error["type"] == kind


def test_fail_rate_can_be_switched_at_run_time(provider: MockProvider) -> None:
    chat = {"messages": [USER]}
    status, _, body = request(provider, "POST", "/mock/control", {"fail_rate": 1.0})
    assert (status, json.loads(body)["fail_rate"]) == (200, 1.0)
    assert request(provider, "POST", "/v1/chat/completions", chat)[0] == 503
    request(provider, "POST", "/mock/control", {"fail_rate": 0.0})
    assert request(provider, "POST", "/v1/chat/completions", chat)[0] == 200


def test_partial_fail_rate_fails_some(provider: MockProvider) -> None:
    provider.configure(fail_rate=0.5)
    statuses = {request(provider, "POST", "/v1/embeddings", {"input": "x"})[0] for _ in range(40)}
    assert statuses == {200, 503}  # seeded: deterministic


@pytest.mark.parametrize("change", [{"fail_rate": 2}, {"fail_rate": "x"}, {"nope": 1}, [1]])
def test_bad_control_requests(provider: MockProvider, change: object) -> None:
    assert request(provider, "POST", "/mock/control", change)[0] == 400
    assert provider.fail_rate == 0.0


def test_stats_count_what_was_received(provider: MockProvider) -> None:
    request(provider, "POST", "/v1/chat/completions", {"messages": [USER]})
    request(
        provider, "POST", "/v1/messages", {"messages": [USER], "model": "c"}, {"x-org-id": "acme"}
    )
    request(provider, "GET", "/healthz")
    status, _, body = request(provider, "GET", "/mock/stats")
    stats = json.loads(body)
    assert status == 200
    assert stats["total"] == 2
    assert stats["by_path"] == {"/v1/chat/completions": 1, "/v1/messages": 1}
    assert stats["last_path"] == "/v1/messages"
    assert stats["last_body"] == {"messages": [USER], "model": "c"}
    assert stats["last_headers"]["x-org-id"] == "acme"
    request(provider, "POST", "/mock/control", {"reset": True})
    assert provider.stats()["total"] == 0


@pytest.mark.parametrize(
    ("path", "anthropic"), [("/v1/chat/completions", False), ("/v1/messages", True)]
)
def test_malformed_json_is_400(provider: MockProvider, path: str, anthropic: bool) -> None:
    for bad in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        status, _, body = request(provider, "POST", path, bad)
        assert status == 400
        parsed = json.loads(body)
        assert (parsed.get("type") == "error") is anthropic
        assert parsed["error"]["type"] == "invalid_request_error"
    assert provider.stats()["last_body"] == "\ufffd\ufffd"


def test_unknown_path_and_method_are_404(provider: MockProvider) -> None:
    assert request(provider, "POST", "/v2/whatever", {})[0] == 404
    assert request(provider, "GET", "/v1/chat/completions")[0] == 404


def test_keep_alive_reuses_the_connection(provider: MockProvider) -> None:
    conn = http.client.HTTPConnection(provider.host, provider.port, timeout=10)
    try:
        socks = []
        for _ in range(3):
            conn.request("POST", "/v1/embeddings", body=b'{"input": "x"}')
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
            socks.append(conn.sock)
        assert socks[0] is not None
        assert socks[0] is socks[1] is socks[2]
    finally:
        conn.close()


def test_chunked_request_body(provider: MockProvider) -> None:
    conn = http.client.HTTPConnection(provider.host, provider.port, timeout=10)
    try:
        parts = [b'{"messages": [{"role": "user", ', b'"content": "what is the answer"}]}']
        conn.request("POST", "/v1/chat/completions", body=iter(parts), encode_chunked=True)
        resp = conn.getresponse()
        assert json.loads(resp.read())["choices"][0]["message"]["content"] == ECHO
    finally:
        conn.close()


def test_expect_100_continue_and_connection_close(provider: MockProvider) -> None:
    body = b'{"input": "x"}'
    with socket.create_connection((provider.host, provider.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        received = b""
        while chunk := sock.recv(65536):  # the server closes after answering
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close\r\n" in received


def test_bad_framing_gets_400_and_close(provider: MockProvider) -> None:
    with socket.create_connection((provider.host, provider.port), timeout=10) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        received = sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_latency_setting_still_answers(provider: MockProvider) -> None:
    provider.configure(latency_ms=1)
    assert request(provider, "POST", "/v1/embeddings", {"input": "x"})[0] == 200


async def test_serve_until_cancelled() -> None:
    ready = asyncio.Event()
    task = asyncio.create_task(serve("127.0.0.1", 0, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_in_loop_server() -> None:
    async with MockProvider() as provider:
        reader, writer = await asyncio.open_connection(provider.host, provider.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        writer.close()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9", ("::1", 9)), (":0", ("127.0.0.1", 0))],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("argv", [["--fail-rate", "2"], ["--listen", "nope"]])
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises((SystemExit, ValueError)):
        main(argv)


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    proc = MockProviderProcess("cli", workdir=tmp_path).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().getheader("x-mock-provider") == "cli"
        conn.close()
    finally:
        proc.stop()
    assert proc.proc is not None
    assert proc.proc.returncode == 0
