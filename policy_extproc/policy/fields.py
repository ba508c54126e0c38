"""Field parsers for policy files: each turns a raw YAML value into a model value or says why not.

A parser raises ``FieldError`` with a message meant for the policy author; ``loader`` adds the
file, line, policy and rule to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from phonenumbers import SUPPORTED_REGIONS

from .model import SemanticTopic

Parser = Callable[[Any], Any]


# What each parser accepts, as JSON Schema (``policy.schema`` reads it through ``schema_of``).
_SCHEMAS: dict[Parser, dict[str, Any]] = {}


def described(parser: Parser, schema: dict[str, Any]) -> Parser:
    """Record the JSON Schema of what ``parser`` accepts."""
    _SCHEMAS[parser] = schema
    return parser


def schema_of(parser: Parser) -> dict[str, Any]:
    """The JSON Schema of what ``parser`` accepts (``described``)."""
    schema = _SCHEMAS.get(parser)
    if schema is None:
        raise TypeError(f"field parser {parser!r} has no JSON Schema (fields.described)")
    return schema


class FieldError(ValueError):
    """Why a value is wrong; ``messages`` holds one line per problem (a list may have several)."""

    def __init__(self, *messages: str) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def _type_name(value: Any) -> str:
    # isinstance, not type(): the YAML reader hands out dict and list subclasses with lines.
    for kind, name in ((bool, "a boolean"), (int | float, "a number"), (str, "a string"),
                       (list, "a list"), (Mapping, "a mapping"), (type(None), "null")):  # fmt: skip
        if isinstance(value, kind):
            return name
    return type(value).__name__


def string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FieldError(f"must be a non-empty string, not {_type_name(value)}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"must be true or false, not {_type_name(value)}")
    return value


def number(minimum: float = 0.0, *, exclusive: bool = False) -> Parser:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(f"must be a number, not {_type_name(value)}")
        if value < minimum or (exclusive and value == minimum):
            raise FieldError(f"must be {'above' if exclusive else 'at least'} {minimum:g}")
        return float(value)

    bound = "exclusiveMinimum" if exclusive else "minimum"
    return described(parse, {"type": "number", bound: minimum})


def integer(minimum: int = 0) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, float):
            raise FieldError(f"must be a whole number, not {value:g}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"must be a whole number, not {_type_name(value)}")
        if value < minimum:
            raise FieldError(f"must be at least {minimum}")
        return value

    return described(parse, {"type": "integer", "minimum": minimum})


def fraction(value: Any) -> float:
    f = number()(value)
    if f > 1.0:
        raise FieldError("must be a fraction between 0 and 1")
    return f


def one_of(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        if value not in choices:
            raise FieldError(f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return described(parse, {"enum": list(choices)})


def string_list(item: Parser = string, *, allow_empty: bool = False) -> Parser:
    def parse(value: Any) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise FieldError(f"must be a list, not {_type_name(value)}")
        if not value and not allow_empty:
            raise FieldError("must not be empty")
        out: list[Any] = []
        problems: list[str] = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except FieldError as exc:
                problems.extend(f"item {i + 1}: {m}" for m in exc.messages)
        if problems:
            raise FieldError(*problems)
        return tuple(out)

    items = schema_of(item)
    many: dict[str, Any] = {"type": "array", "items": items}
    if not allow_empty:
        many["minItems"] = 1
    # A single value is read as a list of one, as the parser does.
    return described(parse, {"anyOf": [items, many]})


def phone_region(value: Any) -> str:
    """An ISO 3166 alpha-2 region libphonenumber has a numbering plan for ("gb" reads as GB)."""
    code = string(value).strip().upper()
    if code not in SUPPORTED_REGIONS:
        raise FieldError(f"{value!r} is no region with a phone numbering plan (US, GB, DE, ...)")
    return code


def glob(value: Any) -> str:
    s = string(value)
    # fnmatch would quietly read an unclosed "[" as a literal; an author meant a class.
    depth_ok = re.fullmatch(r"(?:[^\[\]]|\[!?\]?[^\]]*\])*", s) is not None
    if not depth_ok:
        raise FieldError(f"bad glob {s!r}: unbalanced '[' or ']'")
    return s


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(value: Any) -> float:
    """Seconds, from a number or a string such as ``30s``, ``5m``, ``1h``, ``2d``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise FieldError("must be above 0")
        return float(value)
    m = _DURATION.match(value) if isinstance(value, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise FieldError(f"must be a duration such as 30s, 5m, 1h or 2d, not {value!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def regex(value: Any) -> str:
    """Syntax only; what the linear-time engine cannot compile is found when the set compiles."""
    s = string(value)
    try:
        re.compile(s)
    except re.error as exc:
        raise FieldError(f"{s!r}: invalid regular expression: {exc}") from None
    return s


def str_mapping(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise FieldError(f"must be a mapping, not {_type_name(value)}")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise FieldError(f"value of {k!r} must be a string")
        out[str(k)] = str(v)
    return out


def topics(value: Any) -> Mapping[str, Any]:
    """Topic name -> a list of phrases (``match: phrase``, today's form), or a mapping
    ``{match: semantic|phrase, examples: [...], threshold: 0..1}`` (``SemanticTopic``)."""
    if not isinstance(value, Mapping) or not value:
        raise FieldError("must be a mapping of topic name to a list of phrases")
    out: dict[str, Any] = {}
    for name, spec in value.items():
        try:
            out[str(name)] = topic(spec) if isinstance(spec, Mapping) else string_list()(spec)
        except FieldError as exc:
            raise FieldError(f"topic {name!r}: {exc}") from None
    return out


_TOPIC_KEYS = ("match", "examples", "threshold")


def topic(value: Any) -> Any:
    """One topic in mapping form: a ``SemanticTopic``, or the phrases of ``match: phrase``."""
    if not isinstance(value, Mapping):
        raise FieldError(f"must be a mapping or a list of phrases, not {_type_name(value)}")
    unknown = [str(k) for k in value if k not in _TOPIC_KEYS]
    if unknown:
        raise FieldError(f"unknown key {unknown[0]!r} (known: {', '.join(_TOPIC_KEYS)})")
    match = one_of("semantic", "phrase")(value.get("match", "phrase"))
    if "examples" not in value:
        raise FieldError("'examples' is required")
    try:
        examples = string_list()(value["examples"])
    except FieldError as exc:
        raise FieldError(f"'examples' {exc}") from None
    if match == "phrase":
        if "threshold" in value:
            raise FieldError("'threshold' applies to match: semantic only")
        return examples
    threshold = None
    if "threshold" in value:
        try:
            threshold = fraction(value["threshold"])
        except FieldError as exc:
            raise FieldError(f"'threshold' {exc}") from None
        if threshold == 0.0:
            raise FieldError("'threshold' must be above 0 (0 would fire on every sentence)")
    return SemanticTopic(examples, threshold)


def per(value: Any) -> tuple[str, ...]:
    keys: Sequence[Any] = string_list(one_of("user", "team", "org"))(value)
    if len(set(keys)) != len(keys):
        raise FieldError("names the same key twice")
    return tuple(keys)


# What each plain parser accepts, for the JSON Schema of the policy format.
described(string, {"type": "string", "minLength": 1, "pattern": "\\S"})
described(boolean, {"type": "boolean"})
described(fraction, {"type": "number", "minimum": 0, "maximum": 1})
described(glob, {"type": "string", "minLength": 1})
described(phone_region, {"type": "string", "pattern": "^\\s*[A-Za-z]{2}\\s*$",
                         "description": "ISO 3166 alpha-2 region, e.g. US, GB, DE"})  # fmt: skip
described(duration, {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                               {"type": "string", "pattern": _DURATION.pattern}]})  # fmt: skip
described(regex, {"type": "string", "minLength": 1, "format": "regex"})
described(str_mapping, {"type": "object",
                        "additionalProperties": {"type": ["string", "number"]}})  # fmt: skip
described(topic, {
    "type": "object",
    "properties": {
        "match": {"enum": ["semantic", "phrase"]},
        "examples": schema_of(string_list()),
        "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    },
    "required": ["examples"],
    "additionalProperties": False,
})  # fmt: skip
described(topics, {"type": "object", "minProperties": 1, "additionalProperties": {
    "anyOf": [schema_of(string_list()), schema_of(topic)]}})  # fmt: skip
described(per, schema_of(string_list(one_of("user", "team", "org"))))
