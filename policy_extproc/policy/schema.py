"""The JSON Schema of the policy format, derived from the loader's own field parsers.

Each field parser in ``fields`` carries the schema of what it accepts, and each rule kind
(``policy.rules``) declares its fields and which are required: the schema is built from the
same declarations that validate policies, so the two cannot disagree on a field.
What the schema cannot say (a pattern the linear-time engine refuses, a locked rule overridden,
a rule id used twice) only ``check`` finds. ``policy-extproc schema`` prints it; editors use it
through a ``# yaml-language-server: $schema=...`` line or their settings.
"""

from __future__ import annotations

from typing import Any

from . import fields as f
from .loader import _POLICY_EXTRAS
from .model import SCOPE_KEYS
from .rules import BY_NAME

SCHEMA_ID = "urn:policy-extproc:policy:v1"
_COMMON: dict[str, tuple[f.Parser, str]] = {
    "id": (f.string, "The rule's name, unique in its policy; overrides match on it."),
    "final": (f.boolean, "true: no more specific policy may override this rule."),
    "alert": (f.boolean, "false: an enforced block or escalation by it sends no alert."),
}


def _of(parser: f.Parser) -> dict[str, Any]:
    return dict(f.schema_of(parser))


def _rule(rule_type: str) -> dict[str, Any]:
    props: dict[str, Any] = {"type": {"const": rule_type}}
    for key, (parser, doc) in _COMMON.items():
        props[key] = {**_of(parser), "description": doc}
    kind = BY_NAME[rule_type]
    for key, spec in kind.fields.items():
        props[key] = _of(spec.parse)
    return {
        "type": "object",
        "properties": props,
        "required": ["type", *kind.required],
        "additionalProperties": False,
    }


def policy_schema() -> dict[str, Any]:
    """The schema of a policy file: one policy, or a list of them."""
    types = sorted(BY_NAME)
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
