"""The JSON Schema of the policy format, derived from the loader's own field parsers.

Each field parser in ``fields`` carries the schema of what it accepts, and the loader's table of
rule fields (``loader._FIELDS``, ``_REQUIRED``) says which fields each rule type has: the schema
is built from the same tables that validate policies, so the two cannot disagree on a field.
What the schema cannot say (a pattern the linear-time engine refuses, a locked rule overridden,
a rule id used twice) only ``check`` finds. ``policy-extproc schema`` prints it; editors use it
through a ``# yaml-language-server: $schema=...`` line or their settings.
"""

from __future__ import annotations

from typing import Any

from . import fields as f
from .loader import _FIELDS, _POLICY_EXTRAS, _REQUIRED
from .model import RULE_TYPES, SCOPE_KEYS

SCHEMA_ID = "urn:policy-extproc:policy:v1"
_COMMON: dict[str, tuple[f.Parser, str]] = {
    "id": (f.string, "The rule's name, unique in its policy; overrides match on it."),
    "final": (f.boolean, "true: no more specific policy may override this rule."),
    "alert": (f.boolean, "false: an enforced block or escalation by it sends no alert."),
}


def _of(parser: f.Parser) -> dict[str, Any]:
    schema = getattr(parser, "json_schema", None)
    if schema is None:
        raise TypeError(f"field parser {parser!r} has no JSON Schema (fields.described)")
    return dict(schema)


def _rule(rule_type: str) -> dict[str, Any]:
    props: dict[str, Any] = {"type": {"const": rule_type}}
    for key, (parser, doc) in _COMMON.items():
        props[key] = {**_of(parser), "description": doc}
    for key, (_name, parser) in _FIELDS[rule_type].items():
        props[key] = _of(parser)
    return {
        "type": "object",
        "properties": props,
        "required": ["type", *_REQUIRED.get(rule_type, ())],
        "additionalProperties": False,
    }


def policy_schema() -> dict[str, Any]:
    """The schema of a policy file: one policy, or a list of them."""
    types = sorted(RULE_TYPES)
    scope_value = _of(f.string)
    policy = {
        "type": "object",
        "properties": {
            "policy_name": {**_of(f.string), "description": "Unique name across all files."},
            "scope": {
                "type": "object",
                "properties": dict.fromkeys(SCOPE_KEYS, scope_value),
                "additionalProperties": False,
                "description": "Which requests it applies to; a missing key matches any.",
            },
            **{k: {**scope_value, "description": f"Shorthand for scope.{k}."} for k in SCOPE_KEYS},
            **{k: _of(parser) for k, parser in _POLICY_EXTRAS.items()},
            "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
        },
        "required": ["policy_name"],
        "additionalProperties": False,
    }
    rule = {
        "type": "object",
        "properties": {"type": {"enum": types}},
        "required": ["type"],
        "allOf": [
            {"if": {"properties": {"type": {"const": t}}}, "then": {"$ref": f"#/$defs/{t}"}}
            for t in types
        ],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "policy-extproc policy file",
        "anyOf": [
            {"$ref": "#/$defs/policy"},
            {"type": "array", "items": {"$ref": "#/$defs/policy"}},
        ],
        "$defs": {"policy": policy, "rule": rule, **{t: _rule(t) for t in types}},
    }
