"""Google Gemini and AWS Bedrock Converse through a real Envoy and the real sidecar.

The mock provider echoes the last user turn ("echo: <text>"), so what it received shows in the
answer: a forbidden keyword is refused before the provider, an e-mail reaches it masked, streams
reach the client in each API's own framing (SSE for Gemini, AWS event-stream for ConverseStream)
with their usage recorded and charged, and output guardrails redact inside both streams.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from policy_extproc.llm.apis.eventstream import EventStreamFramer
from policy_extproc.llm.apis.wire import SseFramer
from policy_extproc.llm.response import Usage
from policy_extproc.mockprovider import MockProvider
from policy_extproc.mockprovider.apis import converse, gemini
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import EnvoyProcess, Response, http_request

pytestmark = pytest.mark.e2e

POLICY = """
policy_name: multi_api
org: multi
rules:
  - {type: content_filter, id: secrets, keywords: [project zebra], action: block}
  - {type: pii, id: mails, entities: [EMAIL]}
  - {type: content_filter, id: codenames, keywords: [aurora], action: redact, direction: response}
  - {type: cost_budget, id: daily, per: user, limit_usd: 10.0, period: day}
"""
HEADERS = {"x-org-id": "multi", "x-user-id": "u1"}
GEMINI = "/v1beta/models/gemini-2.0-flash:generateContent"
GEMINI_STREAM = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
CONVERSE = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
CONVERSE_STREAM = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    with running_sidecar(POLICY, tmp_path_factory.mktemp("multi")) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(envoy_factory, sidecar: RunningSidecar) -> EnvoyProcess:  # type: ignore[no-untyped-def]
    return envoy_factory(sidecar.port)


def g_body(text: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def c_body(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": text}]}]}


def gemini_text(resp: Response) -> str:
    # Gemini ends events with CRLF CRLF: read them with a spec-following SSE parser.
    framer = SseFramer()
    out = []
    for ev in framer.feed(resp.body) + framer.flush():
        for cand in ev.payload.get("candidates", []):
            out += [p.get("text", "") for p in cand["content"]["parts"]]
    return "".join(out)


def converse_events(resp: Response) -> list[tuple[str | None, Any]]:
    framer = EventStreamFramer()
    events = framer.feed(resp.body) + framer.flush()
    assert framer.broken is None, framer.broken  # every frame's CRCs check out
    return [(e.event, e.payload) for e in events]


def _response_record(sidecar: RunningSidecar, request_id: str) -> Any:
    sidecar.settle()
    (record,) = [r for r in sidecar.records(request_id) if r.phase == "response"]
    return record


@pytest.mark.parametrize(("path", "build"), [(GEMINI, g_body), (CONVERSE, c_body)])
def test_a_forbidden_keyword_is_blocked_before_the_provider(
    proxy: EnvoyProcess, mock_provider: MockProvider, path: str, build: Any
) -> None:
    resp = http_request(proxy.url, path, build("tell me about project zebra"), headers=HEADERS)
    assert resp.status == 403, resp.body
    assert resp.json()["rule"] == "secrets"
    assert resp.headers["x-policy-decision"] == "block"
    assert mock_provider.stats()["total"] == 0


def test_pii_in_a_gemini_request_is_masked(
    proxy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    resp = http_request(proxy.url, GEMINI, g_body("write to jane@example.org"), headers=HEADERS)
    assert resp.status == 200, resp.body
    answer = resp.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert "jane@example.org" not in answer and answer.startswith("echo: write to ")
    received = mock_provider.stats()
    assert received["last_path"].endswith(":generateContent")
    assert "jane@example.org" not in json.dumps(received["last_body"])


def test_pii_in_a_converse_request_is_masked(
    proxy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    resp = http_request(proxy.url, CONVERSE, c_body("write to jane@example.org"), headers=HEADERS)
    assert resp.status == 200, resp.body
    answer = resp.json()["output"]["message"]["content"][0]["text"]
    assert "jane@example.org" not in answer and answer.startswith("echo: write to ")
    assert "jane@example.org" not in json.dumps(mock_provider.stats()["last_body"])


def test_a_streamed_gemini_answer_reaches_the_client_and_is_charged(
    proxy: EnvoyProcess, mock_provider: MockProvider, sidecar: RunningSidecar
) -> None:
    resp = http_request(proxy.url, GEMINI_STREAM, g_body("stream a few words"), headers=HEADERS)
    assert resp.status == 200, resp.body
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert gemini_text(resp) == "echo: stream a few words"
    record = _response_record(sidecar, resp.headers["x-request-id"])
    frames = gemini(mock_provider.stats()["last_body"], stream=True)
    assert isinstance(frames, list)
    last = json.loads(frames[-1].removeprefix(b"data: "))["usageMetadata"]
    assert record.usage is not None
    got = (record.usage.input_tokens, record.usage.output_tokens)
    assert got == (last["promptTokenCount"], last["candidatesTokenCount"])
    assert record.cost_usd is not None and record.cost_usd > 0


def test_a_converse_stream_arrives_in_event_stream_framing_and_is_charged(
    proxy: EnvoyProcess, mock_provider: MockProvider, sidecar: RunningSidecar
) -> None:
    resp = http_request(proxy.url, CONVERSE_STREAM, c_body("stream a few words"), headers=HEADERS)
    assert resp.status == 200, resp.body
    assert resp.headers["content-type"] == "application/vnd.amazon.eventstream"
    events = converse_events(resp)
    names = [name for name, _ in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    text = "".join(p["delta"]["text"] for name, p in events if name == "contentBlockDelta")
    assert text == "echo: stream a few words"
    record = _response_record(sidecar, resp.headers["x-request-id"])
    usage = events[-1][1]["usage"]
    assert record.usage is not None
    got = (record.usage.input_tokens, record.usage.output_tokens)
    assert got == (usage["inputTokens"], usage["outputTokens"])
    cost = sidecar.sidecar.catalog.cost(
        BEDROCK_MODEL, Usage(usage["inputTokens"], usage["outputTokens"])
    )
    assert cost is not None and cost > 0 and record.cost_usd == pytest.approx(cost)
    assert converse(mock_provider.stats()["last_body"], stream=True)  # it got a Converse body


def test_output_guardrails_redact_in_a_gemini_stream(proxy: EnvoyProcess) -> None:
    prompt = "the aurora project " + "and more words " * 12
    resp = http_request(proxy.url, GEMINI_STREAM, g_body(prompt), headers=HEADERS)
    assert resp.status == 200, resp.body
    text = gemini_text(resp)
    assert b"aurora" not in resp.body
    assert text.startswith("echo: the [REDACTED:codenames] project and more words")


def test_output_guardrails_redact_in_a_converse_stream(proxy: EnvoyProcess) -> None:
    prompt = "the aurora project " + "and more words " * 12
    resp = http_request(proxy.url, CONVERSE_STREAM, c_body(prompt), headers=HEADERS)
    assert resp.status == 200, resp.body
    events = converse_events(resp)  # rewritten frames carry fresh, valid CRCs
    text = "".join(p["delta"]["text"] for name, p in events if name == "contentBlockDelta")
    assert b"aurora" not in resp.body
    assert text.startswith("echo: the [REDACTED:codenames] project and more words")
    assert [n for n, _ in events][-1] == "metadata"


def test_a_gemini_stream_without_alt_sse_is_a_clear_400(proxy: EnvoyProcess) -> None:
    path = GEMINI_STREAM.partition("?")[0]
    resp = http_request(proxy.url, path, g_body("hello"), headers=HEADERS)
    assert resp.status == 400
    assert "alt=sse" in resp.json()["error"]["message"]
