"""What an answer says about itself (gen_ai.response.model / .id / .finish_reasons), read from
every API format's buffered body and stream, the mock provider's and the API references' shapes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from policy_extproc.audit.otel import attributes
from policy_extproc.audit.record import AuditRecord
from policy_extproc.llm.apis.base import Api
from policy_extproc.llm.apis.wire import ResponseInfo, answer_info
from policy_extproc.llm.response import SseParser, UsageChunkFilter, parse_response
from policy_extproc.mockprovider.routes import api_for

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say hello"}]}
PROMPT = {"model": "gpt-3.5-turbo-instruct", "prompt": "say hello"}
RESPONSES = {"model": "gpt-4o-mini", "input": "say hello"}
CLAUDE = {"model": "claude-3-5-haiku", "max_tokens": 64, "messages": CHAT["messages"]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "say hello"}]}]}
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "say hello"}]}]}

# (api, path, body, model expected, id prefix expected (None: no id), finish reasons)
CASES = [
    ("openai.chat", "/v1/chat/completions", CHAT, "gpt-4o-mini", "chatcmpl-", ("stop",)),
    ("openai.completions", "/v1/completions", PROMPT, "gpt-3.5-turbo-instruct", "cmpl-",
     ("stop",)),
    ("openai.responses", "/v1/responses", RESPONSES, "gpt-4o-mini", "resp_", ("completed",)),
    ("anthropic.messages", "/v1/messages", CLAUDE, "claude-3-5-haiku", "msg_", ("end_turn",)),
    ("google.gemini", "/v1beta/models/gemini-2.0-flash:generateContent", GEMINI,
     "gemini-2.0-flash", None, ("STOP",)),
    ("aws.converse", "/model/anthropic.claude-3-haiku/converse", CONVERSE, None, None,
     ("end_turn",)),
]  # fmt: skip
STREAM_PATHS = {
    "google.gemini": "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
    "aws.converse": "/model/anthropic.claude-3-haiku/converse-stream",
}


def _check(info: ResponseInfo | None, model: str | None, id_prefix: str | None,
           reasons: tuple[str, ...]) -> None:  # fmt: skip
    assert info is not None
    assert info.model == model
    if id_prefix is None:
        assert info.id is None
    else:
        assert info.id is not None and info.id.startswith(id_prefix)
    assert info.finish_reasons == reasons


@pytest.mark.parametrize(("api", "path", "body", "model", "id_prefix", "reasons"), CASES)
def test_a_buffered_answer_says_its_model_id_and_finish_reasons(
    api: Api, path: str, body: dict[str, Any], model: str | None, id_prefix: str | None,
    reasons: tuple[str, ...],
) -> None:  # fmt: skip
    handler = api_for(path)
    assert handler is not None
    answer = handler(body)
    assert isinstance(answer, dict)
    _check(parse_response(api, json.dumps(answer).encode()).info, model, id_prefix, reasons)


@pytest.mark.parametrize(("api", "path", "body", "model", "id_prefix", "reasons"), CASES)
def test_a_streamed_answer_says_the_same_whatever_the_chunking(
    api: Api, path: str, body: dict[str, Any], model: str | None, id_prefix: str | None,
    reasons: tuple[str, ...],
) -> None:  # fmt: skip
    handler = api_for(STREAM_PATHS.get(api, path))
    assert handler is not None
    frames = handler({**body, "stream": True})
    assert isinstance(frames, list)
    data = b"".join(frames)
    for size in (len(data), 7):  # whole, then in small pieces cut anywhere
        parser = SseParser(api)
        for at in range(0, len(data), size):
            parser.feed(data[at : at + size])
        parser.flush()
        _check(parser.info, model, id_prefix, reasons)


def test_embeddings_name_their_model_only() -> None:
    handler = api_for("/v1/embeddings")
    assert handler is not None
    answer = handler({"model": "text-embedding-3-small", "input": "hello"})
    info = parse_response("openai.embeddings", json.dumps(answer).encode()).info
    assert info == ResponseInfo(model="text-embedding-3-small")


def test_every_choice_has_its_reason_in_order() -> None:
    message = {"role": "assistant", "content": "a"}
    body = {
        "id": "chatcmpl-abc",
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {"index": 0, "message": message, "finish_reason": "stop"},
            {"index": 1, "message": message, "finish_reason": "length"},
        ],
    }
    info = parse_response("openai.chat", json.dumps(body).encode()).info
    # The model that answered (a dated snapshot), not the one asked for.
    assert info == ResponseInfo("gpt-4o-2024-08-06", "chatcmpl-abc", ("stop", "length"))


def test_the_usage_filter_reads_the_info_of_the_stream_it_filters() -> None:
    handler = api_for("/v1/chat/completions")
    assert handler is not None
    frames = handler({**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert isinstance(frames, list)
    usage_filter = UsageChunkFilter("openai.chat")
    for frame in frames:
        usage_filter.feed(frame, False)
    usage_filter.feed(b"", True)
    _check(usage_filter.info, "gpt-4o-mini", "chatcmpl-", ("stop",))
    assert usage_filter.usage is not None


def test_an_incomplete_response_gives_its_reason() -> None:
    body = {"id": "resp_1", "object": "response", "model": "o3", "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"}, "output": []}  # fmt: skip
    info = parse_response("openai.responses", json.dumps(body).encode()).info
    assert info == ResponseInfo("o3", "resp_1", ("max_output_tokens",))


def test_an_error_body_or_a_strange_one_says_nothing() -> None:
    error = {"error": {"message": "overloaded", "type": "server_error"}}
    assert parse_response("openai.chat", json.dumps(error).encode()).info is None
    odd = {"id": 7, "model": ["x"], "choices": [{"finish_reason": {"a": 1}}, "x"]}
    assert parse_response("openai.chat", json.dumps(odd).encode()).info is None


def test_what_a_provider_says_is_bounded() -> None:
    info = answer_info(None, model="m" * 1000, id="i" * 1000, reasons=["stop"] * 100)
    assert info is not None
    assert len(info.model or "") == 200 and len(info.id or "") == 200
    assert len(info.finish_reasons) == 16
    # The first model and id named win; reasons add up (one per choice).
    later = answer_info(info, model="other", id="other", reasons=["length"])
    assert later is not None and later.model == info.model and later.id == info.id


def test_the_span_carries_what_the_record_says() -> None:
    record = AuditRecord(
        decision="allow", policy=None, rule=None, reason="no rule fired", user=None,
        environment=None, timestamp="2026-12-02T07:00:00.000000Z", request_id="r-1",
        phase="response", response_model="gpt-4o-2024-08-06", response_id="chatcmpl-1",
        finish_reasons=("stop", "length"), server_address="api.openai.com", server_port=443,
    )  # fmt: skip
    attrs = attributes(record)
    assert attrs["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert attrs["gen_ai.response.id"] == "chatcmpl-1"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop", "length")
    assert (attrs["server.address"], attrs["server.port"]) == ("api.openai.com", 443)
    assert AuditRecord.from_dict(record.to_dict()) == record
    # A request record says nothing of an answer, and a provider without an address no server.
    bare = attributes(AuditRecord.from_dict({**record.to_dict(), "response_model": None,
                      "response_id": None, "finish_reasons": [], "server_address": None,
                      "server_port": None}))  # fmt: skip
    assert not {k for k in bare if k.startswith(("gen_ai.response.", "server."))}
