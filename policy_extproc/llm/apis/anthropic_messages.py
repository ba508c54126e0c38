"""Anthropic Messages (POST /v1/messages).

Reference: docs.anthropic.com/en/api/messages. Text lives in ``system`` and the messages: text
blocks (joined per message), tool_use names and inputs, tool_result contents, documents (plain
text sources, base64 text sources, decoded, and ``content`` sources; titles and context),
search results (titles and contents, at the top level and inside tool results), thinking text;
and in the tool definitions (names, descriptions, ``input_schema``) and ``stop_sequences``.
Every other string is scanned too unless it is declared below as not text.
"""

from __future__ import annotations

from typing import Any, cast

from .base import (
    BOOL,
    COUNT,
    FREE,
    SCHEMA,
    ApiFormat,
    Json,
    JsonPath,
    Num,
    Parsed,
    PromptPart,
    Shape,
    add,
    bad,
    block_type,
    generic,
    required_list,
    role_of,
    skipping,
    text_field,
    walk,
    walk_rest,
)
from .documents import encoded_text
from .wire import Refusal, ResponseInfo, Usage, answer_info, compact, count, items

_COMMON = ("type", "id", "model", "role", "signature", "encrypted_content", "media_type", "url",
           "cache_control")  # fmt: skip
_API = generic(*_COMMON)


def _s(*keys: str, enum: bool = False, **fields: Shape) -> Shape:
    return skipping(*keys, rest=_API, enum=enum, **fields)


TOP = _s(
    "messages",  # read by parse()
    "system",
    "thinking",  # {type, budget_tokens}
    "service_tier",
    "container",  # a container id
    "context_management",
    tools=_s(input_schema=SCHEMA),
    tool_choice=_s("disable_parallel_tool_use"),
    mcp_servers=_s("authorization_token"),
)
# Block types and what in them is not text; "text", "document", "search_result" and
# "tool_result" are read by _blocks itself.
_BLOCKS: dict[str, Shape] = {
    "image": _s("source"),  # base64, URL or file id: no text
    "tool_use": _s(input=FREE),  # the model's own call, replayed: its input is read
    "server_tool_use": _s(input=FREE),
    "mcp_tool_use": _s(input=FREE),
    "thinking": _s(),  # the thinking text is read; its signature is not text
    "redacted_thinking": _s("data"),  # encrypted
    "container_upload": _s(),
}
_DOCUMENT = _s("source", "citations")
_SEARCH_RESULT = _s("source", "content", "citations")  # source: the result's URL or id
_TOOL_RESULT = _s("content")
_TEXT_BLOCK = _s("text")


def parse(body: Json, out: Parsed) -> None:
    system = body.get("system")
    if isinstance(system, str):
        add(out, ("system",), system, "system")
    elif isinstance(system, list):
        _blocks(system, ("system",), "system", out)
    elif system is not None:
        raise bad(("system",), "must be a string or a list of text blocks")
    append = out.parts.append
    for i, msg in enumerate(required_list(body, "messages")):
        if type(msg) is not dict:  # inline checks: this loop runs for every message
            raise bad(("messages", i), "must be an object")
        role = msg.get("role")
        if type(role) is not str:
            role = role_of(msg, ("messages", i))
        content = msg.get("content")
        if type(content) is str:
            if content:
                append(PromptPart(("messages", i, "content"), content, role))
        elif isinstance(content, list):
            _blocks(content, ("messages", i, "content"), role, out)
        elif content is None:
            raise bad(("messages", i, "content"), "is required")
        else:
            raise bad(("messages", i, "content"), "must be a string or a list of content blocks")
        if len(msg) > 2:
            walk_rest(msg, _API, ("messages", i), role, out, _HANDLED)
    walk_rest(body, TOP, (), "system", out, frozenset())


_HANDLED = frozenset(("role", "content"))


def _blocks(blocks: list[Any], path: JsonPath, role: str, out: Parsed) -> None:
    """Content blocks: the text blocks of one list form one group (the provider joins them);
    everything else is read after them, so the group's parts stand next to each other."""
    group = out.group()
    later: list[tuple[Json, JsonPath, str]] = []
    for j, block in enumerate(blocks):
        bpath: JsonPath = (*path, j)
        kind = block_type(block, bpath)
        b = cast(Json, block)
        if kind == "text":
            text_field(b, bpath, "text", role, out, group)
            if len(b) > 2:
                later.append((b, bpath, kind))  # citations: cited text, document titles
        else:
            later.append((b, bpath, kind))
    for b, bpath, kind in later:
        if kind == "text":
            walk(b, _TEXT_BLOCK, bpath, role, out)
        elif kind == "tool_result" or kind == "mcp_tool_result":
            # A tool's output, sent in a user turn; role "tool" as in OpenAI's tool messages.
            inner = b.get("content")
            if isinstance(inner, str):
                add(out, (*bpath, "content"), inner, "tool")
            elif isinstance(inner, list):
                _blocks(inner, (*bpath, "content"), "tool", out)
            elif inner is not None:
                raise bad((*bpath, "content"), "must be a string or a list of content blocks")
            walk(b, _TOOL_RESULT, bpath, "tool", out)
        elif kind == "document":
            _document(b, bpath, role, out)
        elif kind == "search_result":
            inner = b.get("content")
            if isinstance(inner, list):
                _blocks(inner, (*bpath, "content"), role, out)
            elif inner is not None:
                raise bad((*bpath, "content"), "must be a list of text blocks")
            walk(b, _SEARCH_RESULT, bpath, role, out)
        else:
            walk(b, _BLOCKS.get(kind, _API), bpath, role, out)


def _document(block: Json, path: JsonPath, role: str, out: Parsed) -> None:
    """A document: its source (plain text, base64 text, content blocks; PDFs, URLs and file
    ids carry no text we can read), then its title and context."""
    source = block.get("source")
    spath: JsonPath = (*path, "source")
    if isinstance(source, dict):
        kind = source.get("type")
        if kind == "text":
            text_field(source, spath, "data", role, out)
        elif kind == "base64":
            media = source.get("media_type")
            encoded_text(
                out,
                (*spath, "data"),
                source.get("data"),
                role,
                media_type=media if isinstance(media, str) else None,
            )
        elif kind == "content":
            inner = source.get("content")
            if isinstance(inner, str):
                add(out, (*spath, "content"), inner, role)
            elif isinstance(inner, list):
                _blocks(inner, (*spath, "content"), role, out)
            else:
                raise bad((*spath, "content"), "must be a string or a list of content blocks")
    elif source is not None:
        raise bad(spath, "must be an object")
    walk(block, _DOCUMENT, path, role, out)


def usage_of(usage: Any) -> Usage | None:
    """Usage from an Anthropic usage object.

    Anthropic's input_tokens excludes cache reads and cache writes (cache_read_input_tokens,
    cache_creation_input_tokens); we add both so input_tokens means all input, as for OpenAI.
    Cache writes are priced like plain input here (Anthropic bills them at 1.25x: a small
    underestimate, accepted to keep one Usage shape).
    """
    if not isinstance(usage, dict):
        return None
    read = count(usage.get("cache_read_input_tokens"))
    write = count(usage.get("cache_creation_input_tokens"))
    return Usage(
        count(usage.get("input_tokens")) + read + write, count(usage.get("output_tokens")), read
    )


def response_parts(body: Json) -> list[PromptPart]:
    parts: list[PromptPart] = []
    for i, block in items(body.get("content")):
        text = block.get("text")
        if block.get("type") == "text" and isinstance(text, str) and text:
            parts.append(PromptPart(("content", i, "text"), text, "assistant"))
    return parts


def _stream_usage(payload: Json, event: str | None, usage: Usage | None) -> Usage | None:
    """message_start carries input usage, message_delta the cumulative output count (and, in
    newer API versions, cumulative input counts too)."""
    kind = payload.get("type", event)
    if kind == "message_start":
        message = payload.get("message")
        return usage_of(message.get("usage") if isinstance(message, dict) else None) or usage
    if kind == "message_delta":
        raw = payload.get("usage")
        if isinstance(raw, dict):
            now = usage or Usage(0, 0)
            out = count(raw.get("output_tokens")) if "output_tokens" in raw else now.output_tokens
            if "input_tokens" in raw:
                new = usage_of(raw)
                assert new is not None
                return Usage(new.input_tokens, out, new.cached_input_tokens)
            return Usage(now.input_tokens, out, now.cached_input_tokens)
    return usage


def _info(payload: Json, event: str | None, info: ResponseInfo | None) -> ResponseInfo | None:
    """A message (the body, or message_start's ``message``): id, model, stop_reason; the stop
    reason of a stream comes in message_delta's ``delta``."""
    kind = payload.get("type", event)
    if kind == "message_start":
        message = payload.get("message")
        if isinstance(message, dict):
            return answer_info(info, model=message.get("model"), id=message.get("id"))
    elif kind == "message_delta":
        delta = payload.get("delta")
        if isinstance(delta, dict):
            return answer_info(info, reasons=(delta.get("stop_reason"),))
    elif kind == "message" and event is None:
        reasons = (payload.get("stop_reason"),)
        return answer_info(info, model=payload.get("model"), id=payload.get("id"), reasons=reasons)
    return info


def _delta(payload: Any) -> str | None:
    if isinstance(payload, dict) and payload.get("type") == "content_block_delta":
        delta = payload.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta":
            text = delta.get("text")
            return text if isinstance(text, str) else None
    return None


def _set_delta(payload: Any, text: str) -> None:
    payload["delta"]["text"] = text


def _refusal(r: Refusal) -> bytes:
    body = compact({"type": "error", "error": r.fields(), **r.extra()})
    return f"event: error\ndata: {body}\n\n".encode()


def _messages(body: Json) -> int:
    return len(body["messages"]) + (1 if body.get("system") else 0)


FORMAT = ApiFormat(
    api="anthropic.messages",
    suffixes=("/v1/messages",),
    azure=None,
    parse=parse,
    max_tokens=("max_tokens",),
    numbers={
        "max_tokens": COUNT,
        "temperature": Num("number", 0.0, 1.0),
        "top_p": Num("number", 0.0, 1.0),
        "top_k": Num("int", 0),
        "stream": BOOL,
    },
    response_parts=response_parts,
    usage=lambda body: usage_of(body.get("usage")),
    delta_text=_delta,
    set_delta=_set_delta,
    stream_usage=_stream_usage,
    answer_info=_info,
    refusal_event=_refusal,
    provider="anthropic",
    messages=_messages,
    looks_like=lambda body: "system" in body or "anthropic_version" in body,
    example_path="/v1/messages",
)
