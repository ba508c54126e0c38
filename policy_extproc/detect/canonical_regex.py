"""Regular expressions rewritten to match the canonical text (``canonical.py``).

A pattern is written against the text as people see it; it is matched against the canonical
form. Each literal character outside ASCII is replaced by its canonical spelling (removed
characters go with their quantifier, an expansion is grouped); in a character class, the
canonical spelling of each member outside ASCII (and of each member of a range of up to 4096
code points) is added, except in a negated class. Escapes are taken as written.
"""

from __future__ import annotations

import re

from .canonical import fold_char

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
        f = fold_char(m)
        if len(f) == 1 and f != m:
            extra[_hex(f)] = None
    return "".join(extra)


def canonical_regex(expr: str) -> str:
    """``expr`` rewritten to match the canonical text (see the module docstring)."""
    if expr.isascii():
        return expr
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
            f = fold_char(ch)
            q = _QUANTIFIER.match(expr, i + 1)
            if not f:
                # Removed from the text (a zero-width character): its quantifier goes too.
                i = q.end() if q else i + 1
                continue
            out.append(re.escape(f) if len(f) == 1 or q is None else f"(?:{re.escape(f)})")
            i += 1
    return "".join(out)
