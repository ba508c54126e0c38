"""LLM request bodies: which API a path is, every piece of prompt text in a body, and rewrites.

This is the facade the rest of the code imports; each API format lives in its own module under
``llm/apis/`` (how to recognise it, where its text lives, which of its strings are not text).
Bodies are read strictly where a provider could read them differently from us (so a policy never
evaluates a request the provider would read differently): duplicate keys, lone surrogates,
non-finite numbers and known fields of the wrong type are refused with a 400 naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from policy_extproc.errors import MalformedBody

from .apis import BY_API, detect
from .apis.base import Api, JsonPath, Parsed, PromptPart, bad, check_numbers, dotted
from .apis.documents import encode_text

__all__ = [
    "TOKEN_PROMPT_REFUSAL",
    "Api",
    "JsonPath",
    "LlmRequest",
    "PromptPart",
    "detect_api",
    "dotted",
    "dump_json",
    "load_json_object",
    "parse_request",
    "replace_texts",
    "rewrite_request",
]


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
    # A prompt given as token ids (completions, embeddings): no text a rule can read, so it is
    # refused unless a policy allows it (allow_token_prompts).
    token_prompts: bool = False
    # Parts decoded from base64 documents: path -> the prefix to re-encode a rewrite behind.
    encoded: Mapping[JsonPath, str] = field(default_factory=dict, repr=False)
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


TOKEN_PROMPT_REFUSAL = (
    "the prompt is given as token ids, which no policy can read; it is accepted only where a "
    "policy sets allow_token_prompts: true"
)


def detect_api(path: str) -> Api:
    """The API a request path addresses, matched on its suffix; UnknownApi otherwise."""
    return detect(path)[0].api


# --- strict JSON ------------------------------------------------------------------------------


class _Duplicate(ValueError):
    pass


class _NonFinite(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # object_pairs_hook: measured at about 0.25 us per object (a 4 KB chat body: +3 us), the
    # cheapest sound check we found (see docs/matching.md); json's own dict() keeps the last.
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return d


def _finite(text: str) -> float:
    f = float(text)
    if f - f != 0.0:  # inf or nan: 1e400 parses to inf
        raise _NonFinite(text)
    return f


def _constant(name: str) -> Any:
    raise _NonFinite(name)  # NaN, Infinity, -Infinity: not JSON (RFC 8259 section 6)


# Built once: json.loads(text, **hooks) would build a decoder and its scanner on every call.
_STRICT = json.JSONDecoder(object_pairs_hook=_pairs, parse_float=_finite, parse_constant=_constant)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(value: Any) -> bool:
    """Whether any string or key holds a surrogate; an ASCII string (isascii is O(1) in
    CPython) cannot, so only the others are searched. Measured cheaper than searching the raw
    bytes for \\ud escapes, which costs per byte rather than per string."""
    if type(value) is str:
        return not value.isascii() and _SURROGATE.search(value) is not None
    if type(value) is dict:
        for k, v in value.items():
            if not k.isascii() and _SURROGATE.search(k) is not None:
                return True
            if type(v) is not int and _has_surrogate(v):
                return True
    elif type(value) is list:
        for v in value:
            if type(v) is not int and _has_surrogate(v):
                return True
    return False


def _where(path: JsonPath) -> str:
    """A path for an error message, bounded: its keys are the client's."""
    shown = dotted(path)
    return shown if len(shown) <= 200 else shown[:200] + "..."


def _short(key: str) -> str:
    return repr(key if len(key) <= 60 else key[:60] + "...")


def load_json_object(body: bytes, what: str, *, strict: bool = False) -> dict[str, Any]:
    """Parse a body that must be one JSON object; MalformedBody with a clear message otherwise.

    ``strict`` (requests): duplicate keys at any depth, lone surrogates anywhere, NaN and
    numbers out of the float range are refused, naming where they are.
    """
    if not body or body.isspace():  # isspace stops at the first other byte: O(1) for JSON
        raise MalformedBody(f"{what} body is empty")
    try:
        # JSON on the wire is UTF-8 (RFC 8259 section 8.1); json.loads(bytes) would also guess
        # UTF-16/32, which no provider accepts. utf-8-sig tolerates a BOM, as RFC 8259 allows.
        text = body.decode("utf-8-sig")
        data = _STRICT.decode(text) if strict else json.loads(text)
    except _Duplicate as exc:
        raise MalformedBody(
            f"{what} body has the key {_short(exc.args[0])} twice in one object"
        ) from None
    except _NonFinite as exc:
        raise MalformedBody(_non_finite(text, what, exc.args[0])) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"{what} body is not valid JSON: {exc}") from exc
    except ValueError:  # an integer of more than 4300 digits (Python's own limit)
        raise MalformedBody(f"{what} body is not valid JSON: a number is too long") from None
    except RecursionError:
        raise MalformedBody(f"{what} body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise MalformedBody(f"{what} body must be a JSON object, not {type(data).__name__}")
    # A lone surrogate can only come from a \\u escape (UTF-8 decoding refuses encoded ones):
    # a body without a backslash (a one-byte memchr) has none.
    if strict and b"\\" in body:
        try:
            where = _surrogate_at(data, ()) if _has_surrogate(data) else None
        except RecursionError:
            raise MalformedBody(f"{what} body is not valid JSON: nested too deeply") from None
        if where is not None:
            raise MalformedBody(
                f"{what} body has a lone surrogate (\\u{ord(where[1]):04x}, not Unicode text) "
                f"in {_where(where[0]) or 'a key'}"
            )
    return data


def _non_finite(text: str, what: str, literal: str) -> str:
    if literal in ("NaN", "Infinity", "-Infinity"):
        return f"{what} body is not valid JSON: {literal} is not a JSON number"
    data = json.loads(text, parse_constant=float)  # again, to say where it is (rare)
    try:
        path = next(_paths(data, (), lambda v: type(v) is float and not math.isfinite(v)), None)
    except RecursionError:
        path = None
    if path:
        return f"field '{_where(path)}' is a number out of range"
    return f"{what} body has a number out of range"


def _paths(value: Any, path: JsonPath, pred: Any) -> Iterator[JsonPath]:
    if pred(value):
        yield path
    for k, v in _items(value):
        yield from _paths(v, (*path, k), pred)


def _items(value: Any) -> Any:
    if isinstance(value, dict):
        return value.items()
    return enumerate(value) if isinstance(value, list) else ()


def _surrogate_at(value: Any, path: JsonPath) -> tuple[JsonPath, str] | None:
    """Where the first lone surrogate sits (a key's own path for a key), and the code point."""
    if isinstance(value, str):
        m = _SURROGATE.search(value)
        return (path, m.group()) if m else None
    for k, v in _items(value):
        if isinstance(k, str):
            m = _SURROGATE.search(k)
            if m is not None:
                return ((*path, _short(k)), m.group())
        found = _surrogate_at(v, (*path, k))
        if found is not None:
            return found
    return None


def parse_request(path: str, body: bytes) -> LlmRequest:
    """Parse a request body for the API its path names."""
    fmt, deployment = detect(path)
    data = load_json_object(body, "request", strict=True)
    out = Parsed()
    try:
        fmt.parse(data, out)
    except RecursionError:
        raise MalformedBody("request body is nested too deeply") from None
    check_numbers(data, fmt.numbers)
    max_tokens = out.max_tokens
    for key in fmt.max_tokens:
        max_tokens = _opt(data, key, int, "an integer")
        if max_tokens is not None:
            break
    if fmt.from_path is not None:  # Gemini, Bedrock: the path names the model and the stream
        model, stream = fmt.from_path(path)
    else:
        model = _opt(data, "model", str, "a string") or ""
        stream = _opt(data, "stream", bool, "a boolean") or False
    return LlmRequest(
        api=fmt.api,
        model=model,
        parts=tuple(out.parts),
        max_tokens=max_tokens,
        stream=stream,
        body=data,
        deployment=deployment,
        token_prompts=out.token_prompts,
        encoded=out.encoded,
    )


def _opt(body: dict[str, Any], key: str, kind: type, what: str) -> Any:
    """An optional top-level field of one JSON type (null counts as absent, as for OpenAI)."""
    value = body.get(key)
    if value is None or (isinstance(value, kind) and (kind is bool or type(value) is not bool)):
        return value
    raise bad((key,), f"must be {what}")


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
    """The request body with parts replaced, model renamed and top-level fields set.

    A part decoded from a base64 document is encoded again, behind its original prefix.
    """
    if new_texts and req.encoded:
        new_texts = {
            p: encode_text(req.encoded[p], t) if p in req.encoded else t
            for p, t in new_texts.items()
        }
    body = replace_texts(req.body, new_texts) if new_texts else req.body
    if model is not None and BY_API[req.api].from_path is not None:
        # The path names the model (Gemini, Bedrock): a body field would be refused by the
        # provider, and Envoy's route, not the body, picks the fallback's endpoint.
        model = None
    if model is not None or set_fields:
        if body is req.body:
            body = body.copy()
        if model is not None:
            body["model"] = model
        if set_fields:
            body.update(set_fields)
    return dump_json(body)
