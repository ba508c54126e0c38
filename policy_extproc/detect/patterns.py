"""Many patterns, one pass: keyword, phrase and regex matching on Hyperscan.

Hyperscan (Vectorscan) builds automata, so a scan is linear in the text whatever the patterns,
and there is no backtracking to exploit (no ReDoS). Two databases per pattern set:

- literals (keywords, topic phrases) go through Hyperscan's literal API, which compiles 10,000
  phrases in about 0.1 s. Whole-word matching is checked on each hit instead of writing ``\\b``
  into the pattern: ``\\b`` makes Hyperscan's compiler about 100 times slower at that scale.
  The literal API folds case for ASCII only, so a case-insensitive literal with other letters
  ("Geheimnisse für", "ÉTÉ") is compiled as an escaped regex in UTF-8 mode, which folds Unicode.
- regular expressions are compiled with ``HS_FLAG_SOM_LEFTMOST`` so a hit has a start (needed to
  redact it). A pattern Hyperscan refuses (back-references, lookaround, huge bounded repeats) is
  a ``PatternError`` naming the pattern, raised at load time, never at request time.

Offsets are byte offsets into the UTF-8 encoding of the scanned text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import hyperscan

PatternKind = Literal["literal", "regex"]

_BASE_FLAGS = hyperscan.HS_FLAG_UTF8
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(frozen=True, slots=True)
class Pattern:
    """One thing to look for; ``tag`` is the caller's, returned with every hit."""

    tag: int
    expr: str
    kind: PatternKind = "literal"
    case_sensitive: bool = False
    whole_word: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    tag: int
    start: int
    end: int


class PatternError(ValueError):
    """Patterns the engine cannot compile: ``failures`` pairs each with the engine's reason."""

    def __init__(self, failures: list[tuple[Pattern, str]]) -> None:
        super().__init__(
            "; ".join(f"pattern {p.expr!r} cannot be compiled: {why}" for p, why in failures)
        )
        self.failures = failures


def _is_word_char(ch: str) -> bool:
    # Letters, digits, "_" and combining marks (a decomposed "é" is "e" + U+0301) make words;
    # punctuation and spaces outside ASCII (NBSP, "«", "—", "。") separate them.
    return ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")


def _word_before(data: bytes, index: int) -> bool:
    """Whether the character ending just before byte ``index`` is a word character."""
    if index <= 0:
        return False
    b = data[index - 1]
    if b < 0x80:
        return b in _WORD
    start = index - 1
    while start > 0 and index - start < 4 and data[start] & 0xC0 == 0x80:
        start -= 1  # back over UTF-8 continuation bytes to the lead byte
    ch = data[start:index].decode("utf-8", errors="replace")
    return bool(ch) and _is_word_char(ch[-1])


def _word_after(data: bytes, index: int) -> bool:
    """Whether the character starting at byte ``index`` is a word character."""
    if index >= len(data):
        return False
    b = data[index]
    if b < 0x80:
        return b in _WORD
    ch = data[index : index + 4].decode("utf-8", errors="replace")
    return bool(ch) and _is_word_char(ch[0])


def _is_literal(p: Pattern) -> bool:
    # Hyperscan's literal API folds ASCII case only (see the module docstring).
    return p.kind == "literal" and (p.case_sensitive or p.expr.isascii())


def _expr(p: Pattern) -> bytes:
    if p.kind == "literal" and not _is_literal(p):
        return re.escape(p.expr).encode()
    return p.expr.encode()


def _flags(p: Pattern) -> int:
    # The literal API takes no UTF8 flag: a literal is a byte string, matched as such.
    regex = not _is_literal(p)
    flags = _BASE_FLAGS if regex else 0
    if not p.case_sensitive:
        flags |= hyperscan.HS_FLAG_CASELESS
    if regex:
        # DOTALL: a prompt is one text, newlines are not record boundaries.
        flags |= hyperscan.HS_FLAG_SOM_LEFTMOST | hyperscan.HS_FLAG_DOTALL
    return flags


def _compile(patterns: Sequence[Pattern], literal: bool) -> hyperscan.Database | None:
    if not patterns:
        return None
    db = hyperscan.Database()
    exprs = [_expr(p) for p in patterns]
    try:
        db.compile(
            expressions=exprs,
            ids=list(range(len(patterns))),
            flags=[_flags(p) for p in patterns],
            literal=literal,
        )
    except hyperscan.error as exc:
        # Hyperscan does not say which expression failed: probe each, on this error path only,
        # so that every bad pattern is reported at once.
        failures = []
        for p in patterns:
            probe = hyperscan.Database()
            try:
                probe.compile(expressions=[_expr(p)], ids=[0], flags=[_flags(p)], literal=literal)
            except hyperscan.error as one:
                failures.append((p, str(one)))
        raise PatternError(failures or [(patterns[0], str(exc))]) from exc
    return db


class PatternSet:
    """A compiled set of patterns; ``scan`` returns every hit of every pattern in one pass each."""

    __slots__ = ("_lit", "_lit_db", "_lit_len", "_rx", "_rx_db", "size")

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        lits = [p for p in patterns if _is_literal(p) and p.expr]
        rxs = [p for p in patterns if not _is_literal(p) and (p.kind == "regex" or p.expr)]
        self._lit: tuple[Pattern, ...] = tuple(lits)
        self._lit_len = tuple(len(p.expr.encode()) for p in lits)
        self._rx: tuple[Pattern, ...] = tuple(rxs)
        self._lit_db = _compile(lits, literal=True)
        self._rx_db = _compile(rxs, literal=False)
        self.size = len(lits) + len(rxs)

    def scan(self, data: bytes) -> list[Hit]:
        """All hits in ``data`` (UTF-8), in the order the engine reports them."""
        hits: list[Hit] = []
        if not data:
            return hits
        if self._lit_db is not None:
            handler = _literal_handler(self._lit, self._lit_len, data, hits)
            self._lit_db.scan(data, match_event_handler=handler)
        if self._rx_db is not None:
            self._rx_db.scan(data, match_event_handler=_regex_handler(self._rx, data, hits))
        return hits


def _literal_handler(
    lits: tuple[Pattern, ...], lengths: tuple[int, ...], data: bytes, hits: list[Hit]
) -> Callable[[int, int, int, int, object], None]:
    # The literal API reports no start; a literal's start is its end less its length.
    def on_match(index: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
        p = lits[index]
        start = to - lengths[index]
        if p.whole_word and (_word_before(data, start) or _word_after(data, to)):
            return
        hits.append(Hit(p.tag, start, to))

    return on_match


def _regex_handler(
    rxs: tuple[Pattern, ...], data: bytes, hits: list[Hit]
) -> Callable[[int, int, int, int, object], None]:
    def on_match(index: int, start: int, to: int, _flags: int, _ctx: object) -> None:
        p = rxs[index]
        if p.whole_word and (_word_before(data, start) or _word_after(data, to)):
            return
        hits.append(Hit(p.tag, start, to))

    return on_match


def merge_spans(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping cover of ``spans`` (regex hits report every end of a match)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
