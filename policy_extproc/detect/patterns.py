"""Many patterns, one pass: keyword, phrase and regex matching on Hyperscan.

Hyperscan (Vectorscan) builds automata, so a scan is linear in the text whatever the patterns,
and there is no backtracking to exploit (no ReDoS). Two databases per pattern set:

- literals (keywords, topic phrases) go through Hyperscan's literal API, which compiles 10,000
  phrases in about 0.1 s. Whole-word matching is checked on each hit instead of writing ``\\b``
  into the pattern: ``\\b`` makes Hyperscan's compiler about 100 times slower at that scale.
- regular expressions are compiled with ``HS_FLAG_SOM_LEFTMOST`` so a hit has a start (needed to
  redact it). A pattern Hyperscan refuses (back-references, lookaround, huge bounded repeats) is
  a ``PatternError`` naming the pattern, raised at load time, never at request time.

Offsets are byte offsets into the UTF-8 encoding of the scanned text.
"""

from __future__ import annotations

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
        super().__init__("; ".join(f"pattern {p.expr!r} cannot be compiled: {why}"
                                   for p, why in failures))  # fmt: skip
        self.failures = failures


def _is_word_byte(data: bytes, index: int) -> bool:
    # Bytes of multi-byte UTF-8 sequences (>= 0x80) count as word characters: "passwordé" is one
    # word, and a filter must not cut it.
    if index < 0 or index >= len(data):
        return False
    b = data[index]
    return b in _WORD or b >= 0x80


def _flags(p: Pattern) -> int:
    # The literal API takes no UTF8 flag: a literal is a byte string, matched as such.
    flags = _BASE_FLAGS if p.kind == "regex" else 0
    if not p.case_sensitive:
        flags |= hyperscan.HS_FLAG_CASELESS
    if p.kind == "regex":
        # DOTALL: a prompt is one text, newlines are not record boundaries.
        flags |= hyperscan.HS_FLAG_SOM_LEFTMOST | hyperscan.HS_FLAG_DOTALL
    return flags


def _compile(patterns: Sequence[Pattern], literal: bool) -> hyperscan.Database | None:
    if not patterns:
        return None
    db = hyperscan.Database()
    exprs = [p.expr.encode() for p in patterns]
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
                probe.compile(expressions=[p.expr.encode()], ids=[0], flags=[_flags(p)],
                              literal=literal)  # fmt: skip
            except hyperscan.error as one:
                failures.append((p, str(one)))
        raise PatternError(failures or [(patterns[0], str(exc))]) from exc
    return db


class PatternSet:
    """A compiled set of patterns; ``scan`` returns every hit of every pattern in one pass each."""

    __slots__ = ("_lit", "_lit_db", "_lit_len", "_rx", "_rx_db", "size")

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        lits = [p for p in patterns if p.kind == "literal" and p.expr]
        rxs = [p for p in patterns if p.kind == "regex"]
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
        if p.whole_word and (_is_word_byte(data, start - 1) or _is_word_byte(data, to)):
            return
        hits.append(Hit(p.tag, start, to))

    return on_match


def _regex_handler(
    rxs: tuple[Pattern, ...], data: bytes, hits: list[Hit]
) -> Callable[[int, int, int, int, object], None]:
    def on_match(index: int, start: int, to: int, _flags: int, _ctx: object) -> None:
        p = rxs[index]
        if p.whole_word and (_is_word_byte(data, start - 1) or _is_word_byte(data, to)):
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
