"""Response parsing, rewriting, and server-sent-event streams split anywhere."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.errors import MalformedBody
from policy_extproc.llm.request import Api, PromptPart
from policy_extproc.llm.response import (
    LlmResponse,
    SseEvent,
    SseParser,
    Usage,
    parse_response,
    rewrite_response,
)

# --- parse_response ---------------------------------------------------------------------------

CHAT_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Call me at 555-0100 😀", "refusal": None},
        },
        {
            "index": 1,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"to":"a@b.com"}'},
                    }
                ],
            },
        },
    ],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0},
    },
}

RESPONSES_RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "error": None,
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Bonjour", "annotations": []},
                {"type": "refusal", "refusal": "no"},
            ],
        },
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}x"},
    ],
    "usage": {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 6},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 123,
    },
}

ANTHROPIC_RESPONSE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [
        {"type": "thinking", "thinking": "...", "signature": "s"},
        {"type": "text", "text": "Hi! 東京"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        {"type": "text", "text": "More"},
    ],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 100,
        "output_tokens": 42,
    },
}

PARSE: list[tuple[str, Api, dict[str, Any], Usage | None, list[tuple[Any, str]]]] = [
    (
        "chat",
        "openai.chat",
        CHAT_RESPONSE,
        Usage(120, 30, 100),
        [
            (("choices", 0, "message", "content"), "Call me at 555-0100 😀"),
            (
                ("choices", 1, "message", "tool_calls", 0, "function", "arguments"),
                '{"to":"a@b.com"}',
            ),
        ],
    ),
    (
        "chat content parts",
        "openai.chat",
        {"choices": [{"message": {"content": [{"type": "text", "text": "x"}, {"type": "image"}]}}]},
        None,
        [(("choices", 0, "message", "content", 0, "text"), "x")],
    ),
    (
        "completions",
        "openai.completions",
        {
            "object": "text_completion",
            "choices": [{"index": 0, "text": "return x"}, {"index": 1, "text": ""}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        },
        Usage(5, 7, 0),
        [(("choices", 0, "text"), "return x")],
    ),
    (
        "embeddings",
        "openai.embeddings",
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        },
        Usage(8, 0, 0),
        [],
    ),
    (
        "responses",
        "openai.responses",
        RESPONSES_RESPONSE,
        Usage(36, 87, 6),
        [(("output", 1, "content", 0, "text"), "Bonjour"), (("output", 2, "arguments"), "{}x")],
    ),
    (
        "anthropic",
        "anthropic.messages",
        ANTHROPIC_RESPONSE,
        Usage(115, 42, 100),
        [(("content", 1, "text"), "Hi! 東京"), (("content", 3, "text"), "More")],
    ),
    (
        "odd shapes are skipped",
        "openai.chat",
        {"choices": [5, {"message": "x"}, {"message": {"content": 3}}], "usage": {"x": 1}},
        None,
        [],
    ),
    (
        "usage with junk counts",
        "openai.chat",
        {"choices": "x", "usage": {"prompt_tokens": "5", "completion_tokens": -2}},
        Usage(0, 0, 0),
        [],
    ),
    (
        "openai error",
        "openai.chat",
        {"error": {"message": "Rate limit", "type": "requests", "code": "rate_limit_exceeded"}},
        None,
        [],
    ),
    (
        "anthropic error",
        "anthropic.messages",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        None,
        [],
    ),
    (
        "error with usage still an error",
        "openai.chat",
        {"error": {"message": "x"}, "usage": {"prompt_tokens": 1}},
        None,
        [],
    ),
]


@pytest.mark.parametrize(
    ("name", "api", "body", "usage", "parts"), PARSE, ids=[p[0] for p in PARSE]
)
def test_parse_response(
    name: str, api: Api, body: dict[str, Any], usage: Usage | None, parts: list[tuple[Any, str]]
) -> None:
    resp = parse_response(api, json.dumps(body).encode())
    assert resp.usage == usage
    assert resp.parts == tuple(PromptPart(p, t, "assistant") for p, t in parts)
    assert resp.body == body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "response body is empty"),
        (
            b"<html>502 Bad Gateway</html>",
            "response body is not valid JSON: Expecting value: line 1 column 1 (char 0)",
        ),
        (b"[1]", "response body must be a JSON object, not list"),
    ],
)
def test_parse_response_malformed(body: bytes, message: str) -> None:
    with pytest.raises(MalformedBody) as info:
        parse_response("openai.chat", body)
    assert info.value.message == message


def test_rewrite_response() -> None:
    resp = parse_response("openai.chat", json.dumps(CHAT_RESPONSE).encode())
    before = copy.deepcopy(resp.body)
    out = rewrite_response(resp, {("choices", 0, "message", "content"): "Call me at [PHONE] 😀"})
    assert resp.body == before
    expected = copy.deepcopy(CHAT_RESPONSE)
    expected["choices"][0]["message"]["content"] = "Call me at [PHONE] 😀"
    assert out == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()


def test_rewrite_response_without_changes() -> None:
    resp = LlmResponse(None, (), {"a": "é"})
    assert rewrite_response(resp, {}) == '{"a":"é"}'.encode()


# --- server-sent events -----------------------------------------------------------------------


def _sse(*events: tuple[str | None, Any]) -> bytes:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(out).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }


OPENAI_CHAT_STREAM = b": keep-alive\n\n" + _sse(
    (None, _chunk({"role": "assistant", "content": ""})),
    (None, _chunk({"content": "Hello"})),
    (None, _chunk({"content": " wörld 你好 🤖"})),
    (None, _chunk({}, "stop")),
    (
        None,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": 4,
                "total_tokens": 16,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
        },
    ),
    (None, "[DONE]"),
)

OPENAI_COMPLETIONS_STREAM = _sse(
    (None, {"object": "text_completion", "choices": [{"index": 0, "text": "Hello"}]}),
    (None, {"object": "text_completion", "choices": [{"index": 0, "text": " wörld 你好 🤖"}]}),
    (
        None,
        {
            "object": "text_completion",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5},
        },
    ),
    (None, "[DONE]"),
)

ANTHROPIC_STREAM = _sse(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-3-5-sonnet-20241022",
                "stop_reason": None,
                "usage": {
                    "input_tokens": 25,
                    "cache_read_input_tokens": 5,
                    "cache_creation_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " wörld 你好 🤖"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a'},
        },
    ),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)

RESPONSES_STREAM = _sse(
    (
        "response.created",
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": {"id": "resp_1", "status": "in_progress", "usage": None},
        },
    ),
    (
        "response.output_text.delta",
        {
            "type": "response.output_text.delta",
            "sequence_number": 4,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hello",
        },
    ),
    (
        "response.output_text.delta",
        {
            "type": "response.output_text.delta",
            "sequence_number": 5,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": " wörld 你好 🤖",
        },
    ),
    (
        "response.output_text.done",
        {"type": "response.output_text.done", "sequence_number": 6, "text": "Hello wörld 你好 🤖"},
    ),
    (
        "response.completed",
        {
            "type": "response.completed",
            "sequence_number": 9,
            "response": {
                "id": "resp_1",
                "status": "completed",
                "usage": {
                    "input_tokens": 20,
                    "input_tokens_details": {"cached_tokens": 8},
                    "output_tokens": 6,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 26,
                },
            },
        },
    ),
)

STREAMS: list[tuple[str, Api, bytes, Usage, int]] = [
    ("openai.chat", "openai.chat", OPENAI_CHAT_STREAM, Usage(12, 4, 2), 7),
    ("openai.completions", "openai.completions", OPENAI_COMPLETIONS_STREAM, Usage(3, 5, 0), 4),
    ("anthropic", "anthropic.messages", ANTHROPIC_STREAM, Usage(30, 15, 5), 9),
    ("responses", "openai.responses", RESPONSES_STREAM, Usage(20, 6, 8), 5),
]
STREAM_IDS = [s[0] for s in STREAMS]
TEXT = "Hello wörld 你好 🤖"


def _feed_all(api: Api, chunks: list[bytes]) -> tuple[SseParser, list[SseEvent]]:
    parser = SseParser(api)
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return parser, events


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize(("name", "api", "stream", "usage", "count"), STREAMS, ids=STREAM_IDS)
def test_sse_whole_stream(name: str, api: Api, stream: bytes, usage: Usage, count: int) -> None:
    parser, events = _feed_all(api, [stream])
    assert len(events) == count
    assert b"".join(e.raw for e in events) == stream
    assert all(e.raw.endswith(b"\n\n") for e in events)
    assert parser.usage == usage
    assert "".join(t for e in events if (t := parser.delta_text(e)) is not None) == TEXT
    assert parser.flush() == []


@pytest.mark.parametrize(("name", "api", "stream", "usage", "count"), STREAMS, ids=STREAM_IDS)
def test_sse_split_at_every_byte(
    name: str, api: Api, stream: bytes, usage: Usage, count: int
) -> None:
    _, whole = _feed_all(api, [stream])
    for cut in range(len(stream) + 1):
        parser, events = _feed_all(api, [stream[:cut], stream[cut:]])
        assert events == whole, cut
        assert parser.usage == usage
    # And one byte at a time, through every UTF-8 sequence of the text.
    parser, events = _feed_all(api, [stream[i : i + 1] for i in range(len(stream))])
    assert events == whole
    assert parser.usage == usage


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_sse_any_chunking_gives_the_same_events(data: st.DataObject) -> None:
    _, api, stream, usage, _ = data.draw(st.sampled_from(STREAMS), label="stream")
    newline = data.draw(st.sampled_from([b"\n", b"\r\n", b"\r"]), label="newline")
    stream = stream.replace(b"\n", newline)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40), label="cuts")
    whole_parser, whole = _feed_all(api, [stream])
    parser, events = _feed_all(api, _split(stream, cuts))
    assert events == whole
    # With bare-CR line ends the final CR could still become a CRLF: flush gives it at the end.
    events += parser.flush()
    assert events == whole + whole_parser.flush()
    assert b"".join(e.raw for e in events) == stream  # pass-through loses no byte
    assert parser.usage == usage
    assert "".join(t for e in events if (t := parser.delta_text(e)) is not None) == TEXT


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: a\n\n", [(None, "a", b"data: a\n\n")]),
        (b"data: a\r\n\r\n", [(None, "a", b"data: a\r\n\r\n")]),
        (b"data: a\r\rdata: b\n\n", [(None, "a", b"data: a\r\r"), (None, "b", b"data: b\n\n")]),
        (b"data: a\n\r\n", [(None, "a", b"data: a\n\r\n")]),
        (b"event: x\ndata: 1\ndata: 2\n\n", [("x", "1\n2", b"event: x\ndata: 1\ndata: 2\n\n")]),
        (
            b"data:no-space\nid: 7\nretry: 10\n\n",
            [(None, "no-space", b"data:no-space\nid: 7\nretry: 10\n\n")],
        ),
        (b": comment\n\n", [(None, "", b": comment\n\n")]),
        (b"\xef\xbb\xbfdata: bom\n\n", [(None, "bom", b"\xef\xbb\xbfdata: bom\n\n")]),
        (b"data\n\n", [(None, "", b"data\n\n")]),
        (b"data: a\n", []),  # not terminated yet
        (b"data: a\r\n\r", []),  # the last CR may be half of a CRLF
    ],
)
def test_sse_framing(stream: bytes, expected: list[tuple[str | None, str, bytes]]) -> None:
    events = SseParser("openai.chat").feed(stream)
    assert [(e.event, e.data, e.raw) for e in events] == expected


def test_sse_flush_returns_the_unterminated_tail() -> None:
    parser = SseParser("openai.chat")
    assert parser.feed(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DO') != []
    tail = parser.flush()
    assert [(e.data, e.raw) for e in tail] == [("[DO", b"data: [DO")]
    assert parser.flush() == []


@pytest.mark.parametrize(
    ("api", "data", "text"),
    [
        ("openai.chat", '{"choices":[{"delta":{"content":"hi"}}]}', "hi"),
        ("openai.chat", '{"choices":[{"delta":{"role":"assistant","content":""}}]}', ""),
        ("openai.chat", '{"choices":[{"delta":{"tool_calls":[]}}]}', None),
        ("openai.chat", '{"choices":[],"usage":{"prompt_tokens":1}}', None),
        ("openai.chat", "[DONE]", None),
        ("openai.chat", "not json", None),
        ("openai.chat", '{"choices":[5]}', None),
        ("openai.completions", '{"choices":[{"text":"t"}]}', "t"),
        ("openai.responses", '{"type":"response.output_text.delta","delta":"d"}', "d"),
        ("openai.responses", '{"type":"response.refusal.delta","delta":"d"}', None),
        (
            "anthropic.messages",
            '{"type":"content_block_delta","delta":{"type":"text_delta","text":"a"}}',
            "a",
        ),
        (
            "anthropic.messages",
            '{"type":"content_block_delta","delta":{"type":"thinking_delta","thinking":"a"}}',
            None,
        ),
        ("anthropic.messages", '{"type":"ping"}', None),
        ("openai.embeddings", '{"choices":[{"delta":{"content":"hi"}}]}', None),
    ],
)
def test_delta_text(api: Api, data: str, text: str | None) -> None:
    parser = SseParser(api)
    (event,) = parser.feed(f"data: {data}\n\n".encode())
    assert parser.delta_text(event) == text


@pytest.mark.parametrize(
    ("api", "stream", "usage"),
    [
        ("openai.chat", _sse((None, _chunk({"content": "x"})), (None, "[DONE]")), None),
        ("anthropic.messages", _sse(("ping", {"type": "ping"})), None),
        # message_delta alone (no message_start seen) still reports what it knows
        (
            "anthropic.messages",
            _sse(("message_delta", {"type": "message_delta", "usage": {"output_tokens": 9}})),
            Usage(0, 9, 0),
        ),
        # newer API versions repeat cumulative input counts in message_delta
        (
            "anthropic.messages",
            _sse(
                (
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {"usage": {"input_tokens": 4, "output_tokens": 1}},
                    },
                ),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "usage": {
                            "input_tokens": 4,
                            "cache_read_input_tokens": 6,
                            "output_tokens": 20,
                        },
                    },
                ),
            ),
            Usage(10, 20, 6),
        ),
        (
            "openai.responses",
            _sse(
                (
                    "response.incomplete",
                    {
                        "type": "response.incomplete",
                        "response": {"usage": {"input_tokens": 3, "output_tokens": 100}},
                    },
                )
            ),
            Usage(3, 100, 0),
        ),
        (
            "openai.responses",
            _sse(("response.created", {"type": "response.created", "response": {"usage": None}})),
            None,
        ),
    ],
)
def test_sse_usage(api: Api, stream: bytes, usage: Usage | None) -> None:
    parser, _ = _feed_all(api, [stream])
    assert parser.usage == usage
