"""The response shapes of each provider API the mock answers, as pure functions of the body.

Each handler takes the parsed JSON request body and returns the JSON response body, or the list
of Server-Sent Events frames when the body asks for ``"stream": true``. Shapes follow the
providers' API references: OpenAI Chat Completions, Completions, Embeddings and Responses, and
Anthropic Messages (including their streaming event sequences), Google Gemini generateContent
and streamGenerateContent (SSE with ``alt=sse``), and AWS Bedrock Converse and ConverseStream
(AWS event-stream framing). Gemini and Bedrock name the model in the path, so their handlers
are bound to it (``routes.api_for``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from policy_extproc.llm.apis.eventstream import event_message

_MAX_DELTAS = 16
_EMBEDDING_DIMENSIONS = 8

Json = dict[str, Any]
# A reply is a JSON body, or a list of ready-encoded SSE frames.
Reply = Json | list[bytes]


class BadRequest(Exception):
    """The body is JSON but not what the API expects (HTTP 400)."""


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


def estimate_tokens(text: str) -> int:
    """Tokens the mock reports for text: about 4 characters each, at least 1."""
    return max(1, (len(text) + 3) // 4)


def _text(content: Any) -> str:
    """Plain text of a message content, as the model would read it (all APIs): a string, or
    the text of its parts, documents (plain, base64 text, content blocks), files with base64
    text, tool results and search results, so an echo shows what the provider received."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(t for t in map(_part_text, content) if t)
    return ""


def _part_text(part: Any) -> str:
    if not isinstance(part, dict):
        return ""
    kind = part.get("type")
    if isinstance(part.get("text"), str):
        return str(part["text"])
    if kind in ("tool_result", "search_result"):
        return _text(part.get("content"))
    if kind == "document":
        source = part.get("source")
        if not isinstance(source, dict):
            return ""
        if source.get("type") == "text":
            return str(source.get("data", ""))
        if source.get("type") == "content":
            return _text(source.get("content"))
        if source.get("type") == "base64" and str(source.get("media_type", "")).startswith("text/"):
            return _decoded(source.get("data"))
    if kind == "file" and isinstance(part.get("file"), dict):
        return _decoded(part["file"].get("file_data"))
    if kind == "input_file":
        return _decoded(part.get("file_data"))
    return ""


def _decoded(data: Any) -> str:
    """A base64 text document (bare or a data: URL); binary or broken data reads as nothing."""
    if not isinstance(data, str):
        return ""
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if not head.startswith("data:text/") or not head.endswith(";base64"):
            return ""
    try:
        return base64.b64decode(data, validate=True).decode("utf-8")
    except ValueError:
        return ""


def _pieces(text: str) -> list[str]:
    """Text split into up to _MAX_DELTAS stream deltas that join back to exactly text."""
    words = re.findall(r"\s*\S+", text) or [text]
    words[-1] += text[len("".join(words)) :]
    step = -(-len(words) // _MAX_DELTAS)
    return ["".join(words[i : i + step]) for i in range(0, len(words), step)]


def _require(payload: Json, key: str, kinds: type | tuple[type, ...]) -> Any:
    value = payload.get(key)
    if not isinstance(value, kinds):
        raise BadRequest(f"Missing or invalid required parameter: '{key}'.")
    return value


def _sse(data: Any, event: str | None = None) -> bytes:
    frame = b"data: " + (data if isinstance(data, bytes) else dumps(data)) + b"\n\n"
    return f"event: {event}\n".encode() + frame if event else frame


def _usage_chat(prompt: int, completion: int) -> Json:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _openai_stream(
    base: Json,
    pieces: list[str],
    first: Json,
    delta: Callable[[str], Json],
    payload: Json,
    usage: Json,
) -> list[bytes]:
    """OpenAI chunks (chat or legacy completions): deltas, a finish chunk, usage, [DONE]."""
    with_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    extra: Json = {"usage": None} if with_usage else {}
    frames = [_sse({**base, "choices": [first], **extra})] if first else []
    frames += [_sse({**base, "choices": [delta(p)], **extra}) for p in pieces]
    frames.append(_sse({**base, "choices": [{**delta(""), "finish_reason": "stop"}], **extra}))
    if with_usage:  # OpenAI: a last chunk with empty choices carries usage
        frames.append(_sse({**base, "choices": [], "usage": usage}))
    return [*frames, _sse(b"[DONE]")]


def chat_completions(payload: Json) -> Reply:
    """OpenAI POST /v1/chat/completions."""
    messages = _require(payload, "messages", list)
    msgs = [m for m in messages if isinstance(m, dict)]
    users = [_text(m.get("content")) for m in msgs if m.get("role") == "user"]
    out = f"echo: {users[-1] if users else ''}"
    prompt = estimate_tokens("\n".join(_text(m.get("content")) for m in msgs))
    usage = _usage_chat(prompt, estimate_tokens(out))
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "created": int(time.time()),
        "model": payload.get("model", "mock"),
        "system_fingerprint": "fp_mock",
    }
    if not payload.get("stream"):
        message = {"role": "assistant", "content": out, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
    base["object"] = "chat.completion.chunk"

    def delta(text: str) -> Json:
        return {
            "index": 0,
            "delta": {"content": text} if text else {},
            "logprobs": None,
            "finish_reason": None,
        }

    first = {**delta(""), "delta": {"role": "assistant", "content": ""}}
    return _openai_stream(base, _pieces(out), first, delta, payload, usage)


def completions(payload: Json) -> Reply:
    """OpenAI POST /v1/completions (legacy)."""
    prompt = _require(payload, "prompt", (str, list))
    texts = [prompt] if isinstance(prompt, str) else [p for p in prompt if isinstance(p, str)]
    out = f"echo: {texts[-1] if texts else ''}"
    usage = _usage_chat(estimate_tokens("".join(texts)), estimate_tokens(out))
    base = {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": payload.get("model", "mock"),
    }

    def choice(text: str) -> Json:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": None}

    if not payload.get("stream"):
        return {**base, "choices": [{**choice(out), "finish_reason": "stop"}], "usage": usage}
    return _openai_stream(base, _pieces(out), {}, choice, payload, usage)


def embeddings(payload: Json) -> Reply:
    """OpenAI POST /v1/embeddings: a small deterministic vector per input."""
    given = _require(payload, "input", (str, list))
    inputs = [given] if isinstance(given, str) else [str(i) for i in given]
    data = []
    for index, text in enumerate(inputs):
        digest = hashlib.sha256(text.encode()).digest()[:_EMBEDDING_DIMENSIONS]
        vector = [round(b / 127.5 - 1.0, 6) for b in digest]
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(estimate_tokens(t) for t in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": payload.get("model", "mock"), "usage": usage}


def responses(payload: Json) -> Reply:
    """OpenAI POST /v1/responses, with its semantic stream events when streaming."""
    # input is optional: a prompt template or a previous response may supply it
    given = payload.get("input") or ""
    if not isinstance(given, str | list):
        raise BadRequest("Invalid type for 'input'.")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else given
    items = [i for i in items if isinstance(i, dict)]
    users = [_text(i.get("content")) for i in items if i.get("role") == "user"]
    out = f"echo: {users[-1] if users else ''}"
    prompt_text = "\n".join(
        [str(payload.get("instructions") or "")] + [_text(i.get("content")) for i in items]
    )
    usage = {"input_tokens": estimate_tokens(prompt_text), "output_tokens": estimate_tokens(out)}
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    msg_id = f"msg_{uuid.uuid4().hex}"
    part = {"type": "output_text", "text": out, "annotations": []}
    item = {
        "type": "message",
        "id": msg_id,
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    resp = {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": payload.get("model", "mock"),
        "output": [item],
        "usage": usage,
    }
    if not payload.get("stream"):
        return resp
    where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    events: list[tuple[str, Json]] = [
        (
            "response.created",
            {"response": {**resp, "status": "in_progress", "output": [], "usage": None}},
        ),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {**item, "content": [], "status": "in_progress"}},
        ),
        ("response.content_part.added", {**where, "part": {**part, "text": ""}}),
        *(("response.output_text.delta", {**where, "delta": p}) for p in _pieces(out)),
        ("response.output_text.done", {**where, "text": out}),
        ("response.content_part.done", {**where, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": resp}),
    ]
    return [
        _sse({"type": name, "sequence_number": n, **data}, name)
        for n, (name, data) in enumerate(events)
    ]


def messages(payload: Json) -> Reply:
    """Anthropic POST /v1/messages, with its stream events when streaming."""
    msgs = [m for m in _require(payload, "messages", list) if isinstance(m, dict)]
    users = [_text(m.get("content")) for m in msgs if m.get("role") == "user"]
    out = f"echo: {users[-1] if users else ''}"
    prompt_text = "\n".join(
        [_text(payload.get("system"))] + [_text(m.get("content")) for m in msgs]
    )
    usage = {"input_tokens": estimate_tokens(prompt_text), "output_tokens": estimate_tokens(out)}
    msg = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": payload.get("model", "mock"),
        "content": [{"type": "text", "text": out}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if not payload.get("stream"):
        return msg
    start = {
        **msg,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
    }
    events: list[tuple[str, Json]] = [
        ("message_start", {"message": start}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {}),
        *(
            ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}})
            for p in _pieces(out)
        ),
        ("content_block_stop", {"index": 0}),
        (
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        ("message_stop", {}),
    ]
    return [_sse({"type": name, **data}, name) for name, data in events]


def _last_user(turns: list[Json], key: str, roles: tuple[Any, ...]) -> str:
    users = [_text(t.get(key)) for t in turns if t.get("role", "user") in roles]
    return f"echo: {users[-1] if users else ''}"


def gemini(payload: Json, *, model: str = "mock", stream: bool = False) -> Reply:
    """Google POST /v1beta/models/{model}:generateContent and :streamGenerateContent?alt=sse."""
    contents = [c for c in _require(payload, "contents", list) if isinstance(c, dict)]
    out = _last_user(contents, "parts", ("user",))
    system = payload.get("systemInstruction")
    prompt_text = "\n".join(
        [_text(system.get("parts")) if isinstance(system, dict) else ""]
        + [_text(c.get("parts")) for c in contents]
    )
    prompt, done = estimate_tokens(prompt_text), estimate_tokens(out)

    def answer(text: str, so_far: int, finish: bool) -> Json:
        cand: Json = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            cand["finishReason"] = "STOP"
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": so_far,
                 "totalTokenCount": prompt + so_far}  # fmt: skip
        return {"candidates": [cand], "usageMetadata": usage, "modelVersion": model}

    if not stream:
        return answer(out, done, True)
    pieces = _pieces(out)
    frames, sent = [], ""
    for n, piece in enumerate(pieces):
        sent += piece
        last = n == len(pieces) - 1
        frames.append(b"data: " + dumps(answer(piece, estimate_tokens(sent), last)) + b"\r\n\r\n")
    return frames


def converse(payload: Json, *, model: str = "mock", stream: bool = False) -> Reply:
    """AWS Bedrock POST /model/{modelId}/converse and /converse-stream (event-stream frames)."""
    msgs = [m for m in _require(payload, "messages", list) if isinstance(m, dict)]
    out = _last_user(msgs, "content", ("user",))
    prompt_text = "\n".join(
        [_text(payload.get("system"))] + [_text(m.get("content")) for m in msgs]
    )
    prompt, done = estimate_tokens(prompt_text), estimate_tokens(out)
    usage = {"inputTokens": prompt, "outputTokens": done, "totalTokens": prompt + done}
    if not stream:
        message = {"role": "assistant", "content": [{"text": out}]}
        return {"output": {"message": message}, "stopReason": "end_turn", "usage": usage,
                "metrics": {"latencyMs": 1}}  # fmt: skip
    return [
        event_message("messageStart", {"role": "assistant"}),
        *(
            event_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}})
            for p in _pieces(out)
        ),
        event_message("contentBlockStop", {"contentBlockIndex": 0}),
        event_message("messageStop", {"stopReason": "end_turn"}),
        event_message("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}),
    ]
