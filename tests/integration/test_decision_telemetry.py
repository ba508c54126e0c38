"""What every decision tells a tracing backend: the provider it goes to, the API it spoke, and
the trace it belongs to (Envoy's span first, then the client's traceparent)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.helpers import (
    Exchange,
    Running,
    chat_body,
    request_body,
    request_headers,
    running_sidecar,
)

POLICIES = """
policy_name: acme
org: acme
rules:
  - {type: content_filter, id: secrets, keywords: [confidential], action: block}
"""
ENVOY_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_sidecar(tmp_path, POLICIES) as running:
        yield running


async def _send(
    server: Running,
    body: bytes,
    rid: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> None:
    ex = Exchange(server.stub, metadata=metadata)
    headers = {"x-user-id": "u", **(headers or {})}
    await ex.send(request_headers(body=body, request_id=rid, path=path, headers=headers))
    await ex.send(request_body(body))
    await ex.close()


def _record(server: Running, rid: str) -> dict[str, object]:
    (record,) = [r for r in server.records_json() if r["request_id"] == rid]
    return record


async def test_every_decision_names_its_provider_and_api(server: Running) -> None:
    anthropic = json.dumps({"model": "claude-3-haiku-20240307", "max_tokens": 5,
                            "messages": [{"role": "user", "content": "hi"}]}).encode()  # fmt: skip
    await _send(server, chat_body("hello"), "r-openai", "/v1/chat/completions")
    await _send(server, chat_body("confidential"), "r-block", "/v1/chat/completions")
    await _send(server, anthropic, "r-anthropic", "/v1/messages")
    assert (_record(server, "r-openai")["provider"], _record(server, "r-openai")["api"]) == (
        "openai", "openai.chat")  # fmt: skip
    assert _record(server, "r-block")["provider"] == "openai"  # refused: where it would go
    assert (_record(server, "r-anthropic")["provider"], _record(server, "r-anthropic")["api"]) == (
        "anthropic", "anthropic.messages")  # fmt: skip


async def test_envoys_span_is_the_parent_ahead_of_the_clients(server: Running) -> None:
    envoy = f"00-{ENVOY_TRACE}-b7ad6b7169203331-01"
    client = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"
    # Envoy sends its ext_proc span as gRPC metadata; the client's header rides in the request.
    await _send(server, chat_body("hello"), "r-both", "/v1/chat/completions",
                headers={"traceparent": client}, metadata=(("traceparent", envoy),))  # fmt: skip
    assert _record(server, "r-both")["trace_id"] == ENVOY_TRACE
    assert server.sink.emitted[-1].trace_context == {"traceparent": envoy}
    await _send(server, chat_body("hello"), "r-client", "/v1/chat/completions",
                headers={"traceparent": client})  # fmt: skip
    assert _record(server, "r-client")["trace_id"] == CLIENT_TRACE  # no Envoy span: the client's
