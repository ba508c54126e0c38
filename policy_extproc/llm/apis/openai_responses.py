"""OpenAI Responses (POST /v1/responses; Azure /openai/responses and /openai/v1/responses).

Reference: platform.openai.com/docs/api-reference/responses/create. Text lives in
``instructions``, the ``input`` items (message content parts, joined per item; function and
custom tool calls and their outputs; reasoning summaries and every other item's strings), the
tool definitions (descriptions, JSON Schema parameters), ``text.format`` (name, description,
schema), ``prompt.variables`` and ``metadata``; ``input_file`` parts with base64 text are
decoded. Every other string is scanned too unless it is declared below as not text.
"""

from __future__ import annotations

from typing import Any

from . import _openai
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
    obj,
    role_of,
    skipping,
    text_field,
    walk,
    walk_rest,
)
from .documents import encoded_text
from .wire import Refusal, compact, items

_COMMON = ("type", "id", "model", "status", "role", "encrypted_content", "detail", "url")
_API = generic(*_COMMON)


def _s(*keys: str, enum: bool = False, **fields: Shape) -> Shape:
    return skipping(*keys, rest=_API, enum=enum, **fields)


_TOOL = _s(
    "strict",
    "server_url",
    "headers",  # MCP: authorization headers, never text
    "authorization",
    "container",
    "search_context_size",
    "require_approval",
    "ranking_options",
    "background",
    "quality",
    "size",
    "output_format",
    "moderation",
    "input_fidelity",
    "input_image_mask",
    "environment",
    parameters=SCHEMA,
    format=_s("syntax"),  # custom tools: the grammar's definition is text
)
TOP = _s(
    "input",  # read by parse()
    "instructions",
    "prompt",
    "conversation",  # an id, or an object with one
    "include",
    "prompt_cache_key",
    "reasoning",  # effort and summary enums
    "safety_identifier",
    "service_tier",
    "stream_options",
    "truncation",
    "user",
    metadata=FREE,
    tools=_TOOL,
    tool_choice=_s("mode", "server_label", enum=True),
    text=_s("verbosity", format=_s("strict", schema=SCHEMA)),  # name, description are text
)
_ITEM = _s("arguments", "input", "output", "content")  # read by _item()
_OTHER_ITEM = _s("result")  # image_generation_call: a base64 image
_TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}
_PART = _s("text", "refusal", "image_url", "file_data", "file_url", "format", "data")
_TOOL_CALLS = {"function_call": "arguments", "custom_tool_call": "input"}
_TOOL_OUTPUTS = ("function_call_output", "custom_tool_call_output")


def parse(body: Json, out: Parsed) -> None:
    if body.get("instructions") is not None:  # "a system (or developer) message", per OpenAI
        text_field(body, (), "instructions", "system", out)
    value = body.get("input")
    if value is None or isinstance(value, str):
        # input is optional: previous_response_id or a prompt template may supply it
        add(out, ("input",), value or "", "user")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _item(item, ("input", i), out)
    else:
        raise bad(("input",), "must be a string or a list of input items")
    prompt = body.get("prompt")
    if prompt is not None:
        _prompt(obj(prompt, ("prompt",)), out)
    walk_rest(body, TOP, (), "system", out, frozenset())


def _item(item: Any, path: JsonPath, out: Parsed) -> None:
    kind = obj(item, path).get("type", "message")
    if not isinstance(kind, str):
        raise bad((*path, "type"), "must be a string")
    if kind == "message":
        role = role_of(item, path)
        _content(item.get("content"), (*path, "content"), role, out)
        walk_rest(item, _ITEM, path, role, out, frozenset())
        return
    key = _TOOL_CALLS.get(kind)
    if key is not None:
        text_field(item, path, key, "assistant", out)
        walk_rest(item, _ITEM, path, "assistant", out, frozenset())
    elif kind in _TOOL_OUTPUTS:
        _content(item.get("output"), (*path, "output"), "tool", out)
        walk_rest(item, _ITEM, path, "tool", out, frozenset())
    else:
        # reasoning summaries, web and file search queries and results, MCP calls, computer
        # calls, ...: every string that is not an id or an enum.
        role = item.get("role")
        walk(item, _OTHER_ITEM, path, role if isinstance(role, str) else "assistant", out)


def _content(content: Any, path: JsonPath, role: str, out: Parsed) -> None:
    if isinstance(content, str):
        add(out, path, content, role)
        return
    if content is None:
        raise bad(path, "is required")
    if not isinstance(content, list):
        raise bad(path, "must be a string or a list of content parts")
    group = out.group()
    for j, block in enumerate(content):  # text first, so the group's parts stand together
        _part_text(block, (*path, j), role, out, group)
    for j, block in enumerate(content):
        _part_rest(block, (*path, j), role, out)


def _part_text(block: Any, path: JsonPath, role: str, out: Parsed, group: int) -> None:
    key = _TEXT_PARTS.get(block_type(block, path))
    if key is not None:
        text_field(block, path, key, role, out, group)


def _part_rest(b: Json, path: JsonPath, role: str, out: Parsed) -> None:
    """A content part but its text: a base64 text file, file names, annotation titles, ..."""
    if b.get("type") == "input_file" and b.get("file_data") is not None:
        encoded_text(out, (*path, "file_data"), b["file_data"], role, filename=b.get("filename"))
    if len(b) > 2:
        walk(b, _PART, path, role, out)


def _prompt(prompt: Json, out: Parsed) -> None:
    """A prompt template's variables: strings or content parts, each filled into the prompt."""
    walk_rest(prompt, _PROMPT, ("prompt",), "user", out, frozenset(("variables",)))
    variables = prompt.get("variables")
    if variables is None:
        return
    for name, value in obj(variables, ("prompt", "variables")).items():
        vpath: JsonPath = ("prompt", "variables", name)
        if isinstance(value, str):
            add(out, vpath, value, "user")
        else:
            _part_text(value, vpath, "user", out, -1)
            _part_rest(value, vpath, "user", out)


_PROMPT = _s("version")


def response_parts(body: Json) -> list[PromptPart]:
    parts: list[PromptPart] = []
    for i, item in items(body.get("output")):
        kind = item.get("type")
        if kind == "message":
            for j, block in items(item.get("content")):
                if block.get("type") == "output_text":
                    _openai.add_text(parts, block, "text", ("output", i, "content", j))
        elif kind == "function_call":
            _openai.add_text(parts, item, "arguments", ("output", i))
    return parts


def _delta(payload: Any) -> str | None:
    if isinstance(payload, dict) and payload.get("type") == "response.output_text.delta":
        text = payload.get("delta")
        return text if isinstance(text, str) else None
    return None


def _set_delta(payload: Any, text: str) -> None:
    payload["delta"] = text


def _refusal(r: Refusal) -> bytes:
    return (
        f"event: error\ndata: {compact({'type': 'error', **r.fields(), **r.extra()})}\n\n".encode()
    )


def _messages(body: Json) -> int:
    items_ = body.get("input")
    n = len(items_) if isinstance(items_, list) else (1 if items_ else 0)
    return n + (1 if body.get("instructions") else 0)


FORMAT = ApiFormat(
    api="openai.responses",
    suffixes=("/v1/responses", "/openai/responses"),
    azure=None,
    parse=parse,
    max_tokens=("max_output_tokens",),
    numbers={
        "max_output_tokens": COUNT,
        "max_tool_calls": COUNT,
        "top_logprobs": Num("int", 0, 20),
        "temperature": Num("number", 0.0, 2.0),
        "top_p": Num("number", 0.0, 1.0),
        "stream": BOOL,
        "store": BOOL,
        "background": BOOL,
        "parallel_tool_calls": BOOL,
    },
    response_parts=response_parts,
    usage=_openai.body_usage,
    delta_text=_delta,
    set_delta=_set_delta,
    stream_usage=_openai.responses_usage,
    answer_info=_openai.responses_info,
    refusal_event=_refusal,
    messages=_messages,
    example_path="/v1/responses",
)
