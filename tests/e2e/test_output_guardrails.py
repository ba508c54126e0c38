"""Output guardrails through a real Envoy: the model's answer is scanned, rewritten or refused.

The mock provider echoes the last user message ("echo: <text>"), so a prompt decides what the
answer contains. The rules here apply to responses only: the provider receives the prompt as
sent, and the client must never see the matched text, buffered or streamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from policy_extproc.mockprovider import MockProvider
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import EnvoyProcess, Response, http_request

POLICY = """
policy_name: output_rules
org: guard
rules:
  - {type: content_filter, id: codenames, keywords: [aurora], action: redact, direction: response}
  - {type: pii, id: contacts, entities: [EMAIL], direction: response}
  - {type: content_filter, id: forbidden, keywords: [forbidden fruit], action: block,
     direction: response}
"""
HEADERS = {"x-org-id": "guard", "x-user-id": "u1"}
SECRET_MAIL = "bob.secret@example.com"


@pytest.fixture(scope="module", params=["grpc", "h2"])
def guarded(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningSidecar]:
    """The sidecar on each transport (serve --transport): Envoy sees the same answers."""
    workdir = tmp_path_factory.mktemp("guard")
    with running_sidecar(POLICY, workdir, transport=request.param) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(envoy_factory, guarded: RunningSidecar) -> EnvoyProcess:  # type: ignore[no-untyped-def]
    return envoy_factory(guarded.port)


def chat(text: str, *, stream: bool = False) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }


def streamed_text(resp: Response) -> str:
    out = []
    for _, data in resp.sse():
        if data == "[DONE]":
            continue
        payload = json.loads(data)
        for choice in payload.get("choices", []):
            out.append(choice.get("delta", {}).get("content") or "")
    return "".join(out)


def test_buffered_answer_is_rewritten(proxy: EnvoyProcess, mock_provider: MockProvider) -> None:
    prompt = f"tell me about aurora and write to {SECRET_MAIL}"
    resp = http_request(proxy.url, "/v1/chat/completions", chat(prompt), headers=HEADERS)
    assert resp.status == 200
    answer = resp.json()["choices"][0]["message"]["content"]
    assert answer == "echo: tell me about [REDACTED:codenames] and write to [EMAIL]"
    assert int(resp.headers["content-length"]) == len(resp.body)
    assert set(resp.headers["x-policy-redactions"].split(",")) == {"codenames=1", "EMAIL=1"}
    # Response rules only: the provider got the prompt as the client sent it.
    received = mock_provider.stats()["last_body"]
    assert received["messages"][0]["content"] == prompt


def test_streamed_answer_is_rewritten_across_chunks(proxy: EnvoyProcess) -> None:
    prompt = f"the aurora project, contact {SECRET_MAIL} today " + "and more words " * 20
    resp = http_request(
        proxy.url, "/v1/chat/completions", chat(prompt, stream=True), headers=HEADERS
    )
    assert resp.status == 200
    text = streamed_text(resp)
    assert "aurora" not in text and SECRET_MAIL not in text
    assert text.startswith("echo: the [REDACTED:codenames] project, contact [EMAIL] today")
    assert b"aurora" not in resp.body and SECRET_MAIL.encode() not in resp.body


def test_anthropic_stream_is_rewritten(proxy: EnvoyProcess) -> None:
    body = {
        "model": "claude-3-5-haiku",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": f"mail {SECRET_MAIL} about aurora"}],
    }
    resp = http_request(proxy.url, "/v1/messages", body, headers=HEADERS)
    assert resp.status == 200
    text = "".join(
        json.loads(data)["delta"].get("text", "")
        for event, data in resp.sse()
        if event == "content_block_delta"
    )
    assert text == "echo: mail [EMAIL] about [REDACTED:codenames]"


def test_buffered_answer_is_refused(proxy: EnvoyProcess) -> None:
    resp = http_request(
        proxy.url, "/v1/chat/completions", chat("say forbidden fruit"), headers=HEADERS
    )
    assert resp.status == 403
    body = resp.json()
    assert body["error"]["code"] == "blocked" and body["rule"] == "forbidden"
    assert resp.headers["x-policy-decision"] == "block"
    assert b"forbidden fruit" not in resp.body.replace(b"keyword 'forbidden fruit'", b"")


def test_streamed_answer_is_cut_before_the_match(proxy: EnvoyProcess) -> None:
    resp = http_request(
        proxy.url,
        "/v1/chat/completions",
        chat("a harmless start, then forbidden fruit", stream=True),
        headers=HEADERS,
    )
    events = resp.sse()
    assert streamed_text(resp).startswith("echo:") or streamed_text(resp) == ""
    errors = [json.loads(d) for _, d in events if d != "[DONE]" and "error" in json.loads(d)]
    assert errors and errors[0]["error"]["code"] == "blocked"
    assert "forbidden fruit" not in streamed_text(resp)


def test_audit_has_the_response_decisions_and_no_values(guarded: RunningSidecar) -> None:
    records = [r for r in guarded.sink.records if r.org == "guard"]
    responses = [r for r in records if r.phase == "response"]
    assert any(dict(r.redactions).get("EMAIL") for r in responses)
    assert any(r.decision == "block" and r.rule == "forbidden" for r in responses)
    dumped = json.dumps([r.to_dict() for r in records])
    assert SECRET_MAIL not in dumped and "aurora project" not in dumped


def test_audit_log_file_verifies(guarded: RunningSidecar) -> None:
    from policy_extproc.audit.chain import verify

    result = verify(guarded.audit_log)
    assert result.ok, result.message
