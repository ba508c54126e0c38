"""Prompts of the legacy Completions and the Embeddings APIs: strings or token ids."""

from __future__ import annotations

from typing import Any

from .base import Json, Parsed, add, bad


def strings_or_tokens(body: Json, key: str, out: Parsed) -> None:
    """A string, a list of strings, a token array or a list of token arrays.

    Token ids carry no text a rule can read: they are flagged, and refused unless a policy
    allows them (``allow_token_prompts``).
    """
    value = body.get(key)
    if isinstance(value, str):
        add(out, (key,), value, "")
        return
    if value is None:
        raise bad((key,), "is required")
    if not isinstance(value, list):
        raise bad((key,), "must be a string, a list of strings or a token array")
    for i, item in enumerate(value):
        if isinstance(item, str):
            add(out, (key, i), item, "")
        elif isinstance(item, bool) or not (isinstance(item, int) or _is_token_array(item)):
            raise bad((key, i), "must be a string or a token array")
        else:
            out.token_prompts = True


def _is_token_array(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )
