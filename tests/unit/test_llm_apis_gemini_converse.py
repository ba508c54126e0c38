"""Google Gemini and AWS Bedrock Converse: every text field is a part and non-text fields are not,
model and stream come from the path, answers (buffered and streamed, cut anywhere) give their
text and usage, a rewritten delta re-encodes in the API's framing, and refusals take its shape."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_extproc.admin.evaluate import guess_path
from policy_extproc.enforce.guard import _encode, _set_delta, error_event
from policy_extproc.errors import MalformedBody, RequestError
from policy_extproc.llm.apis import BY_API
from policy_extproc.llm.apis.eventstream import EventStreamFramer, decode_message
from policy_extproc.llm.request import parse_request, rewrite_request
from policy_extproc.llm.response import SseParser, Usage, is_stream, parse_response
from policy_extproc.llm.tokens import estimate_request_tokens
from policy_extproc.mockprovider.apis import converse, gemini
from policy_extproc.policy.decision import Decision

MARK = "zebracorn secret"
GEMINI = "/v1beta/models/gemini-2.0-flash:generateContent"
GEMINI_STREAM = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
CONVERSE = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
CONVERSE_STREAM = "/model/amazon.nova-lite-v1:0/converse-stream"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _g(**extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **extra}


def _c(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": "hi"}]}], **extra}


def _fn(description: str) -> dict[str, Any]:
    return {"name": "f", "description": description}


# (name, path, body with MARK at one place, where, how it is stored)
TEXT: list[tuple[str, str, dict[str, Any], tuple[Any, ...]]] = [
    ("gemini text part", GEMINI, {"contents": [{"role": "user", "parts": [{"text": MARK}]}]},
     ("contents", 0, "parts", 0, "text")),
    ("gemini model turn", GEMINI, {"contents": [{"role": "model", "parts": [{"text": MARK}]}]},
     ("contents", 0, "parts", 0, "text")),
    ("gemini system instruction", GEMINI, _g(systemInstruction={"parts": [{"text": MARK}]}),
     ("systemInstruction", "parts", 0, "text")),
    ("gemini function description", GEMINI, _g(tools=[{"functionDeclarations": [_fn(MARK)]}]),
     ("tools", 0, "functionDeclarations", 0, "description")),
    ("gemini parameter description", GEMINI, _g(tools=[{"functionDeclarations": [
        {"name": "f", "parameters": {"type": "OBJECT", "properties": {
            "x": {"type": "STRING", "description": MARK}}}}]}]),
     ("tools", 0, "functionDeclarations", 0, "parameters", "properties", "x", "description")),
    ("gemini function call args", GEMINI, {"contents": [{"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {"q": MARK}}}]}]},
     ("contents", 0, "parts", 0, "functionCall", "args", "q")),
    ("gemini function response", GEMINI, {"contents": [{"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {"out": MARK}}}]}]},
     ("contents", 0, "parts", 0, "functionResponse", "response", "out")),
    ("gemini stop sequence", GEMINI, _g(generationConfig={"stopSequences": [MARK]}),
     ("generationConfig", "stopSequences", 0)),
    ("gemini unknown field", GEMINI, _g(newField={"deep": MARK}), ("newField", "deep")),
    ("converse text block", CONVERSE, {"messages": [{"role": "user", "content": [{"text": MARK}]}]},
     ("messages", 0, "content", 0, "text")),
    ("converse system", CONVERSE, _c(system=[{"text": MARK}]), ("system", 0, "text")),
    ("converse tool description", CONVERSE, _c(toolConfig={"tools": [{"toolSpec": {
        "name": "f", "description": MARK, "inputSchema": {"json": {"type": "object"}}}}]}),
     ("toolConfig", "tools", 0, "toolSpec", "description")),
    ("converse tool schema", CONVERSE, _c(toolConfig={"tools": [{"toolSpec": {
        "name": "f", "inputSchema": {"json": {"type": "object", "properties": {
            "a": {"type": "string", "description": MARK}}}}}}]}),
     ("toolConfig", "tools", 0, "toolSpec", "inputSchema", "json", "properties", "a",
      "description")),
    ("converse tool use input", CONVERSE, {"messages": [{"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t", "name": "f", "input": {"q": MARK}}}]}]},
     ("messages", 0, "content", 0, "toolUse", "input", "q")),
    ("converse tool result", CONVERSE, {"messages": [{"role": "user", "content": [
        {"toolResult": {"toolUseId": "t", "content": [{"text": MARK}]}}]}]},
     ("messages", 0, "content", 0, "toolResult", "content", 0, "text")),
    ("converse tool result json", CONVERSE, {"messages": [{"role": "user", "content": [
        {"toolResult": {"toolUseId": "t", "content": [{"json": {"type": MARK}}]}}]}]},
     ("messages", 0, "content", 0, "toolResult", "content", 0, "json", "type")),
    ("converse document text", CONVERSE, {"messages": [{"role": "user", "content": [
        {"document": {"format": "txt", "name": "d", "source": {"text": MARK}}}]}]},
     ("messages", 0, "content", 0, "document", "source", "text")),
    ("converse guard content", CONVERSE, {"messages": [{"role": "user", "content": [
        {"guardContent": {"text": {"text": MARK, "qualifiers": ["query"]}}}]}]},
     ("messages", 0, "content", 0, "guardContent", "text", "text")),
    ("converse stop sequence", CONVERSE, _c(inferenceConfig={"stopSequences": [MARK]}),
     ("inferenceConfig", "stopSequences", 0)),
    ("converse model fields", CONVERSE, _c(additionalModelRequestFields={"x": {"type": MARK}}),
     ("additionalModelRequestFields", "x", "type")),
    ("converse prompt variables", CONVERSE, _c(promptVariables={"v": {"text": MARK}}),
     ("promptVariables", "v", "text")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "body", "where"), TEXT, ids=[t[0] for t in TEXT])
def test_text_fields_are_parts(name: str, path: str, body: dict[str, Any], where: Any) -> None:
    req = parse_request(path, json.dumps(body).encode())
    assert [p.text for p in req.parts if p.path == where] == [MARK]


ENCODED = [
    ("gemini inline text", GEMINI, {"contents": [{"parts": [
        {"inlineData": {"mimeType": "text/plain", "data": _b64(MARK)}}]}]},
     ("contents", 0, "parts", 0, "inlineData", "data")),
    ("converse document bytes", CONVERSE, {"messages": [{"role": "user", "content": [
        {"document": {"format": "md", "name": "d", "source": {"bytes": _b64(MARK)}}}]}]},
     ("messages", 0, "content", 0, "document", "source", "bytes")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "body", "where"), ENCODED, ids=[e[0] for e in ENCODED])
def test_base64_text_is_decoded_and_encoded_again(
    name: str, path: str, body: dict[str, Any], where: Any
) -> None:
    req = parse_request(path, json.dumps(body).encode())
    assert [p.text for p in req.parts if p.path == where] == [MARK]
    out = json.loads(rewrite_request(req, {where: "[X]"}))
    node: Any = out
    for key in where:
        node = node[key]
    assert base64.b64decode(node).decode() == "[X]"


NOT_TEXT = [
    ("gemini", GEMINI, _g(
        safetySettings=[{"category": MARK, "threshold": MARK}],
        toolConfig={"functionCallingConfig": {"mode": MARK}},
        generationConfig={"responseMimeType": MARK, "responseModalities": [MARK],
                          "thinkingConfig": {"x": MARK}},
        cachedContent=MARK, labels={"team": MARK},
        contents=[{"role": "user", "parts": [
            {"fileData": {"mimeType": "application/pdf", "fileUri": MARK}},
            {"inlineData": {"mimeType": "image/png", "data": _b64(MARK)}},
            {"text": "x", "thoughtSignature": MARK}]}])),
    ("converse", CONVERSE, _c(
        guardrailConfig={"guardrailIdentifier": MARK, "guardrailVersion": MARK},
        requestMetadata={"k": MARK}, additionalModelResponseFieldPaths=[MARK],
        performanceConfig={"latency": MARK},
        toolConfig={"toolChoice": {"tool": {"name": MARK}}, "tools": []},
        messages=[{"role": "user", "content": [
            {"image": {"format": "png", "source": {"bytes": _b64(MARK)}}},
            {"document": {"format": "pdf", "name": "d", "source": {"bytes": _b64(MARK)}}},
            {"toolResult": {"toolUseId": MARK, "status": MARK, "content": []}},
            {"reasoningContent": {"reasoningText": {"text": "r", "signature": MARK}}},
            {"cachePoint": {"type": MARK}}]}])),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "body"), NOT_TEXT, ids=[n[0] for n in NOT_TEXT])
def test_non_text_fields_are_not_parts(name: str, path: str, body: dict[str, Any]) -> None:
    req = parse_request(path, json.dumps(body).encode())
    assert MARK not in [p.text for p in req.parts], [p for p in req.parts if p.text == MARK]


def test_text_parts_of_one_turn_share_a_group() -> None:
    turns = [{"parts": [{"text": "a"}, {"text": "b"}]}, {"parts": [{"text": "c"}]}]
    g = parse_request(GEMINI, json.dumps({"contents": turns}).encode())
    assert g.parts[0].group == g.parts[1].group != g.parts[2].group
    c = parse_request(CONVERSE, json.dumps({"messages": [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]}]}).encode())  # fmt: skip
    assert c.parts[0].group == c.parts[1].group >= 0


@pytest.mark.parametrize(
    ("path", "model", "stream"),
    [
        (GEMINI, "gemini-2.0-flash", False),
        (GEMINI_STREAM, "gemini-2.0-flash", True),
        ("/v1/projects/p/locations/us/publishers/google/models/gemini-1.5-pro:generateContent",
         "gemini-1.5-pro", False),
        (CONVERSE, "anthropic.claude-3-5-sonnet-20240620-v1:0", False),
        (CONVERSE_STREAM, "amazon.nova-lite-v1:0", True),
    ],
)  # fmt: skip
def test_model_and_stream_come_from_the_path(path: str, model: str, stream: bool) -> None:
    body = _g(model="o1", stream=not stream) if "models/" in path else _c(model="o1")
    req = parse_request(path, json.dumps(body).encode())
    assert (req.model, req.stream) == (model, stream)


def test_a_gemini_stream_without_alt_sse_is_refused() -> None:
    with pytest.raises(MalformedBody, match="alt=sse"):
        parse_request(GEMINI_STREAM.partition("?")[0], json.dumps(_g()).encode())


def test_a_reroute_never_puts_a_model_into_a_path_format_body() -> None:
    req = parse_request(GEMINI, json.dumps(_g()).encode())
    assert "model" not in json.loads(rewrite_request(req, {}, model="other"))


@pytest.mark.parametrize(
    ("path", "body", "cap"),
    [(GEMINI, _g(generationConfig={"maxOutputTokens": 77}), 77),
     (CONVERSE, _c(inferenceConfig={"maxTokens": 66}), 66), (GEMINI, _g(), None)],
)  # fmt: skip
def test_max_tokens_is_read_from_the_nested_config(path: str, body: Any, cap: int | None) -> None:
    assert parse_request(path, json.dumps(body).encode()).max_tokens == cap


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (GEMINI, _g(generationConfig={"maxOutputTokens": -5}), "generationConfig.maxOutputTokens"),
        (GEMINI, _g(generationConfig={"temperature": "hot"}), "generationConfig.temperature"),
        (CONVERSE, _c(inferenceConfig={"maxTokens": 1.5}), "inferenceConfig.maxTokens"),
        (GEMINI, {"contents": "hi"}, "contents"),
        (CONVERSE, {"messages": [{"role": "user", "content": "hi"}]}, "messages[0].content"),
        (CONVERSE, {"messages": [{"content": []}]}, "messages[0].role"),
        (GEMINI, {"contents": [{"parts": [{"text": 5}]}]}, "contents[0].parts[0].text"),
    ],
)
def test_bad_bodies_are_a_clear_400(path: str, body: Any, message: str) -> None:
    with pytest.raises(MalformedBody, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_request(path, json.dumps(body).encode())


def test_token_estimates_frame_each_turn() -> None:
    one = parse_request(GEMINI, json.dumps(_g()).encode())
    two = parse_request(
        GEMINI, json.dumps(_g(systemInstruction={"parts": [{"text": "s"}]})).encode()
    )
    assert estimate_request_tokens(two) > estimate_request_tokens(one) > 1


def test_eval_guesses_the_path_of_a_bare_body() -> None:
    assert guess_path(json.dumps(_g()).encode()).endswith(":generateContent")
    assert guess_path(json.dumps(_c()).encode()).endswith("/converse")
    assert guess_path(b'{"messages":[{"role":"user","content":"hi"}]}') == "/v1/chat/completions"
    assert guess_path(b'{"system":"s","messages":[]}') == "/v1/messages"


# --- answers ----------------------------------------------------------------------------------


def test_a_gemini_answer_gives_its_text_and_usage() -> None:
    body = {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "one"}, {"functionCall": {"name": "f", "args": {"q": "two"}}}]}}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4,
                          "thoughtsTokenCount": 2, "cachedContentTokenCount": 3},
    }  # fmt: skip
    resp = parse_response("google.gemini", json.dumps(body).encode())
    assert [p.text for p in resp.parts] == ["one", "two"]
    assert resp.usage == Usage(10, 6, 3)
    err = {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}
    assert parse_response("google.gemini", json.dumps(err).encode()).parts == ()


def test_a_converse_answer_gives_its_text_and_usage() -> None:
    body = {
        "output": {"message": {"role": "assistant", "content": [
            {"text": "one"}, {"toolUse": {"toolUseId": "t", "name": "f", "input": {"q": "two"}}}]}},
        "usage": {"inputTokens": 10, "outputTokens": 4, "cacheReadInputTokens": 5,
                  "cacheWriteInputTokens": 1},
    }  # fmt: skip
    resp = parse_response("aws.converse", json.dumps(body).encode())
    assert [p.text for p in resp.parts] == ["one", "two"]
    assert resp.usage == Usage(16, 4, 5)
    assert parse_response("aws.converse", b'{"message":"throttled"}').usage is None


def _stream(api: str, frames: list[bytes], cuts: list[int]) -> tuple[list[str], Usage | None]:
    data = b"".join(frames)
    points = sorted({c % (len(data) + 1) for c in cuts})
    parser = SseParser(api)  # type: ignore[arg-type]
    texts: list[str] = []
    prev = 0
    for c in [*points, len(data)]:
        texts += [t for e in parser.feed(data[prev:c]) if (t := parser.delta_text(e)) is not None]
        prev = c
    texts += [t for e in parser.flush() if (t := parser.delta_text(e)) is not None]
    return texts, parser.usage


_WORDS = st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=12), max_size=8)


@given(_WORDS, st.lists(st.integers(min_value=0, max_value=5000), max_size=10))
def test_a_streamed_gemini_answer_reads_the_same_however_it_is_cut(
    words: list[str], cuts: list[int]
) -> None:
    text = " ".join(words) or "x"
    frames = gemini(_g(contents=[{"role": "user", "parts": [{"text": text}]}]), stream=True)
    assert isinstance(frames, list)
    texts, usage = _stream("google.gemini", frames, cuts)
    assert "".join(texts) == f"echo: {text}"
    assert usage is not None and usage.output_tokens > 0


@given(_WORDS, st.lists(st.integers(min_value=0, max_value=5000), max_size=10))
def test_a_converse_stream_reads_the_same_however_it_is_cut(
    words: list[str], cuts: list[int]
) -> None:
    text = " ".join(words) or "x"
    frames = converse(_c(messages=[{"role": "user", "content": [{"text": text}]}]), stream=True)
    assert isinstance(frames, list)
    texts, usage = _stream("aws.converse", frames, cuts)
    assert "".join(texts) == f"echo: {text}"
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0


def test_stream_content_types() -> None:
    assert is_stream("application/vnd.amazon.eventstream")
    assert is_stream("text/event-stream; charset=utf-8")
    assert not is_stream("application/json")


def test_a_rewritten_gemini_delta_is_sse_again() -> None:
    frames = gemini(_g(contents=[{"parts": [{"text": "mail a@b.example now"}]}]), stream=True)
    assert isinstance(frames, list)
    (ev,) = SseParser("google.gemini").feed(frames[1])
    payload = json.loads(ev.data)
    _set_delta("google.gemini", payload, "[EMAIL]")
    (again,) = SseParser("google.gemini").feed(_encode("google.gemini", ev, payload))
    assert SseParser("google.gemini").delta_text(again) == "[EMAIL]"


def test_a_rewritten_converse_delta_is_an_event_stream_frame_again() -> None:
    frames = converse(_c(), stream=True)
    assert isinstance(frames, list)
    (ev,) = EventStreamFramer().feed(frames[1])
    payload = json.loads(ev.data)
    _set_delta("aws.converse", payload, "[EMAIL]")
    headers, body = decode_message(_encode("aws.converse", ev, payload))
    assert headers[":event-type"] == "contentBlockDelta"
    assert json.loads(body)["delta"]["text"] == "[EMAIL]"


_REFUSED = Decision(
    action="block", policy="p", rule="r", reason="no secrets", code="content_blocked"
)


def test_a_gemini_refusal_is_a_google_error_event() -> None:
    (ev,) = SseParser("google.gemini").feed(error_event("google.gemini", _REFUSED, "req-1"))
    err = ev.payload["error"]
    assert (err["code"], err["status"], err["message"]) == (403, "PERMISSION_DENIED", "no secrets")
    assert err["details"][0]["reason"] == "content_blocked"
    assert err["details"][0]["metadata"]["request_id"] == "req-1"


def test_a_converse_refusal_is_an_exception_message() -> None:
    (ev,) = EventStreamFramer().feed(error_event("aws.converse", _REFUSED, "req-1"))
    assert ev.event == "exception:modelStreamErrorException"
    assert ev.payload["message"] == "no secrets"
    assert ev.payload["code"] == "content_blocked"


def test_every_format_that_streams_text_can_rewrite_and_refuse() -> None:
    for fmt in BY_API.values():
        if fmt.api != "openai.embeddings":
            assert fmt.set_delta is not None and fmt.refusal_event is not None, fmt.api


# --- fuzz: any body is parsed or refused with a clear 400, and no string is read twice ----------

_KEYS = st.sampled_from(
    [
        *("contents", "parts", "text", "role", "systemInstruction", "tools"),
        *("functionDeclarations", "description", "parameters", "generationConfig"),
        *("maxOutputTokens", "inlineData", "mimeType", "data", "functionCall", "args"),
        *("functionResponse", "response", "messages", "content", "system", "toolConfig"),
        *("toolSpec", "inputSchema", "json", "inferenceConfig", "maxTokens", "document"),
        *("source", "bytes", "format", "toolUse", "input", "toolResult", "guardContent"),
        *("stopSequences", "name", "type", "x"),
    ]
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3),
    st.sampled_from(["", "user", "model", "txt", "text/plain", _b64("hi"), "!!", "hello"]),
)  # fmt: skip
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=30,
)


def _at(body: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from([GEMINI, CONVERSE]),
    body=st.dictionaries(_KEYS, _JSON, max_size=6),
    turns=st.lists(st.dictionaries(_KEYS, _JSON, max_size=4), max_size=3),
)
def test_fuzz_bodies_parse_or_are_a_request_error(
    path: str, body: dict[str, Any], turns: list[Any]
) -> None:
    body.setdefault("contents" if path == GEMINI else "messages", turns)  # mostly past the top
    try:
        req = parse_request(path, json.dumps(body).encode())
    except RequestError as exc:
        assert exc.http_status == 400
        return
    for part in req.parts:
        assert isinstance(_at(req.body, part.path), str)
    assert len({p.path for p in req.parts}) == len(req.parts)
    rewrite_request(req, {p.path: "x" for p in req.parts[:3]})
