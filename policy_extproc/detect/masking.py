"""Masking of found PII (DESIGN.md section 6): a type placeholder, a partial value, or a pseudonym.

Masked text is what may travel on; the raw values never reach an audit record, span or log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Literal, Protocol

from policy_extproc.detect.pii_validators import GROUPED, compact

MaskStyle = Literal["placeholder", "partial", "hash"]
STYLES: tuple[MaskStyle, ...] = ("placeholder", "partial", "hash")


class Found(Protocol):
    """What masking reads of a match (``pii.PiiMatch``): its type and where it is."""

    @property
    def entity(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


def _pseudonym(entity: str, value: str, key: bytes) -> str:
    # Normalised first so that "4111 1111 1111 1111" and "4111111111111111", or two spellings
    # of one mail address, get the same pseudonym; the type is mixed in to keep types apart.
    if entity == "EMAIL":
        value = value.lower()
    elif entity in GROUPED:
        value = compact(value)
    digest = hmac.new(key, f"{entity}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"[{entity}:{digest[:8]}]"


def _partial(entity: str, value: str) -> str:
    if entity == "EMAIL":
        return "****" + value[value.rindex("@") :]
    # A fixed run of stars hides the length; short values keep nothing at all.
    return "****" + value[-4:] if len(value) >= 8 else "****"


def replacement(entity: str, value: str, style: MaskStyle, key: bytes | None = None) -> str:
    """What one found value becomes under ``style``."""
    if style == "placeholder":
        return f"[{entity}]"
    if style == "partial":
        return _partial(entity, value)
    if style == "hash":
        if not key:
            raise ValueError("mask style 'hash' needs a key (HMAC-SHA256)")
        return _pseudonym(entity, value, key)
    raise ValueError(f"unknown mask style {style!r}; expected one of {', '.join(STYLES)}")


def mask(
    text: str,
    matches: Sequence[Found],
    style: MaskStyle = "placeholder",
    *,
    key: bytes | None = None,
) -> str:
    """Text with each match replaced: "[EMAIL]", "****1234" or a keyed "[EMAIL:3f9a1c2b]"."""
    if style not in STYLES:
        raise ValueError(f"unknown mask style {style!r}; expected one of {', '.join(STYLES)}")
    if style == "hash" and not key:
        raise ValueError("mask style 'hash' needs a key (HMAC-SHA256)")
    out: list[str] = []
    pos = 0
    for m in sorted(matches, key=lambda m: m.start):
        if m.start < pos:
            continue  # overlaps one already masked; find() never returns such pairs
        out.append(text[pos : m.start])
        out.append(replacement(m.entity, text[m.start : m.end], style, key))
        pos = m.end
    out.append(text[pos:])
    return "".join(out)
