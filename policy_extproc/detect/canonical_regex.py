"""Regular expressions rewritten to match the canonical text (``canonical.py``).

A pattern is written against the text as people see it; it is matched against the canonical
form. Each literal character outside ASCII is replaced by its canonical spelling (removed
characters go with their quantifier, an expansion is grouped); in a character class, the
canonical spelling of each member outside ASCII (and of each member of a range of up to 4096
code points) is added, except in a negated class. Escapes are taken as written. The fold is not
blind to case (Cyrillic small be reads as ``6``, its capital as no ASCII), so for a caseless
pattern each such character and member also matches the fold of its other case.
"""

from __future__ import annotations

import re

from .canonical import case_folds, fold_char

_QUANTIFIER = re.compile(r"(?:[*+?]|\{\d*(?:,\d*)?\})[?+]?")
_MAX_RANGE = 4096


def _hex(ch: str) -> str:
    return f"\\x{{{ord(ch):x}}}"


def _folds(ch: str, caseless: bool) -> list[str]:
    return case_folds(ch) if caseless else [fold_char(ch)]


def _class_additions(body: str, caseless: bool) -> str:
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
        for f in _folds(m, caseless):
            if len(f) == 1 and f != m:
                extra[_hex(f)] = None
    return "".join(extra)


def canonical_regex(expr: str, caseless: bool = False) -> str:
    """``expr`` rewritten to match the canonical text (see the module docstring); ``caseless``:
    the pattern is matched without regard to case."""
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
            out.append("[" + body + ("" if negated else _class_additions(body, caseless)) + "]")
            i = j + 1
        elif ch.isascii():
            out.append(ch)
            i += 1
        else:
            forms = [f for f in _folds(ch, caseless) if f]
            q = _QUANTIFIER.match(expr, i + 1)
            if not forms:
                # Removed from the text (a zero-width character): its quantifier goes too.
                i = q.end() if q else i + 1
                continue
            if len(forms) > 1:
                out.append("(?:" + "|".join(map(re.escape, forms)) + ")")
            else:
                f = forms[0]
                out.append(re.escape(f) if len(f) == 1 or q is None else f"(?:{re.escape(f)})")
            i += 1
    return "".join(out)
