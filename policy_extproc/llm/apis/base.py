"""What every API format module is made of: prompt parts, shapes of non-text fields, the walk.

A format module declares where its text lives in two ways. Its ``parse`` function reads the
structures that carry roles and joined text (messages, content parts), and a ``Shape`` tree says
which other keys are *not* text (ids, enums, URLs, base64 media). Everything else is walked: every
string value anywhere in the body becomes a ``PromptPart``, so a field a provider adds next month
is scanned on day one (fail closed on the unknown).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from policy_extproc.errors import MalformedBody

from .wire import Framer, Refusal, ResponseInfo, SseFramer, StreamEvent, Usage, sse_encode

Api = Literal[
    "openai.chat",
    "openai.completions",
    "openai.embeddings",
    "openai.responses",
    "anthropic.messages",
    "google.gemini",
    "aws.converse",
]
JsonPath = tuple[str | int, ...]
Json = dict[str, Any]


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


@dataclass(slots=True)
class Parsed:
    """What a format's parser collects: parts, encoded documents, token prompts, groups."""

    parts: list[PromptPart] = field(default_factory=list)
    # Parts whose text was decoded from base64: path -> the prefix to re-encode it behind
    # ("data:text/plain;base64," or "" for bare base64), so a rewrite can put it back.
    encoded: dict[JsonPath, str] = field(default_factory=dict)
    token_prompts: bool = False  # a prompt given as token ids: no text to check
    groups: int = 0
    max_tokens: int | None = None  # a cap on the answer read from a nested field (Gemini, Bedrock)

    def group(self) -> int:
        """A new group number for parts the provider joins."""
        g = self.groups
        self.groups = g + 1
        return g


def _no_parts(body: Json) -> list[PromptPart]:
    return []


def _no_usage(body: Json) -> Usage | None:
    return None


def _no_delta(payload: Any) -> str | None:
    return None


def _keep_usage(payload: Json, event: str | None, usage: Usage | None) -> Usage | None:
    return usage


def _no_info(payload: Json, event: str | None, info: ResponseInfo | None) -> ResponseInfo | None:
    return info


def _no_messages(body: Json) -> int:
    return 0


def _is_error(body: Json) -> bool:
    # OpenAI and Gemini errors are {"error": {...}}, Anthropic's {"type": "error", ...}; a
    # Responses API object carries "error": null when it succeeded.
    return body.get("error") is not None or body.get("type") == "error"


@dataclass(frozen=True, slots=True)
class ApiFormat:
    """One API format: how to recognise and read a request, and how its answers look.

    Request side: ``suffixes`` / ``azure`` recognise the path, ``parse`` finds the text,
    ``max_tokens`` and ``numbers`` are its known numbers, ``from_path`` reads a model and the
    stream flag that the path carries instead of the body (Gemini, Bedrock). Response side:
    ``response_parts`` and ``usage`` read a buffered answer, ``framer`` / ``stream_types`` /
    ``encode_event`` are its stream framing, ``delta_text`` / ``set_delta`` read and rewrite a
    streamed event's text, ``stream_usage`` folds one event into the usage so far (and
    ``answer_info`` into what the answer says about itself: model, id, finish reasons),
    ``refusal_event`` is the event that ends a stream a policy refuses. ``provider`` is where
    Envoy sends it by default, ``messages`` counts the chat messages it frames (token
    estimates), ``usage_opt_in`` says a stream reports usage only when asked
    (``stream_options.include_usage``), ``looks_like`` / ``example_path`` let ``eval`` guess a
    path for a bare body.
    """

    api: Api
    suffixes: tuple[str, ...]  # request path suffixes, e.g. "/v1/chat/completions"
    azure: str | None  # the Azure deployment sub-path (/openai/deployments/{id}/<azure>)
    parse: Callable[[Json, Parsed], None]
    max_tokens: tuple[str, ...]  # fields that cap the answer's tokens, first non-null wins
    numbers: Mapping[str, Num]  # top-level fields with a JSON type and a range
    from_path: Callable[[str], tuple[str, bool]] | None = None  # (model, stream) from the path
    response_parts: Callable[[Json], list[PromptPart]] = _no_parts
    usage: Callable[[Json], Usage | None] = _no_usage
    is_error: Callable[[Json], bool] = _is_error
    framer: Callable[[], Framer] = SseFramer
    stream_types: tuple[str, ...] = ("text/event-stream",)
    encode_event: Callable[[StreamEvent, Any], bytes] = sse_encode
    delta_text: Callable[[Any], str | None] = _no_delta
    set_delta: Callable[[Any, str], None] | None = None
    stream_usage: Callable[[Json, str | None, Usage | None], Usage | None] = _keep_usage
    refusal_event: Callable[[Refusal], bytes] | None = None
    # What the answer says about itself (model, id, finish reasons): folds a buffered body
    # (event None, info None) or one stream event into what is known so far.
    answer_info: Callable[[Json, str | None, ResponseInfo | None], ResponseInfo | None] = _no_info
    provider: str = "openai"
    messages: Callable[[Json], int] = _no_messages
    usage_opt_in: bool = False
    looks_like: Callable[[Json], bool] | None = None
    example_path: str = ""


# --- errors and small readers -----------------------------------------------------------------


def dotted(path: JsonPath) -> str:
    """A JSON path as people write it: messages[0].content[2].text."""
    out: list[str] = []
    for key in path:
        if isinstance(key, int):
            out.append(f"[{key}]")
        else:
            out.append(f".{key}" if out else key)
    return "".join(out)


def bad(path: JsonPath, what: str) -> MalformedBody:
    shown = dotted(path)  # bounded: keys on the path may be the client's (prompt variables)
    return MalformedBody(f"field '{shown if len(shown) <= 200 else shown[:200] + '...'}' {what}")


def role_of(msg: Json, path: JsonPath) -> str:
    role = msg.get("role")
    if isinstance(role, str):
        return role
    if role is None:
        raise bad((*path, "role"), "is required")
    raise bad((*path, "role"), "must be a string")


def required_list(body: Json, key: str) -> list[Any]:
    value = body.get(key)
    if isinstance(value, list):
        return value
    if value is None:
        raise bad((key,), "is required")
    raise bad((key,), "must be a list")


def obj(value: Any, path: JsonPath) -> Json:
    if not isinstance(value, dict):
        raise bad(path, "must be an object")
    return value


def block_type(block: Any, path: JsonPath) -> str:
    kind = obj(block, path).get("type")
    if not isinstance(kind, str):
        raise bad((*path, "type"), "must be a string")
    return kind


def add(out: Parsed, path: JsonPath, text: str, role: str, group: int = -1) -> None:
    if text:  # an empty string has nothing to police or rewrite
        out.parts.append(PromptPart(path, text, role, group))


def text_field(o: Any, path: JsonPath, key: str, role: str, out: Parsed, group: int = -1) -> None:
    """Add o[key], which the provider requires to be a string (o must be an object)."""
    text = obj(o, path).get(key)
    if not isinstance(text, str):
        raise bad((*path, key), "must be a string")
    add(out, (*path, key), text, role, group)


# --- known numbers ----------------------------------------------------------------------------

INT_MAX = 2**31 - 1  # no provider accepts more; bigger ones would overflow cost arithmetic


@dataclass(frozen=True, slots=True)
class Num:
    """A top-level field's JSON type and range: "int", "number" (finite) or "bool"."""

    kind: Literal["int", "number", "bool"]
    lo: float = 0
    hi: float = INT_MAX


BOOL = Num("bool")
COUNT = Num("int", 1)  # max_tokens and friends
PENALTY = Num("number", -2.0, 2.0)


def check_numbers(body: Json, spec: Mapping[str, Num], path: JsonPath = ()) -> None:
    """Refuse known fields of the wrong JSON type or out of range, naming the field."""
    for key, value in body.items():
        num = spec.get(key)
        if num is None or value is None:  # null counts as absent, as for OpenAI
            continue
        kind = type(value)
        if num.kind == "bool":
            if kind is not bool:
                raise bad((*path, key), "must be a boolean")
            continue
        if num.kind == "int":
            if kind is not int:
                raise bad((*path, key), "must be an integer")
        elif (kind is not int and kind is not float) or not math.isfinite(value):
            raise bad((*path, key), "must be a finite number")
        if not num.lo <= value <= num.hi:
            raise bad((*path, key), f"must be between {num.lo:g} and {num.hi:g}")


# --- shapes: which keys are not text ----------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Shape:
    """Where a JSON value sits: which of its keys are not text, and what the others hold.

    ``fields`` names keys with a shape of their own; any other key has the shape ``rest``
    (None: free text, every string at any depth is scanned; with ``deep``, this shape
    itself). ``skip``: nothing in this value is text. ``ids``: keys ending in ``_id`` /
    ``_ids`` are identifiers (API structures only, never in free-form JSON such as tool
    arguments or schemas). ``enum``: a string value here is an enum ("auto"), while an object
    in its place has text (``tool_choice``).
    """

    fields: dict[str, Shape] = field(default_factory=dict)
    rest: Shape | None = None
    skip: bool = False
    ids: bool = False
    deep: bool = False
    enum: bool = False  # a string right here (not inside an object) is one of the API's enums


NOT_TEXT = Shape(skip=True)
FREE = Shape()


def generic(*keys: str) -> Shape:
    """The shape of an API's objects we know nothing more about: ``keys`` (the API's enums,
    ids, URLs) are not text at any depth, every other string is."""
    return Shape(fields=dict.fromkeys(keys, NOT_TEXT), ids=True, deep=True)


def skipping(*keys: str, rest: Shape, enum: bool = False, **fields: Shape) -> Shape:
    """An API object whose ``keys`` are not text, ``fields`` have their own shape, and whose
    other keys hold ``rest`` (the format's generic shape, or FREE for free-form JSON)."""
    return Shape(fields={**rest.fields, **dict.fromkeys(keys, NOT_TEXT), **fields}, rest=rest,
                 ids=True, enum=enum)  # fmt: skip


# JSON Schema (tool parameters, response formats): descriptions, titles, enums, defaults and
# examples are text the model reads; the keywords below are structure.
SCHEMA = Shape(ids=False)
_SCHEMA_MAP = Shape(rest=SCHEMA)  # properties, $defs: a name -> a schema
SCHEMA.fields.update(
    {
        **dict.fromkeys(("type", "format", "$ref", "$schema", "$id", "$anchor"), NOT_TEXT),
        **dict.fromkeys(("properties", "patternProperties", "$defs", "definitions"), _SCHEMA_MAP),
        **dict.fromkeys(
            ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "not", "prefixItems"),
            SCHEMA,
        ),
    }
)


def walk(value: Any, sh: Shape, path: JsonPath, role: str, out: Parsed) -> None:
    """Every string in value that its shape does not declare as non-text becomes a part."""
    t = type(value)
    if t is str:
        if value and not sh.enum:
            out.parts.append(PromptPart(path, value, role))
    elif t is dict:
        fields, rest, ids = sh.fields, sh.rest or (sh if sh.deep else FREE), sh.ids
        for k, v in value.items():
            sub = fields.get(k)
            if sub is None:
                if ids and k.endswith(_ID_SUFFIXES):
                    continue
                sub = rest
            if sub.skip:
                continue
            tv = type(v)
            if tv is str:
                if v and not sub.enum:
                    out.parts.append(PromptPart((*path, k), v, role))
            elif tv is dict or tv is list:
                walk(v, sub, (*path, k), role, out)
    elif t is list:
        for i, v in enumerate(value):
            tv = type(v)
            if tv is str:
                if v and not sh.enum:
                    out.parts.append(PromptPart((*path, i), v, role))
            elif tv is dict or tv is list:
                walk(v, sh, (*path, i), role, out)


_ID_SUFFIXES = ("_id", "_ids")


def walk_rest(
    o: Json, sh: Shape, path: JsonPath, role: str, out: Parsed, handled: frozenset[str]
) -> None:
    """walk() for the keys of o that its format's parser did not read itself."""
    fields, rest, ids = sh.fields, sh.rest or (sh if sh.deep else FREE), sh.ids
    for k, v in o.items():
        if k in handled:
            continue
        sub = fields.get(k)
        if sub is None:
            if ids and k.endswith(_ID_SUFFIXES):
                continue
            sub = rest
        if not sub.skip:
            walk(v, sub, (*path, k), role, out)
