"""Base64 documents in a body (a PDF, a text file, a data URL): which carry text, and that text.

A text document's decoded text is a prompt part like any other string; on rewrite it is encoded
again behind the prefix it came with (``Parsed.encoded``).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .base import JsonPath, Parsed, PromptPart, bad

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,", re.ASCII)
_TEXT_TYPES = re.compile(
    r"text/.*|application/(json|xml|yaml|x-yaml|toml|csv|javascript|x-sh|x-python|sql|"
    r"markdown|x-ndjson|ld\+json)\Z"
)
_TEXT_SUFFIXES = (
    *(".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".xml", ".yaml", ".yml", ".toml", ".ini"),
    *(".html", ".htm", ".py", ".js", ".ts", ".sql", ".log", ".sh"),
)


def is_text_type(media_type: str) -> bool:
    return _TEXT_TYPES.match(media_type.strip().lower()) is not None


def encoded_text(
    out: Parsed,
    path: JsonPath,
    data: Any,
    role: str,
    *,
    media_type: str | None = None,
    filename: Any = None,
) -> None:
    """A base64 document: if it is text, its decoded text is a part (re-encoded on rewrite).

    The media type comes from the field beside it or from a data URL; a declared non-text type
    (PDF, images) carries no text we can read. With no type, a text file name says text; with
    neither, the data is text if it decodes to UTF-8 without NUL bytes (fail closed: unknown
    data that reads as text is checked as text). A declared text document we cannot decode is
    refused: it would reach the model unchecked.
    """
    if not isinstance(data, str):
        raise bad(path, "must be a string")
    prefix = ""
    m = _DATA_URL.match(data)
    if m is not None:
        prefix = m.group(0)
        media_type = media_type or m.group(1)
    declared = bool(media_type) or (
        isinstance(filename, str) and filename.lower().endswith(_TEXT_SUFFIXES)
    )
    if media_type and not is_text_type(media_type):
        return
    try:
        text = base64.b64decode(data[len(prefix) :], validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        if not declared:
            return  # binary data of no declared type
        raise bad(path, "is a text document that is not valid base64 of UTF-8 text") from exc
    if not declared and "\x00" in text:
        return
    if text:
        out.parts.append(PromptPart(path, text, role))
        out.encoded[path] = prefix


def encode_text(prefix: str, text: str) -> str:
    """The base64 form of a rewritten text document, behind its original prefix."""
    return prefix + base64.b64encode(text.encode("utf-8")).decode("ascii")
