"""The API format modules: every string the model reads is a part, declared non-text is not,
joined text shares a group, base64 text documents round-trip, and bad JSON is a clear 400."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_extproc.errors import MalformedBody, RequestError
from policy_extproc.llm.request import LlmRequest, parse_request, rewrite_request
from policy_extproc.sources.files import load_paths
from tests.llm_fields import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    FIELDS,
    MESSAGES,
    RESPONSES,
    Field,
    at,
    b64,
)

MARK = "zebracorn secret"


def _parse(path: str, body: Any) -> LlmRequest:
    return parse_request(path, json.dumps(body).encode())


# --- every field that carries text is scanned -------------------------------------------------


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_field_is_a_part(f: Field) -> None:
    req = _parse(f.path, f.build(MARK))
    assert len({p.path for p in req.parts}) == len(req.parts)
    found = [p for p in req.parts if p.path == f.at]
    assert [p.text for p in found] == [MARK]
    assert at(req.body, f.at) == f.stored(MARK)
    if f.encoding is not None:
        assert req.encoded[f.at] == f.encoding


@pytest.mark.parametrize("f", [f for f in FIELDS if f.encoding is not None], ids=lambda f: f.name)
def test_a_rewritten_base64_document_is_encoded_again(f: Field) -> None:
    req = _parse(f.path, f.build("mail jane@example.org"))
    out = json.loads(rewrite_request(req, {f.at: "mail [EMAIL]"}))
    assert f.decode(at(out, f.at)) == "mail [EMAIL]"
    expected = f.build("mail [EMAIL]")
    assert out == expected  # the rest of the body unchanged


# --- what is declared not text is not scanned -------------------------------------------------

Z = "zzmarker"
NOT_TEXT: list[tuple[str, str, dict[str, Any]]] = [
    (
        "chat ids, enums, urls, media",
        CHAT,
        {
            "model": Z,
            "user": Z,
            "service_tier": Z,
            "reasoning_effort": Z,
            "tool_choice": Z,
            "response_format": {"type": Z},
            "stream_options": {"include_usage": True},
            "tools": [{"type": Z, "function": {"name": "f", "parameters": {"type": Z}}}],
            "messages": [
                {"role": Z, "content": "hi"},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": Z, "detail": Z}},
                        {"type": "input_audio", "input_audio": {"data": Z, "format": Z}},
                        {"type": "file", "file": {"file_id": Z}},
                        {"type": "file", "file": {"filename": "a.pdf", "file_data": "JVBERi0="}},
                    ],
                },
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": Z, "type": Z, "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": Z, "content": "ok"},
            ],
        },
    ),
    (
        "responses ids, enums, urls, encrypted reasoning",
        RESPONSES,
        {
            "model": Z,
            "previous_response_id": Z,
            "include": [Z],
            "truncation": Z,
            "reasoning": {"effort": Z, "summary": Z},
            "tools": [{"type": Z, "name": "f", "parameters": {"type": Z}, "strict": True}],
            "tool_choice": {"type": Z, "name": "f"},
            "input": [
                {
                    "type": "message",
                    "id": Z,
                    "role": "user",
                    "content": [
                        {"type": "input_image", "image_url": Z, "detail": Z},
                        {"type": "input_file", "file_id": Z},
                        {"type": "input_file", "file_url": Z},
                    ],
                },
                {"type": "function_call", "id": Z, "call_id": Z, "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": Z, "output": "ok"},
                {"type": "reasoning", "id": Z, "encrypted_content": Z, "summary": []},
                {"type": "item_reference", "id": Z},
            ],
        },
    ),
    (
        "anthropic ids, signatures, media, urls",
        MESSAGES,
        {
            "model": Z,
            "max_tokens": 10,
            "metadata": {"user_id": Z},
            "service_tier": Z,
            "thinking": {"type": Z, "budget_tokens": 1024},
            "tool_choice": {"type": Z},
            "mcp_servers": [{"type": "url", "url": Z, "name": "s", "authorization_token": Z}],
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": Z}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": Z, "data": Z}},
                        {"type": "image", "source": {"type": "url", "url": Z}},
                        {"type": "document", "source": {"type": "file", "file_id": Z}},
                        {"type": "search_result", "source": Z, "title": "t", "content": []},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": Z},
                        {"type": "redacted_thinking", "data": Z},
                        {"type": "tool_use", "id": Z, "name": "f", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": Z, "content": "ok"}],
                },
            ],
        },
    ),
    (
        "completions and embeddings",
        EMBEDDINGS,
        {"model": Z, "input": "x", "encoding_format": Z, "user": Z},
    ),
]


@pytest.mark.parametrize(("name", "path", "body"), NOT_TEXT, ids=[n[0] for n in NOT_TEXT])
def test_non_text_fields_are_not_parts(name: str, path: str, body: dict[str, Any]) -> None:
    req = _parse(path, body)
    assert req.parts  # the text around them still is
    assert [p for p in req.parts if Z in p.text] == []


def test_free_form_json_is_scanned_whatever_its_keys() -> None:
    # tool inputs and metadata are the client's JSON: "type" or "id" there is text
    req = _parse(
        MESSAGES,
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"type": Z}}],
                }
            ]
        },
    )
    assert [p.path for p in req.parts if p.text == Z] == [
        ("messages", 0, "content", 0, "input", "type")
    ]
    req = _parse(CHAT, {"messages": [], "metadata": {"id": Z}})
    assert [p.path for p in req.parts if p.text == Z] == [("metadata", "id")]


# --- groups: text the provider joins ----------------------------------------------------------


def _groups(req: LlmRequest) -> list[tuple[str, int]]:
    return [(p.text, p.group) for p in req.parts]


def test_text_parts_of_one_chat_message_share_a_group() -> None:
    req = _parse(
        CHAT,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "con"},
                        {"type": "image_url", "image_url": {"url": "u"}},
                        {"type": "text", "text": "fidential"},
                    ],
                },
                {"role": "user", "content": [{"type": "text", "text": "next"}]},
                {"role": "user", "content": "own"},
            ]
        },
    )
    (a, g1), (b, g2), (c, g3), (d, g4) = _groups(req)
    assert (a, b, c, d) == ("con", "fidential", "next", "own")
    assert g1 == g2 >= 0 and g3 >= 0 and g3 != g1 and g4 == -1  # across messages: no


def test_anthropic_text_blocks_of_one_message_share_a_group_and_stand_together() -> None:
    req = _parse(
        MESSAGES,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a", "citations": [{"cited_text": "c"}]},
                        {"type": "text", "text": "b"},
                    ],
                },
                {"role": "user", "content": [{"type": "text", "text": "d"}]},
            ]
        },
    )
    texts = _groups(req)
    assert texts[0][0] == "a" and texts[1][0] == "b" and texts[0][1] == texts[1][1] >= 0
    assert ("c", -1) in texts
    assert texts[-1][0] == "d" and texts[-1][1] not in (-1, texts[0][1])


def test_responses_content_parts_of_one_item_share_a_group() -> None:
    req = _parse(
        RESPONSES,
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "a"},
                        {"type": "input_text", "text": "b"},
                    ],
                },
                {"role": "user", "content": [{"type": "input_text", "text": "c"}]},
            ]
        },
    )
    (_a, ga), (_b, gb), (_c, gc) = _groups(req)
    assert ga == gb >= 0 and gc not in (-1, ga)


# --- documents --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        {"type": "base64", "media_type": "application/pdf", "data": b64("%PDF-1.4 secret")},
        {"type": "url", "url": "https://example.org/a.pdf"},
    ],
)
def test_binary_documents_carry_no_parts(source: dict[str, Any]) -> None:
    req = _parse(
        MESSAGES,
        {"messages": [{"role": "user", "content": [{"type": "document", "source": source}]}]},
    )
    assert req.parts == () and req.encoded == {}


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b64("undeclared but text"), "undeclared but text"),
        (base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00").decode(), None),  # binary: not text
        (base64.b64encode(b"a\x00b").decode(), None),  # NUL bytes: binary
        ("not base64!", None),
    ],
)
def test_a_file_of_no_declared_type_is_text_if_it_reads_as_text(
    data: str, text: str | None
) -> None:
    part = {"type": "file", "file": {"filename": "blob", "file_data": data}}
    req = _parse(CHAT, {"messages": [{"role": "user", "content": [part]}]})
    data_parts = [p.text for p in req.parts if p.path[-1] == "file_data"]
    assert data_parts == ([text] if text else [])


def test_a_text_document_that_is_not_base64_of_utf8_is_refused() -> None:
    bad = base64.b64encode(b"\xff\xfe caf\xe9").decode()
    source = {"type": "base64", "media_type": "text/plain", "data": bad}
    with pytest.raises(
        MalformedBody, match=r"messages\[0\]\.content\[0\]\.source\.data' is a text"
    ):
        _parse(
            MESSAGES,
            {"messages": [{"role": "user", "content": [{"type": "document", "source": source}]}]},
        )


# --- token prompts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "flag"),
    [
        (COMPLETIONS, {"prompt": [1, 2, 3]}, True),
        (COMPLETIONS, {"prompt": [[1, 2], "text"]}, True),
        (COMPLETIONS, {"prompt": "text"}, False),
        (EMBEDDINGS, {"input": [[5, 6]]}, True),
        (EMBEDDINGS, {"input": ["a", "b"]}, False),
    ],
)
def test_token_prompts_are_flagged(path: str, body: dict[str, Any], flag: bool) -> None:
    assert _parse(path, body).token_prompts is flag


def test_policies_may_allow_token_prompts(tmp_path: Any) -> None:
    (tmp_path / "p.yaml").write_text(
        "policy_name: p\norg: acme\nallow_token_prompts: true\nrules: []\n"
    )
    (policy,) = load_paths([str(tmp_path / "p.yaml")])
    assert policy.allow_token_prompts is True


def test_allow_token_prompts_must_be_a_boolean(tmp_path: Any) -> None:
    from policy_extproc.errors import PolicyError

    (tmp_path / "p.yaml").write_text("policy_name: p\nallow_token_prompts: yes please\nrules: []\n")
    with pytest.raises(PolicyError, match=r"p.yaml:2: policy 'p': 'allow_token_prompts' must be"):
        load_paths([str(tmp_path / "p.yaml")])


# --- Azure deployments ------------------------------------------------------------------------


def test_azure_deployment_is_read_from_the_path() -> None:
    req = parse_request(
        "/openai/deployments/o1-prod/chat/completions?api-version=2024-10-21",
        b'{"model":"gpt-4o-mini","messages":[]}',
    )
    assert (req.api, req.deployment, req.model) == ("openai.chat", "o1-prod", "gpt-4o-mini")
    assert _parse(CHAT, {"messages": []}).deployment is None


# --- strict JSON ------------------------------------------------------------------------------

STRICT: list[tuple[str, bytes, str]] = [
    (
        CHAT,
        b'{"messages":[],"messages":[{"role":"user","content":"x"}]}',
        "request body has the key 'messages' twice in one object",
    ),
    (
        CHAT,
        b'{"messages":[{"role":"user","content":"a","content":"b"}]}',
        "request body has the key 'content' twice in one object",
    ),
    (
        MESSAGES,
        b'{"messages":[{"role":"user","content":[{"type":"tool_use","input":{"q":1,"q":2}}]}]}',
        "request body has the key 'q' twice in one object",
    ),
    (
        CHAT,
        b'{"messages":[],"\\u006dodel":"a","model":"b"}',
        "request body has the key 'model' twice in one object",
    ),
    (
        CHAT,
        b'{"messages":[],"model":"\\ud800"}',
        "request body has a lone surrogate (\\ud800, not Unicode text) in model",
    ),
    (
        CHAT,
        b'{"messages":[{"role":"user","content":"ok \\udfff"}]}',
        "request body has a lone surrogate (\\udfff, not Unicode text) in messages[0].content",
    ),
    (
        CHAT,
        b'{"messages":[],"x\\uDBFF":1}',
        "request body has a lone surrogate (\\udbff, not Unicode text) in 'x\\udbff'",
    ),
    (
        CHAT,
        b'{"messages":[],"temperature":NaN}',
        "request body is not valid JSON: NaN is not a JSON number",
    ),
    (
        CHAT,
        b'{"messages":[],"temperature":-Infinity}',
        "request body is not valid JSON: -Infinity is not a JSON number",
    ),
    (CHAT, b'{"messages":[],"temperature":1e400}', "field 'temperature' is a number out of range"),
    (
        CHAT,
        b'{"messages":[],"extra":{"deep":[-1e999]}}',
        "field 'extra.deep[0]' is a number out of range",
    ),
    (CHAT, b'{"messages":[],"max_tokens":1e400}', "field 'max_tokens' is a number out of range"),
    (
        CHAT,
        b'{"messages":[],"n":' + b"9" * 5000 + b"}",
        "request body is not valid JSON: a number is too long",
    ),
]


@pytest.mark.parametrize(("path", "raw", "message"), STRICT, ids=[s[2] for s in STRICT])
def test_strict_json(path: str, raw: bytes, message: str) -> None:
    with pytest.raises(MalformedBody) as info:
        parse_request(path, raw)
    assert info.value.message == message
    assert (info.value.code, info.value.http_status) == ("malformed_body", 400)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages":[{"role":"user","content":"\\ud83d\\ude00 fine"}]}',  # a pair: one emoji
        b'{"messages":[{"role":"user","content":"\\\\ud800 is text"}]}',  # an escaped backslash
        b'{"messages":[{"role":"user","content":"a"},{"role":"user","content":"a"}]}',
    ],
)
def test_strict_json_accepts_what_is_valid(raw: bytes) -> None:
    assert parse_request(CHAT, raw).parts


NUMBERS: list[tuple[str, dict[str, Any], str]] = [
    (CHAT, {"max_tokens": -5}, "field 'max_tokens' must be between 1 and 2.14748e+09"),
    (CHAT, {"max_tokens": 10**30}, "field 'max_tokens' must be between 1 and 2.14748e+09"),
    (CHAT, {"max_tokens": True}, "field 'max_tokens' must be an integer"),
    (CHAT, {"max_completion_tokens": 1.5}, "field 'max_completion_tokens' must be an integer"),
    (CHAT, {"stream": "yes"}, "field 'stream' must be a boolean"),
    (CHAT, {"temperature": "hot"}, "field 'temperature' must be a finite number"),
    (CHAT, {"temperature": 7}, "field 'temperature' must be between 0 and 2"),
    (CHAT, {"n": 0}, "field 'n' must be between 1 and 128"),
    (CHAT, {"logprobs": 1}, "field 'logprobs' must be a boolean"),
    (COMPLETIONS, {"max_tokens": -1}, "field 'max_tokens' must be between 0 and 2.14748e+09"),
    (COMPLETIONS, {"logprobs": 9}, "field 'logprobs' must be between 0 and 5"),
    (EMBEDDINGS, {"dimensions": 0}, "field 'dimensions' must be between 1 and 65536"),
    (
        RESPONSES,
        {"max_output_tokens": 0},
        "field 'max_output_tokens' must be between 1 and 2.14748e+09",
    ),
    (MESSAGES, {"max_tokens": -5}, "field 'max_tokens' must be between 1 and 2.14748e+09"),
    (MESSAGES, {"temperature": 1.5}, "field 'temperature' must be between 0 and 1"),
    (MESSAGES, {"top_k": 2.5}, "field 'top_k' must be an integer"),
]
_MINIMAL: dict[str, dict[str, Any]] = {
    CHAT: {"messages": []},
    COMPLETIONS: {"prompt": "x"},
    EMBEDDINGS: {"input": "x"},
    RESPONSES: {"input": "x"},
    MESSAGES: {"messages": []},
}


@pytest.mark.parametrize(("path", "extra", "message"), NUMBERS, ids=[n[2] for n in NUMBERS])
def test_known_numbers_are_checked(path: str, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedBody) as info:
        _parse(path, {**_MINIMAL[path], **extra})
    assert info.value.message == message


def test_completions_max_tokens_zero_is_allowed() -> None:
    # max_tokens 0 with echo scores a prompt in the legacy API
    assert _parse(COMPLETIONS, {"prompt": "x", "max_tokens": 0, "echo": True}).max_tokens == 0


# --- fuzz: a parse or a RequestError, never another exception ---------------------------------

_KEYS = st.sampled_from(
    [
        "messages",
        "role",
        "content",
        "type",
        "text",
        "input",
        "prompt",
        "tools",
        "function",
        "arguments",
        "source",
        "data",
        "media_type",
        "file",
        "file_data",
        "system",
        "tool_calls",
        "max_tokens",
        "stream",
        "temperature",
        "model",
        "instructions",
        "variables",
        "output",
        "document",
        "title",
        "x",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "text",
            "user",
            "tool_result",
            "document",
            "base64",
            "content",
            "text/plain",
            "file",
            "input_file",
            "message",
            "function_call",
            "search_result",
            "data:text/plain;base64,aGk=",
            "aGk=",
            "!!",
        ]
    ),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from([CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, MESSAGES]),
    body=st.dictionaries(_KEYS, _JSON, max_size=6),
)
def test_fuzz_bodies_parse_or_are_a_request_error(path: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    try:
        req = parse_request(path, raw)
    except RequestError as exc:
        assert exc.http_status == 400 and "/work" not in exc.message
        return
    for part in req.parts:  # every path leads to a string in the body
        assert isinstance(at(req.body, part.path), str)
    assert len({p.path for p in req.parts}) == len(req.parts)  # no string is read twice
    rewrite_request(req, {p.path: "x" for p in req.parts[:3]})


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_fuzz_bytes_parse_or_are_a_request_error(raw: bytes) -> None:
    with contextlib.suppress(RequestError):
        parse_request(CHAT, b'{"messages":[{"role":"user","content":' + raw + b"}]}")


def test_the_dry_run_refuses_token_prompts_as_the_server_does(tmp_path: Any) -> None:
    from policy_extproc.admin.evaluate import dry_run
    from policy_extproc.errors import TokenPrompt
    from policy_extproc.policy.compiler import Snapshot

    (tmp_path / "p.yaml").write_text(
        "- {policy_name: all, rules: []}\n"
        "- {policy_name: ok, org: tokens, allow_token_prompts: true, rules: []}\n"
    )
    snapshot = Snapshot(load_paths([str(tmp_path / "p.yaml")]))
    body = b'{"model":"gpt-3.5-turbo-instruct","prompt":[1,2,3]}'
    with pytest.raises(TokenPrompt):
        asyncio.run(dry_run(snapshot, body, {"x-org-id": "acme"}, COMPLETIONS))
    run = asyncio.run(dry_run(snapshot, body, {"x-org-id": "tokens"}, COMPLETIONS))
    assert run.record.decision == "allow"


def _locations(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _locations(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _locations(v, (*path, i))
    return out


def _put(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(body) if isinstance(body, dict) else list(body)
    copy[path[0]] = _put(body[path[0]], path[1:], value)
    return copy


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_real_bodies_with_one_value_replaced(data: st.DataObject) -> None:
    f = data.draw(st.sampled_from(FIELDS))
    body = f.build("some text")
    where = data.draw(st.sampled_from(_locations(body)[1:]))
    mutated = _put(body, where, data.draw(_JSON))
    try:
        req = parse_request(f.path, json.dumps(mutated).encode())
    except RequestError as exc:
        assert exc.http_status == 400
        return
    assert len({p.path for p in req.parts}) == len(req.parts)
    rewrite_request(req, {p.path: "x" for p in req.parts})


def test_a_prompt_template_without_variables_still_has_its_other_strings_scanned() -> None:
    req = _parse(RESPONSES, {"prompt": {"id": "pmpt_1", "version": "2", "note": MARK}})
    assert [(p.path, p.text) for p in req.parts] == [(("prompt", "note"), MARK)]
