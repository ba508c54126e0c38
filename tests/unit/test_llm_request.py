"""Request parsing, rewriting and token estimates for every supported LLM API."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from policy_extproc.errors import MalformedBody, UnknownApi
from policy_extproc.llm.request import (
    LlmRequest,
    detect_api,
    dump_json,
    parse_request,
    rewrite_request,
)
from policy_extproc.llm.tokens import estimate_request_tokens, estimate_tokens

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"


def _parse(path: str, body: Any) -> LlmRequest:
    return parse_request(path, json.dumps(body).encode())


# --- detect_api -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/chat/completions", "openai.chat"),
        ("/v1/chat/completions?foo=bar", "openai.chat"),
        ("/v1/chat/completions/", "openai.chat"),
        ("/openai/v1/chat/completions", "openai.chat"),
        ("/v1/completions", "openai.completions"),
        ("/v1/embeddings", "openai.embeddings"),
        ("/v1/responses", "openai.responses"),
        ("/proxy/openai/v1/responses#frag", "openai.responses"),
        ("/v1/messages", "anthropic.messages"),
        ("/anthropic/v1/messages?beta=true", "anthropic.messages"),
        ("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", "openai.chat"),
        ("/openai/deployments/my-dep/completions?api-version=2024-10-21", "openai.completions"),
        ("/openai/deployments/emb/embeddings?api-version=2024-10-21", "openai.embeddings"),
        ("/openai/responses?api-version=2025-03-01-preview", "openai.responses"),
    ],
)
def test_detect_api(path: str, api: str) -> None:
    assert detect_api(path) == api


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "",
        "/v1/models",
        "/v2/chat/completions",
        "/v1/messages/count_tokens",
        "/xv1/chat/completions",
        "/v1/chat/completions-x",
        "/openai/deployments//chat/completions",
        "/v1/images/generations?x=/v1/chat/completions",
    ],
)
def test_detect_api_unknown(path: str) -> None:
    with pytest.raises(UnknownApi) as info:
        detect_api(path)
    assert info.value.message.startswith(f"unknown LLM API path {path!r}: expected ")
    assert info.value.code == "unknown_api"


def test_detect_api_shortens_long_paths_in_the_message() -> None:
    with pytest.raises(UnknownApi) as info:
        detect_api("/x" * 1000)
    assert len(info.value.message) < 400


# --- parse_request: good bodies ---------------------------------------------------------------

GOOD: list[tuple[str, str, dict[str, Any], list[tuple[tuple[str | int, ...], str, str]]]] = [
    (
        "chat string contents",
        CHAT,
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi there", "name": "bob"},
            ],
        },
        [
            (("messages", 0, "content"), "Be brief.", "system"),
            (("messages", 1, "content"), "Hi there", "user"),
            (("messages", 1, "name"), "bob", "user"),  # the model reads names too
        ],
    ),
    (
        "chat content parts skip images",
        CHAT,
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look:"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                        {"type": "text", "text": "what is it?", "extra": 1},
                    ],
                },
            ],
        },
        [
            (("messages", 0, "content", 0, "text"), "rules", "developer"),
            (("messages", 1, "content", 0, "text"), "look:", "user"),
            (("messages", 1, "content", 3, "text"), "what is it?", "user"),
        ],
    ),
    (
        "chat tool calls and tool messages",
        CHAT,
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "wx", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "rain"},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
                {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            ],
        },
        [
            (("messages", 0, "content"), "weather?", "user"),
            (("messages", 1, "tool_calls", 0, "function", "name"), "wx", "assistant"),
            (
                ("messages", 1, "tool_calls", 0, "function", "arguments"),
                '{"city":"Oslo"}',
                "assistant",
            ),
            (("messages", 2, "content"), "rain", "tool"),
            (("messages", 3, "content", 0, "refusal"), "no", "assistant"),
            (("messages", 4, "function_call", "name"), "f", "assistant"),
            (("messages", 4, "function_call", "arguments"), "{}", "assistant"),
        ],
    ),
    (
        "chat empty strings are no parts",
        CHAT,
        {"messages": [{"role": "user", "content": ""}, {"role": "user", "content": []}]},
        [],
    ),
    (
        "completions string and suffix",
        COMPLETIONS,
        {"model": "gpt-3.5-turbo-instruct", "prompt": "def f(", "suffix": "return x"},
        [(("prompt",), "def f(", ""), (("suffix",), "return x", "")],
    ),
    (
        "completions list of strings",
        COMPLETIONS,
        {"prompt": ["one", "", "two"]},
        [(("prompt", 0), "one", ""), (("prompt", 2), "two", "")],
    ),
    ("completions token arrays have no text", COMPLETIONS, {"prompt": [[1, 2], [3]]}, []),
    ("completions single token array", COMPLETIONS, {"prompt": [1, 2, 3]}, []),
    (
        "embeddings string",
        EMBEDDINGS,
        {"model": "text-embedding-3-small", "input": "héllo"},
        [(("input",), "héllo", "")],
    ),
    (
        "embeddings list",
        EMBEDDINGS,
        {"input": ["a", "b"], "dimensions": 256},
        [(("input", 0), "a", ""), (("input", 1), "b", "")],
    ),
    (
        "responses string input",
        RESPONSES,
        {"model": "gpt-4.1", "instructions": "Talk like a pirate.", "input": "Hello"},
        [(("instructions",), "Talk like a pirate.", "system"), (("input",), "Hello", "user")],
    ),
    (
        "responses items",
        RESPONSES,
        {
            "model": "o3",
            "input": [
                {"role": "user", "content": "plain"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "a"},
                        {"type": "input_image", "image_url": "https://x/y.png"},
                        {"type": "input_file", "file_id": "f"},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "b", "annotations": []}],
                },
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"q":1}'},
                {"type": "function_call_output", "call_id": "c", "output": "42"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "item_reference", "id": "msg_1"},
            ],
        },
        [
            (("input", 0, "content"), "plain", "user"),
            (("input", 1, "content", 0, "text"), "a", "user"),
            (("input", 2, "content", 0, "text"), "b", "assistant"),
            (("input", 3, "arguments"), '{"q":1}', "assistant"),
            (("input", 3, "name"), "f", "assistant"),
            (("input", 4, "output"), "42", "tool"),
        ],
    ),
    ("responses without input", RESPONSES, {"previous_response_id": "resp_1"}, []),
    (
        "anthropic string system and contents",
        MESSAGES,
        {
            "model": "claude-3-5-sonnet-20241022",
            "max_tokens": 1024,
            "system": "Be terse.",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ],
        },
        [
            (("system",), "Be terse.", "system"),
            (("messages", 0, "content"), "Hi", "user"),
            (("messages", 1, "content"), "Hello", "assistant"),
        ],
    ),
    (
        "anthropic blocks",
        MESSAGES,
        {
            "model": "claude-sonnet-4-0",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                        },
                        {"type": "text", "text": "what?"},
                        {
                            "type": "document",
                            "source": {
                                "type": "text",
                                "media_type": "text/plain",
                                "data": "doc body",
                            },
                        },
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBERi0=",
                            },
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "out"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "content": [{"type": "text", "text": "more"}],
                        },
                        {"type": "tool_result", "tool_use_id": "t3"},
                    ],
                },
            ],
        },
        [
            (("system", 0, "text"), "sys", "system"),
            (("messages", 0, "content", 1, "text"), "what?", "user"),
            (("messages", 0, "content", 2, "source", "data"), "doc body", "user"),
            (("messages", 1, "content", 0, "thinking"), "hmm", "assistant"),
            (("messages", 1, "content", 1, "name"), "f", "assistant"),
            (("messages", 2, "content", 0, "content"), "out", "tool"),
            (("messages", 2, "content", 1, "content", 0, "text"), "more", "tool"),
        ],
    ),
]


@pytest.mark.parametrize(("name", "path", "body", "parts"), GOOD, ids=[g[0] for g in GOOD])
def test_parse_good(
    name: str, path: str, body: dict[str, Any], parts: list[tuple[tuple[str | int, ...], str, str]]
) -> None:
    req = _parse(path, body)
    assert [(p.path, p.text, p.role) for p in req.parts] == parts
    assert req.body == body
    assert req.model == body.get("model", "")
    assert req.prompt_text == "\n".join(t for _, t, _ in parts)
    # Every path leads to its text in the body.
    for part in req.parts:
        node: Any = req.body
        for key in part.path:
            node = node[key]
        assert node == part.text


@pytest.mark.parametrize(
    ("path", "body", "max_tokens", "stream"),
    [
        (CHAT, {"messages": [], "max_tokens": 100}, 100, False),
        (CHAT, {"messages": [], "max_tokens": 100, "max_completion_tokens": 50}, 50, False),
        (CHAT, {"messages": [], "max_completion_tokens": None, "max_tokens": 7}, 7, False),
        (
            CHAT,
            {"messages": [], "stream": True, "stream_options": {"include_usage": True}},
            None,
            True,
        ),
        (CHAT, {"messages": [], "stream": None}, None, False),
        (COMPLETIONS, {"prompt": "x", "max_tokens": 16, "stream": True}, 16, True),
        (EMBEDDINGS, {"input": "x", "max_tokens": 16}, None, False),
        (RESPONSES, {"input": "x", "max_output_tokens": 500, "max_tokens": 1}, 500, False),
        (MESSAGES, {"messages": [], "max_tokens": 1024, "stream": False}, 1024, False),
    ],
)
def test_parse_max_tokens_and_stream(
    path: str, body: dict[str, Any], max_tokens: int | None, stream: bool
) -> None:
    req = _parse(path, body)
    assert (req.max_tokens, req.stream, req.model) == (max_tokens, stream, "")


def test_parse_accepts_utf8_bom_and_whitespace() -> None:
    req = parse_request(CHAT, b'\xef\xbb\xbf {"messages": []}\n')
    assert req.parts == ()


def test_prompt_text_is_computed_once() -> None:
    req = _parse(
        CHAT, {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    )
    assert req.prompt_text == "a\nb"
    assert req.prompt_text is req.prompt_text


# --- parse_request: malformed bodies ----------------------------------------------------------

BAD: list[tuple[str, bytes | dict[str, Any], str]] = [
    (CHAT, b"", "request body is empty"),
    (CHAT, b"  \n", "request body is empty"),
    (
        CHAT,
        b"{",
        "request body is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)",
    ),
    (
        CHAT,
        b'{"messages": []} x',
        "request body is not valid JSON: Extra data: line 1 column 18 (char 17)",
    ),
    (
        CHAT,
        b"\xff\xfe\xfd",
        "request body is not valid JSON: 'utf-8' codec can't decode byte "
        "0xff in position 0: invalid start byte",
    ),
    (CHAT, b"[]", "request body must be a JSON object, not list"),
    (CHAT, b'"text"', "request body must be a JSON object, not str"),
    (CHAT, {"model": "gpt-4o"}, "field 'messages' is required"),
    (CHAT, {"messages": {}}, "field 'messages' must be a list"),
    (CHAT, {"messages": "hi"}, "field 'messages' must be a list"),
    (CHAT, {"messages": ["hi"]}, "field 'messages[0]' must be an object"),
    (CHAT, {"messages": [{"content": "x"}]}, "field 'messages[0].role' is required"),
    (
        CHAT,
        {"messages": [{"role": 1, "content": "x"}]},
        "field 'messages[0].role' must be a string",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": 5}]},
        "field 'messages[0].content' must be a string, a list of content parts or null",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": ["x"]}]},
        "field 'messages[0].content[0]' must be an object",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
        "field 'messages[0].content[0].type' must be a string",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "field 'messages[0].content[0].text' must be a string",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "field 'messages[0].content[0].text' must be a string",
    ),
    (
        CHAT,
        {"messages": [{"role": "assistant", "tool_calls": {}}]},
        "field 'messages[0].tool_calls' must be a list",
    ),
    (
        CHAT,
        {"messages": [{"role": "assistant", "tool_calls": [5]}]},
        "field 'messages[0].tool_calls[0]' must be an object",
    ),
    (
        CHAT,
        {"messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]},
        "field 'messages[0].tool_calls[0].function' must be an object",
    ),
    (
        CHAT,
        {
            "messages": [
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
            ]
        },
        "field 'messages[0].tool_calls[0].function.arguments' must be a string",
    ),
    (CHAT, {"messages": [], "model": 5}, "field 'model' must be a string"),
    (CHAT, {"messages": [], "stream": "yes"}, "field 'stream' must be a boolean"),
    (CHAT, {"messages": [], "max_tokens": "10"}, "field 'max_tokens' must be an integer"),
    (CHAT, {"messages": [], "max_tokens": True}, "field 'max_tokens' must be an integer"),
    (
        CHAT,
        {"messages": [], "max_completion_tokens": 1.5},
        "field 'max_completion_tokens' must be an integer",
    ),
    (COMPLETIONS, {"model": "m"}, "field 'prompt' is required"),
    (
        COMPLETIONS,
        {"prompt": 5},
        "field 'prompt' must be a string, a list of strings or a token array",
    ),
    (COMPLETIONS, {"prompt": ["a", {}]}, "field 'prompt[1]' must be a string or a token array"),
    (COMPLETIONS, {"prompt": [[1, "a"]]}, "field 'prompt[0]' must be a string or a token array"),
    (COMPLETIONS, {"prompt": "x", "suffix": 1}, "field 'suffix' must be a string"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": -0.5}, "field 'max_tokens' must be an integer"),
    (EMBEDDINGS, {"model": "m"}, "field 'input' is required"),
    (EMBEDDINGS, {"input": [True]}, "field 'input[0]' must be a string or a token array"),
    (RESPONSES, {"instructions": 1}, "field 'instructions' must be a string"),
    (RESPONSES, {"input": 5}, "field 'input' must be a string or a list of input items"),
    (RESPONSES, {"input": [1]}, "field 'input[0]' must be an object"),
    (RESPONSES, {"input": [{"role": "user"}]}, "field 'input[0].content' is required"),
    (
        RESPONSES,
        {"input": [{"type": "message", "content": "x"}]},
        "field 'input[0].role' is required",
    ),
    (RESPONSES, {"input": [{"type": 5}]}, "field 'input[0].type' must be a string"),
    (
        RESPONSES,
        {"input": [{"role": "user", "content": 3}]},
        "field 'input[0].content' must be a string or a list of content parts",
    ),
    (
        RESPONSES,
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        "field 'input[0].content[0].text' must be a string",
    ),
    (
        RESPONSES,
        {"input": [{"type": "function_call", "arguments": {}}]},
        "field 'input[0].arguments' must be a string",
    ),
    (
        RESPONSES,
        {"input": [{"type": "function_call_output", "call_id": "c"}]},
        "field 'input[0].output' is required",
    ),
    (
        RESPONSES,
        {"input": "x", "max_output_tokens": "5"},
        "field 'max_output_tokens' must be an integer",
    ),
    (MESSAGES, {"max_tokens": 5}, "field 'messages' is required"),
    (
        MESSAGES,
        {"messages": [], "system": 5},
        "field 'system' must be a string or a list of text blocks",
    ),
    (
        MESSAGES,
        {"messages": [], "system": [{"type": "text"}]},
        "field 'system[0].text' must be a string",
    ),
    (MESSAGES, {"messages": [{"role": "user"}]}, "field 'messages[0].content' is required"),
    (MESSAGES, {"messages": [{"content": "x"}]}, "field 'messages[0].role' is required"),
    (
        MESSAGES,
        {"messages": [{"role": "user", "content": 5}]},
        "field 'messages[0].content' must be a string or a list of content blocks",
    ),
    (
        MESSAGES,
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": 5}]}]},
        "field 'messages[0].content[0].content' must be a string or a list of content blocks",
    ),
    (
        MESSAGES,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "content": [{"type": "text"}]}],
                }
            ]
        },
        "field 'messages[0].content[0].content[0].text' must be a string",
    ),
]


@pytest.mark.parametrize(("path", "body", "message"), BAD, ids=[b[2] for b in BAD])
def test_parse_malformed(path: str, body: bytes | dict[str, Any], message: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(MalformedBody) as info:
        parse_request(path, raw)
    assert info.value.message == message
    assert (info.value.code, info.value.http_status) == ("malformed_body", 400)


def test_parse_deeply_nested_json_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedBody, match=r"^request body is not valid JSON: "):
        parse_request(CHAT, b"[" * 200_000 + b"]" * 200_000)


def test_parse_unknown_path_wins_over_body() -> None:
    with pytest.raises(UnknownApi):
        parse_request("/v1/models", b"not json")


# --- rewrite_request --------------------------------------------------------------------------

REWRITE_BODY: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "Ты помощник 🤖"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "my email is a@b.com"},
                {"type": "image_url", "image_url": {"url": "u"}},
            ],
        },
        {"role": "user", "content": "SSN 123-45-6789, 東京"},
    ],
    "temperature": 0.5,
    "stream": True,
}


def test_rewrite_replaces_only_named_parts() -> None:
    req = _parse(CHAT, REWRITE_BODY)
    before = copy.deepcopy(req.body)
    out = rewrite_request(
        req,
        {
            ("messages", 1, "content", 0, "text"): "my email is [EMAIL]",
            ("messages", 2, "content"): "SSN [US_SSN], 東京",
        },
    )
    assert req.body == before  # not mutated
    result = json.loads(out)
    expected = copy.deepcopy(REWRITE_BODY)
    expected["messages"][1]["content"][0]["text"] = "my email is [EMAIL]"
    expected["messages"][2]["content"] = "SSN [US_SSN], 東京"
    assert result == expected
    assert list(result) == list(REWRITE_BODY)  # field order kept
    # Compact UTF-8, not \u escapes: what a content-length header must count is len(bytes).
    assert "東京".encode() in out and "🤖".encode() in out
    assert out == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(out) == len(out.decode("utf-8").encode("utf-8"))
    reparsed = parse_request(CHAT, out)
    assert [p.text for p in reparsed.parts] == [
        "Ты помощник 🤖",
        "my email is [EMAIL]",
        "SSN [US_SSN], 東京",
    ]


def test_rewrite_model_and_fields() -> None:
    req = _parse(CHAT, REWRITE_BODY)
    out = json.loads(
        rewrite_request(
            req,
            {},
            model="gpt-4o-mini",
            set_fields={"stream_options": {"include_usage": True}, "temperature": 0},
        )
    )
    assert out["model"] == "gpt-4o-mini"
    assert out["temperature"] == 0
    assert list(out) == [*REWRITE_BODY, "stream_options"]
    assert req.body == REWRITE_BODY


def test_rewrite_sets_model_when_absent() -> None:
    req = _parse(MESSAGES, {"messages": [{"role": "user", "content": "x"}]})
    assert json.loads(rewrite_request(req, {}, model="claude-3-haiku"))["model"] == "claude-3-haiku"


def test_rewrite_without_changes_is_compact_json_of_the_body() -> None:
    req = parse_request(CHAT, b'{ "messages" : [ {"role": "user", "content": "h\\u00e9"} ] }')
    assert rewrite_request(req, {}) == '{"messages":[{"role":"user","content":"hé"}]}'.encode()


def test_dump_json_keeps_lone_surrogates_escaped() -> None:
    # Requests with lone surrogates are refused (test_llm_apis.py); a provider's answer may
    # still carry one, and dump_json must not fail on it.
    out = dump_json({"messages": [{"role": "user", "content": "é\ud800"}]})
    assert out == b'{"messages":[{"role":"user","content":"\\u00e9\\ud800"}]}'


@pytest.mark.parametrize(
    "path",
    [
        (),
        ("nope",),
        ("messages", 9, "content"),
        ("messages", -1, "content"),
        ("messages", "0", "content"),
        ("messages", 0),
        ("model",) * 2,
        ("messages", 1, "content", 1, "image_url"),
    ],
)
def test_rewrite_rejects_paths_without_a_string(path: tuple[str | int, ...]) -> None:
    req = _parse(CHAT, REWRITE_BODY)
    with pytest.raises(ValueError):
        rewrite_request(req, {path: "x"})


def test_rewrite_rejects_overlapping_paths() -> None:
    req = _parse(CHAT, REWRITE_BODY)
    with pytest.raises(ValueError, match=r"overlaps|inside"):
        rewrite_request(
            req, {("messages", 1, "content"): "x", ("messages", 1, "content", 0, "text"): "y"}
        )


# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("x" * 4000, 1000),
        ("東京都" * 10, 30),  # CJK: about one token per character
        ("привет" * 4, 15),  # 2-byte scripts: 0.625 per character, rounded up
        ("🤖" * 8, 11),  # 4-byte characters: more than one token each
        ("\ud800", 1),  # a lone surrogate does not raise
    ],
)
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_estimate_tokens_grows_with_non_ascii() -> None:
    ascii_only = estimate_tokens("a" * 100)
    assert ascii_only < estimate_tokens("a" * 90 + "é" * 10) < estimate_tokens("a" * 90 + "字" * 10)


@pytest.mark.parametrize(
    ("path", "body", "tokens"),
    [
        # 2 messages: text "abcdefgh\nijkl" (13 chars -> 4) + 3 per message + 3 reply priming
        (
            CHAT,
            {
                "messages": [
                    {"role": "system", "content": "abcdefgh"},
                    {"role": "user", "content": "ijkl"},
                ]
            },
            4 + 6 + 3,
        ),
        (
            MESSAGES,
            {"system": "abcd", "messages": [{"role": "user", "content": "efgh"}]},
            3 + 6 + 3,
        ),
        (RESPONSES, {"instructions": "abcd", "input": "efgh"}, 3 + 6 + 3),
        (RESPONSES, {"input": [{"role": "user", "content": "abcd"}]}, 1 + 3 + 3),
        (COMPLETIONS, {"prompt": "abcdefgh"}, 2),
        (EMBEDDINGS, {"input": ["abcd", "efgh"]}, 3),
    ],
)
def test_estimate_request_tokens(path: str, body: dict[str, Any], tokens: int) -> None:
    assert estimate_request_tokens(_parse(path, body)) == tokens
