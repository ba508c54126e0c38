"""Regular expressions rewritten to match the canonical text (``canonical.py``).

A pattern is written against the text as people see it; it is matched against the canonical
form. That form is decided per word (``words.py``): the same letter may stay as it is (in a
word kept in its script: ``бомба``), fold to ASCII (``сор`` -> ``cop``), or become its
look-alike in another script (Latin ``o`` in ``бoмба``), and a regular expression cannot know
the word around its letters. So the pattern is read in NFC, and each literal character outside
ASCII matches every canonical spelling it can have (``words.spellings``: a class, or a group
when one is longer than a character; removed characters go with their quantifier; a combining
mark, stripped in some words and kept in others, is optional); in a character class, the
single-character spellings of each member outside ASCII (and of each member of a range of up
to 4096 code points) are added, except in a negated class. Escapes are taken as written. ASCII
is left alone: an ASCII pattern targets ASCII text, and a letter of it slipped into a word of
another script (Latin ``o`` in ``бoмба``) reads as that script's letter there.
"""

# ruff: noqa: RUF002 (the docstring shows look-alike letters: what this module is about)

from __future__ import annotations

import re
import unicodedata

from .spellings import spellings

_QUANTIFIER = re.compile(r"(?:[*+?]|\{\d*(?:,\d*)?\})[?+]?")
_MAX_RANGE = 4096


def _hex(ch: str) -> str:
    return f"\\x{{{ord(ch):x}}}"


def _class_additions(body: str) -> str:
    """The canonical spellings to add to a class: of its literal members outside ASCII, and of
    the members of its ranges that have one character as canonical spelling."""
    members: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            # Escapes (\\x{..}, \\p{..}, \\n) are taken as written.
            close = body.find("}", i) if body.startswith("{", i + 2) else -1
            i = close + 1 if close >= 0 else i + 2
            continue
        if ch == "[" and body.startswith("[:", i):
            end = body.find(":]", i)
            i = end + 2 if end >= 0 else len(body)
            continue
        if i + 2 < len(body) and body[i + 1] == "-" and body[i + 2] not in "\\]":
            lo, hi = ord(ch), ord(body[i + 2])
            if not (ch.isascii() and body[i + 2].isascii()) and 0 <= hi - lo <= _MAX_RANGE:
                members.extend(chr(c) for c in range(lo, hi + 1))
            i += 3
            continue
        if not ch.isascii():
            members.append(ch)
        i += 1
    extra: dict[str, None] = {}
    for m in members:
        for f in spellings(m):
            if len(f) == 1 and f != m:
                extra[_hex(f)] = None
    return "".join(extra)


def _literal(ch: str) -> str:
    """What matches every canonical spelling of the literal ``ch`` (outside ASCII), as one
    atom a quantifier can follow; "" if the text never holds it."""
    found = spellings(ch)
    forms = [f for f in found if f]
    if not forms:
        return ""  # removed from the text (a zero-width character)
    if len(forms) == 1 and len(forms[0]) == 1:
        atom = re.escape(forms[0])
    elif all(len(f) == 1 for f in forms):
        atom = "[" + "".join(_hex(f) for f in forms) + "]"
    else:
        atom = "(?:" + "|".join(re.escape(f) for f in forms) + ")"
    # A mark is stripped in some words and kept in others: optional.
    return f"(?:{atom}?)" if len(forms) < len(found) else atom


def canonical_regex(expr: str) -> str:
    """``expr`` rewritten to match the canonical text (see the module docstring)."""
    if expr.isascii():
        return expr
    expr = unicodedata.normalize("NFC", expr)  # the text's kept words are composed
    out: list[str] = []
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch == "\\":
            j = i + 2
            if expr.startswith(("\\x{", "\\p{", "\\P{", "\\N{"), i):
                close = expr.find("}", i)
                j = close + 1 if close >= 0 else n
            elif expr.startswith("\\Q", i):
                close = expr.find("\\E", i)
                j = close + 2 if close >= 0 else n
            out.append(expr[i:j])
            i = j
        elif ch == "[":
            j = i + 1
            negated = j < n and expr[j] == "^"
            j += 1 if negated else 0
            if j < n and expr[j] == "]":
                j += 1  # a "]" first in a class is a member
            while j < n and expr[j] != "]":
                if expr[j] == "\\":
                    j += 1
                elif expr.startswith("[:", j):
                    close = expr.find(":]", j)
                    j = close + 1 if close >= 0 else j
                j += 1
            body = expr[i + 1 : j]
            out.append("[" + body + ("" if negated else _class_additions(body)) + "]")
            i = j + 1
        elif ch.isascii():
            out.append(ch)
            i += 1
        else:
            piece = _literal(ch)
            if not piece:
                q = _QUANTIFIER.match(expr, i + 1)
                # Removed from the text (a zero-width character): its quantifier goes too.
                i = q.end() if q else i + 1
                continue
            out.append(piece)
            i += 1
    return "".join(out)
