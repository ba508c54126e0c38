"""LLM request bodies: which API a path is, every piece of prompt text in a body, and rewrites.

The shapes follow the providers' API references: OpenAI Chat Completions, Completions,
Embeddings and Responses (platform.openai.com/docs/api-reference), Azure OpenAI's deployment
paths (learn.microsoft.com/azure/ai-services/openai/reference) and Anthropic Messages
(docs.anthropic.com/en/api/messages). We are strict where the provider would reject the body
(so a policy never evaluates a request the provider would read differently) and lenient about
fields we do not need.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from policy_extproc.errors import MalformedBody, UnknownApi

Api = Literal[
    "openai.chat",
    "openai.completions",
    "openai.embeddings",
    "openai.responses",
    "anthropic.messages",
]
JsonPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class PromptPart:
    """One piece of text in a body, with its JSON path so it can be rewritten in place.

    ``group``: parts with the same group that stand next to each other are text the provider
    concatenates (the text parts of one message, consecutive Anthropic text blocks), so they
    are matched as one joined text; -1 (the default) is a part of its own.
    """

    path: JsonPath
    text: str
    role: str
    group: int = -1


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """A parsed LLM request: model, prompt text with locations, max_tokens, stream."""

    api: Api
    model: str
    parts: tuple[PromptPart, ...]
    max_tokens: int | None
    stream: bool
    body: dict[str, Any] = field(repr=False)
    # The Azure OpenAI deployment the path names (/openai/deployments/{id}/...), else None:
    # Azure routes by it, not by the body's model, so model rules judge what it resolves to.
    deployment: str | None = None
    _prompt_text: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def prompt_text(self) -> str:
        """All prompt text joined with newlines, computed once."""
        text = self._prompt_text
        if text is None:
            text = "\n".join([p.text for p in self.parts])
            # Frozen, so cache through object.__setattr__ (the documented dataclass escape hatch).
            object.__setattr__(self, "_prompt_text", text)
        return text


# --- API detection ----------------------------------------------------------------------------

_V1_SUFFIXES: tuple[tuple[str, Api], ...] = (
    ("/v1/chat/completions", "openai.chat"),
    ("/v1/completions", "openai.completions"),
    ("/v1/embeddings", "openai.embeddings"),
    ("/v1/responses", "openai.responses"),
    ("/v1/messages", "anthropic.messages"),
)
# Azure OpenAI: /openai/deployments/{deployment-id}/chat/completions?api-version=..., and the
# Responses API at /openai/responses?api-version=... (the /openai/v1/... form matches above).
_AZURE_DEPLOYMENT = re.compile(
    r"/openai/deployments/[^/]+/(chat/completions|completions|embeddings)\Z"
)
_AZURE_APIS: dict[str, Api] = {
    "chat/completions": "openai.chat",
    "completions": "openai.completions",
    "embeddings": "openai.embeddings",
}


def detect_api(path: str) -> Api:
    """The API a request path addresses, matched on its suffix; UnknownApi otherwise."""
    clean = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    for suffix, api in _V1_SUFFIXES:
        if clean.endswith(suffix):
            return api
    m = _AZURE_DEPLOYMENT.search(clean)
    if m is not None:
        return _AZURE_APIS[m.group(1)]
    if clean.endswith("/openai/responses"):
        return "openai.responses"
    shown = path if len(path) <= 200 else path[:200] + "..."
    raise UnknownApi(
        f"unknown LLM API path {shown!r}: expected /v1/chat/completions, /v1/completions, "
        "/v1/embeddings, /v1/responses (OpenAI, also Azure deployment paths) "
        "or /v1/messages (Anthropic)"
    )


# --- errors and small field readers -----------------------------------------------------------


def dotted(path: JsonPath) -> str:
    """A JSON path as people write it: messages[0].content[2].text."""
    out: list[str] = []
    for key in path:
        if isinstance(key, int):
            out.append(f"[{key}]")
        else:
            out.append(f".{key}" if out else key)
    return "".join(out)


def _bad(path: JsonPath, what: str) -> MalformedBody:
    return MalformedBody(f"field '{dotted(path)}' {what}")


def _role(msg: dict[str, Any], path: JsonPath) -> str:
    role = msg.get("role")
    if isinstance(role, str):
        return role
    if role is None:
        raise _bad((*path, "role"), "is required")
    raise _bad((*path, "role"), "must be a string")


def _opt(body: dict[str, Any], key: str, kind: type, what: str) -> Any:
    """An optional top-level field of one JSON type (null counts as absent, as for OpenAI)."""
    value = body.get(key)
    if value is None or (isinstance(value, kind) and (kind is bool or type(value) is not bool)):
        return value
    raise _bad((key,), f"must be {what}")


def _opt_int(body: dict[str, Any], key: str) -> int | None:
    value: int | None = _opt(body, key, int, "an integer")
    return value


def _required_list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if isinstance(value, list):
        return value
    if value is None:
        raise _bad((key,), "is required")
    raise _bad((key,), "must be a list")


def _object(value: Any, path: JsonPath) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, "must be an object")
    return value


def _block_type(block: Any, path: JsonPath) -> str:
    kind = _object(block, path).get("type")
    if not isinstance(kind, str):
        raise _bad((*path, "type"), "must be a string")
    return kind


def _add(parts: list[PromptPart], path: JsonPath, text: str, role: str) -> None:
    if text:  # an empty string has nothing to police or rewrite
        parts.append(PromptPart(path, text, role))


def _text_field(obj: Any, path: JsonPath, key: str, role: str, parts: list[PromptPart]) -> None:
    """Append obj[key], which the provider requires to be a string (obj must be an object)."""
    text = _object(obj, path).get(key)
    if not isinstance(text, str):
        raise _bad((*path, key), "must be a string")
    _add(parts, (*path, key), text, role)


# --- OpenAI Chat Completions ------------------------------------------------------------------

# Content part types that carry text (image_url, input_audio, file carry none).
_CHAT_TEXT_PARTS = {"text": "text", "refusal": "refusal"}


def _chat(body: dict[str, Any], parts: list[PromptPart]) -> None:
    append = parts.append
    for i, msg in enumerate(_required_list(body, "messages")):
        # The common case (an object with a string role and string content) stays inline:
        # this loop runs for every message of every request.
        if type(msg) is not dict:
            raise _bad(("messages", i), "must be an object")
        role = msg.get("role")
        if type(role) is not str:
            role = _role(msg, ("messages", i))
        content = msg.get("content")
        if type(content) is str:
            if content:
                append(PromptPart(("messages", i, "content"), content, role))
        elif isinstance(content, list):
            for j, block in enumerate(content):
                bpath: JsonPath = ("messages", i, "content", j)
                key = _CHAT_TEXT_PARTS.get(_block_type(block, bpath))
                if key is not None:
                    _text_field(block, bpath, key, role, parts)
        elif content is not None:
            raise _bad(
                ("messages", i, "content"), "must be a string, a list of content parts or null"
            )
        if "tool_calls" not in msg and "function_call" not in msg:
            continue
        path: JsonPath = ("messages", i)
        tool_calls = msg.get("tool_calls")
        if tool_calls is not None:
            if not isinstance(tool_calls, list):
                raise _bad((*path, "tool_calls"), "must be a list")
            for j, call in enumerate(tool_calls):
                cpath: JsonPath = (*path, "tool_calls", j)
                fn = _object(call, cpath).get("function")
                if fn is not None:
                    _text_field(fn, (*cpath, "function"), "arguments", role, parts)
        # The deprecated single function_call of older assistant messages.
        if msg.get("function_call") is not None:
            _text_field(msg["function_call"], (*path, "function_call"), "arguments", role, parts)


# --- OpenAI Completions and Embeddings --------------------------------------------------------


def _strings_or_tokens(body: dict[str, Any], key: str, parts: list[PromptPart]) -> None:
    """A string, a list of strings, a token array or a list of token arrays (no text)."""
    value = body.get(key)
    if isinstance(value, str):
        _add(parts, (key,), value, "")
        return
    if value is None:
        raise _bad((key,), "is required")
    if not isinstance(value, list):
        raise _bad((key,), "must be a string, a list of strings or a token array")
    for i, item in enumerate(value):
        if isinstance(item, str):
            _add(parts, (key, i), item, "")
        elif isinstance(item, bool) or not (isinstance(item, int) or _is_token_array(item)):
            raise _bad((key, i), "must be a string or a token array")


def _is_token_array(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def _completions(body: dict[str, Any], parts: list[PromptPart]) -> None:
    _strings_or_tokens(body, "prompt", parts)
    if body.get("suffix") is not None:  # the provider reads it too: text after the insertion
        _text_field(body, (), "suffix", "", parts)


def _embeddings(body: dict[str, Any], parts: list[PromptPart]) -> None:
    _strings_or_tokens(body, "input", parts)


# --- OpenAI Responses -------------------------------------------------------------------------

_RESPONSES_TEXT_PARTS = {
    "input_text": "text",
    "output_text": "text",
    "text": "text",
    "refusal": "refusal",
}


def _responses(body: dict[str, Any], parts: list[PromptPart]) -> None:
    if body.get("instructions") is not None:  # "a system (or developer) message", per OpenAI
        _text_field(body, (), "instructions", "system", parts)
    value = body.get("input")
    if value is None or isinstance(value, str):
        # input is optional: previous_response_id or a prompt template may supply it
        _add(parts, ("input",), value or "", "user")
        return
    if not isinstance(value, list):
        raise _bad(("input",), "must be a string or a list of input items")
    for i, item in enumerate(value):
        path: JsonPath = ("input", i)
        kind = _object(item, path).get("type", "message")
        if not isinstance(kind, str):
            raise _bad((*path, "type"), "must be a string")
        if kind == "message":
            _responses_content(item.get("content"), (*path, "content"), _role(item, path), parts)
        elif kind in ("function_call", "custom_tool_call"):
            key = "arguments" if kind == "function_call" else "input"
            _text_field(item, path, key, "assistant", parts)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            _responses_content(item.get("output"), (*path, "output"), "tool", parts)
        # reasoning, item_reference, web_search_call, ...: no prompt text we can rewrite


def _responses_content(content: Any, path: JsonPath, role: str, parts: list[PromptPart]) -> None:
    if isinstance(content, str):
        _add(parts, path, content, role)
        return
    if content is None:
        raise _bad(path, "is required")
    if not isinstance(content, list):
        raise _bad(path, "must be a string or a list of content parts")
    for j, block in enumerate(content):
        bpath: JsonPath = (*path, j)
        key = _RESPONSES_TEXT_PARTS.get(_block_type(block, bpath))
        if key is not None:
            _text_field(block, bpath, key, role, parts)


# --- Anthropic Messages -----------------------------------------------------------------------


def _anthropic(body: dict[str, Any], parts: list[PromptPart]) -> None:
    system = body.get("system")
    if isinstance(system, str):
        _add(parts, ("system",), system, "system")
    elif isinstance(system, list):
        _anthropic_blocks(system, ("system",), "system", parts)
    elif system is not None:
        raise _bad(("system",), "must be a string or a list of text blocks")
    append = parts.append
    for i, msg in enumerate(_required_list(body, "messages")):
        if type(msg) is not dict:  # inline checks: this loop runs for every message
            raise _bad(("messages", i), "must be an object")
        role = msg.get("role")
        if type(role) is not str:
            role = _role(msg, ("messages", i))
        content = msg.get("content")
        if type(content) is str:
            if content:
                append(PromptPart(("messages", i, "content"), content, role))
        elif isinstance(content, list):
            _anthropic_blocks(content, ("messages", i, "content"), role, parts)
        elif content is None:
            raise _bad(("messages", i, "content"), "is required")
        else:
            raise _bad(("messages", i, "content"), "must be a string or a list of content blocks")


def _anthropic_blocks(
    blocks: list[Any], path: JsonPath, role: str, parts: list[PromptPart]
) -> None:
    for j, block in enumerate(blocks):
        bpath: JsonPath = (*path, j)
        kind = _block_type(block, bpath)
        if kind == "text":
            _text_field(block, bpath, "text", role, parts)
        elif kind == "tool_result":
            # A tool's output, sent in a user turn; role "tool" as in OpenAI's tool messages.
            inner = block.get("content")
            if isinstance(inner, str):
                _add(parts, (*bpath, "content"), inner, "tool")
            elif isinstance(inner, list):
                _anthropic_blocks(inner, (*bpath, "content"), "tool", parts)
            elif inner is not None:
                raise _bad((*bpath, "content"), "must be a string or a list of content blocks")
        elif kind == "document":
            # Plain-text documents ({"source": {"type": "text", "data": ...}}) are prompt text.
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                _text_field(source, (*bpath, "source"), "data", role, parts)
        # image, tool_use (input is an object), thinking (signed, must not change): no text


# --- parse and rewrite ------------------------------------------------------------------------

_PARSERS: dict[str, Callable[[dict[str, Any], list[PromptPart]], None]] = {
    "openai.chat": _chat,
    "openai.completions": _completions,
    "openai.embeddings": _embeddings,
    "openai.responses": _responses,
    "anthropic.messages": _anthropic,
}


def load_json_object(body: bytes, what: str) -> dict[str, Any]:
    """Parse a body that must be one JSON object; MalformedBody with a clear message otherwise."""
    if not body or body.isspace():  # isspace stops at the first other byte: O(1) for JSON
        raise MalformedBody(f"{what} body is empty")
    try:
        # JSON on the wire is UTF-8 (RFC 8259 section 8.1); json.loads(bytes) would also guess
        # UTF-16/32, which no provider accepts. utf-8-sig tolerates a BOM, as RFC 8259 allows.
        data = json.loads(body.decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedBody(f"{what} body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedBody(f"{what} body must be a JSON object, not {type(data).__name__}")
    return data


def parse_request(path: str, body: bytes) -> LlmRequest:
    """Parse a request body for the API its path names."""
    api = detect_api(path)
    data = load_json_object(body, "request")
    parts: list[PromptPart] = []
    _PARSERS[api](data, parts)
    if api == "openai.chat":
        # max_completion_tokens replaced max_tokens (which o-series models reject); either counts.
        max_tokens = _opt_int(data, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = _opt_int(data, "max_tokens")
    elif api == "openai.responses":
        max_tokens = _opt_int(data, "max_output_tokens")
    elif api == "openai.embeddings":
        max_tokens = None
    else:
        max_tokens = _opt_int(data, "max_tokens")
    return LlmRequest(
        api=api,
        model=_opt(data, "model", str, "a string") or "",
        parts=tuple(parts),
        max_tokens=max_tokens,
        stream=_opt(data, "stream", bool, "a boolean") or False,
        body=data,
    )


def replace_texts(body: dict[str, Any], new_texts: Mapping[JsonPath, str]) -> dict[str, Any]:
    """A copy of body with the strings at new_texts' paths replaced; body itself is untouched.

    Only the containers on the way to a replaced string are copied (shallowly), so the cost is
    the depth of the paths, not the size of the body. ValueError for a path with no string.
    """
    trie: dict[Any, Any] = {}
    for path, text in new_texts.items():
        if not path:
            raise ValueError("empty path")
        node = trie
        for key in path[:-1]:
            nxt = node.setdefault(key, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"path {dotted(path)} is inside another replaced path")
            node = nxt
        if path[-1] in node:
            raise ValueError(f"path {dotted(path)} overlaps another replaced path")
        node[path[-1]] = text
    return _replace(body, trie, ())


def _replace(node: Any, trie: dict[Any, Any], where: JsonPath) -> Any:
    new: Any
    if isinstance(node, dict | list):
        new = node.copy()
    else:
        raise ValueError(f"no object or list at {dotted(where) or '<body>'}")
    for key, sub in trie.items():
        here = (*where, key)
        if isinstance(node, dict):
            if not isinstance(key, str) or key not in node:
                raise ValueError(f"no field {dotted(here)} in the body")
        elif isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < len(node):
            raise ValueError(f"no item {dotted(here)} in the body")
        child = node[key]
        if isinstance(sub, str):
            if not isinstance(child, str):
                raise ValueError(f"field {dotted(here)} is not a string")
            new[key] = sub
        else:
            new[key] = _replace(child, sub, here)
    return new


def dump_json(data: Any) -> bytes:
    """Compact UTF-8 JSON, as providers accept it; lone surrogates fall back to \\u escapes."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # A body may carry "\ud800" escapes (valid JSON, not encodable as UTF-8): keep them escaped.
        return json.dumps(data, separators=(",", ":")).encode("ascii")


def rewrite_request(
    req: LlmRequest,
    new_texts: Mapping[JsonPath, str],
    *,
    model: str | None = None,
    set_fields: Mapping[str, Any] | None = None,
) -> bytes:
    """The request body with parts replaced, model renamed and top-level fields set."""
    body = replace_texts(req.body, new_texts) if new_texts else req.body
    if model is not None or set_fields:
        if body is req.body:
            body = body.copy()
        if model is not None:
            body["model"] = model
        if set_fields:
            body.update(set_fields)
    return dump_json(body)
