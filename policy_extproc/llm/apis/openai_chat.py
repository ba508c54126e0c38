"""OpenAI Chat Completions (POST /v1/chat/completions; Azure /openai/deployments/{id}/...).

Reference: platform.openai.com/docs/api-reference/chat/create. Text lives in the messages
(content strings and text / refusal parts, tool call arguments, names), in the tool and
function definitions (descriptions, JSON Schema parameters), in ``response_format``'s schema,
``prediction.content``, ``stop`` and ``metadata``; base64 text files (``file`` parts) are
decoded. Every other string is scanned too unless it is declared below as not text.
"""

from __future__ import annotations

from typing import Any

from . import _openai
from .base import (
    BOOL,
    COUNT,
    FREE,
    PENALTY,
    SCHEMA,
    ApiFormat,
    Json,
    JsonPath,
    Num,
    Parsed,
    PromptPart,
    Shape,
    bad,
    block_type,
    generic,
    obj,
    required_list,
    role_of,
    skipping,
    text_field,
    walk,
    walk_rest,
)
from .documents import encoded_text
from .wire import items

# Enums, ids and media of the API: never text. (Keys ending in _id / _ids are ids too.)
_COMMON = ("type", "id", "model", "role", "status", "detail", "format", "voice", "url")
_API = generic(*_COMMON)


def _s(*keys: str, enum: bool = False, **fields: Shape) -> Shape:
    return skipping(*keys, rest=_API, enum=enum, **fields)


_FUNCTION = _s("strict", parameters=SCHEMA)
_TOOL = _s(function=_FUNCTION, custom=_s(format=_s("syntax")))  # grammar definitions are text
_TOOL_CHOICE = _s("mode", enum=True)  # "auto" / "none" / "required", or an object naming a tool
TOP = _s(
    "messages",  # read by parse()
    "modalities",
    "audio",
    "reasoning_effort",
    "service_tier",
    "verbosity",
    "user",  # an id of the end user (OpenAI: "a stable identifier"), not read by the model
    "safety_identifier",
    "prompt_cache_key",
    "logit_bias",
    "stream_options",
    metadata=FREE,
    tools=_TOOL,
    functions=_FUNCTION,
    tool_choice=_TOOL_CHOICE,
    function_call=_TOOL_CHOICE,
    response_format=_s(json_schema=_s("strict", schema=SCHEMA)),
    web_search_options=_s("search_context_size"),
)
# A message: role and content are read by parse(); name, refusal, tool calls are text.
_MESSAGE = _s(audio=_s("data"))
_MESSAGE_HANDLED = frozenset(("role", "content"))
_NONE: frozenset[str] = frozenset()
# Content parts: text and refusal are joined per message; images, audio and file ids are not
# text; a file's base64 data is decoded when it is a text document.
_TEXT_PARTS = {"text": "text", "refusal": "refusal"}
_TEXT_PART = _API
_MEDIA_PART = _s("image_url", "input_audio")
_FILE_PART = _s(file=_s("file_data"))


def parse(body: Json, out: Parsed) -> None:
    parts = out.parts
    append = parts.append
    for i, msg in enumerate(required_list(body, "messages")):
        # The common case (an object with a string role and string content, nothing else)
        # stays inline: this loop runs for every message of every request.
        if type(msg) is not dict:
            raise bad(("messages", i), "must be an object")
        role = msg.get("role")
        if type(role) is not str:
            role = role_of(msg, ("messages", i))
        content = msg.get("content")
        if type(content) is str:
            if content:
                append(PromptPart(("messages", i, "content"), content, role))
            if len(msg) == 2:
                continue
        elif isinstance(content, list):
            _content(content, ("messages", i, "content"), role, out)
        elif content is not None:
            raise bad(
                ("messages", i, "content"), "must be a string, a list of content parts or null"
            )
        _message_rest(msg, ("messages", i), role, out)
    walk_rest(body, TOP, (), "system", out, _NONE)


def _content(content: list[Any], path: JsonPath, role: str, out: Parsed) -> None:
    group = out.group()
    later: list[tuple[Json, JsonPath, str]] = []
    for j, block in enumerate(content):  # text first, so the group's parts stand together
        bpath: JsonPath = (*path, j)
        kind = block_type(block, bpath)
        key = _TEXT_PARTS.get(kind)
        if key is not None:
            text_field(block, bpath, key, role, out, group)
            if len(block) > 2:
                later.append((block, bpath, kind))
        else:
            later.append((block, bpath, kind))
    for block, bpath, kind in later:
        if kind == "file":
            f = obj(block.get("file"), (*bpath, "file"))
            if f.get("file_data") is not None:
                encoded_text(
                    out,
                    (*bpath, "file", "file_data"),
                    f["file_data"],
                    role,
                    filename=f.get("filename"),
                )
            walk(block, _FILE_PART, bpath, role, out)
        elif kind in _TEXT_PARTS:
            walk_rest(block, _TEXT_PART, bpath, role, out, frozenset((_TEXT_PARTS[kind],)))
        else:
            walk(block, _MEDIA_PART, bpath, role, out)


def _message_rest(msg: Json, path: JsonPath, role: str, out: Parsed) -> None:
    """Everything of a message but its content: tool calls (checked), name, refusal, ..."""
    tool_calls = msg.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise bad((*path, "tool_calls"), "must be a list")
        for j, call in enumerate(tool_calls):
            cpath: JsonPath = (*path, "tool_calls", j)
            fn = obj(call, cpath).get("function")
            if fn is not None:
                args = obj(fn, (*cpath, "function")).get("arguments")
                if not isinstance(args, str):
                    raise bad((*cpath, "function", "arguments"), "must be a string")
    # The deprecated single function_call of older assistant messages.
    fc = msg.get("function_call")
    if fc is not None and not isinstance(obj(fc, (*path, "function_call")).get("arguments"), str):
        raise bad((*path, "function_call", "arguments"), "must be a string")
    walk_rest(msg, _MESSAGE, path, role, out, _MESSAGE_HANDLED)


NUMBERS: dict[str, Num] = {
    "max_tokens": COUNT,
    "max_completion_tokens": COUNT,
    "n": Num("int", 1, 128),
    "seed": Num("int", -(2**63), 2**63 - 1),
    "top_logprobs": Num("int", 0, 20),
    "temperature": Num("number", 0.0, 2.0),
    "top_p": Num("number", 0.0, 1.0),
    "frequency_penalty": PENALTY,
    "presence_penalty": PENALTY,
    "stream": BOOL,
    "store": BOOL,
    "logprobs": BOOL,
    "parallel_tool_calls": BOOL,
}


def response_parts(body: Json) -> list[PromptPart]:
    """The answer's text: message contents (or their text parts) and tool-call arguments."""
    parts: list[PromptPart] = []
    for i, choice in items(body.get("choices")):
        message = choice.get("message")
        if not isinstance(message, dict):
            continue
        path: JsonPath = ("choices", i, "message")
        content = message.get("content")
        if isinstance(content, str):
            _openai.add_text(parts, message, "content", path)
        else:  # some OpenAI-compatible providers answer with content parts
            for j, block in items(content):
                if block.get("type") == "text":
                    _openai.add_text(parts, block, "text", (*path, "content", j))
        # Tool-call arguments are model output too (PII can leak into them).
        for j, call in items(message.get("tool_calls")):
            fn = call.get("function")
            if isinstance(fn, dict):
                _openai.add_text(parts, fn, "arguments", (*path, "tool_calls", j, "function"))
    return parts


def _messages(body: Json) -> int:
    return len(body["messages"])


FORMAT = ApiFormat(
    api="openai.chat",
    suffixes=("/v1/chat/completions",),
    azure="chat/completions",
    parse=parse,
    # max_completion_tokens replaced max_tokens (which o-series models reject); either counts.
    max_tokens=("max_completion_tokens", "max_tokens"),
    numbers=NUMBERS,
    response_parts=response_parts,
    usage=_openai.body_usage,
    delta_text=_openai.chat_delta,
    set_delta=_openai.set_chat_delta,
    stream_usage=_openai.chunk_usage,
    answer_info=_openai.choices_info,
    refusal_event=_openai.chunk_refusal,
    messages=_messages,
    usage_opt_in=True,
    example_path="/v1/chat/completions",
)
