"""Many patterns, one pass: keyword, phrase and regex matching on Hyperscan.

Hyperscan (Vectorscan) builds automata, so a scan is linear in the text whatever the patterns,
and there is no backtracking to exploit (no ReDoS). Two databases per pattern set:

- literals (keywords, topic phrases) go through Hyperscan's literal API, which compiles 10,000
  phrases in about 0.1 s. Whole-word matching is checked on each hit instead of writing ``\\b``
  into the pattern: ``\\b`` makes Hyperscan's compiler about 100 times slower at that scale.
  A phrase matches across any run of white space ("build  a\\nbomb"): the literal holds single
  spaces and is matched against a copy of the text with every white-space run squeezed to one
  space (Unicode spaces such as NBSP included), and hits are mapped back. Writing ``\\s+`` into
  a regex instead costs about 2 ms of compile per phrase, and minutes for a few thousand.
  The literal API folds case for ASCII only, so a case-insensitive literal with other letters
  ("GEHEIMNIS für") is compiled once per upper/lower spelling of those letters, or, past 16
  spellings, as a regex in UTF-8 mode (which folds Unicode).
- regular expressions are compiled with ``HS_FLAG_SOM_LEFTMOST`` so a hit has a start (needed to
  redact it). A pattern Hyperscan refuses (back-references, lookaround, huge bounded repeats) is
  a ``PatternError`` naming the pattern, raised at load time, never at request time.

Offsets are byte offsets into the UTF-8 encoding of the scanned text.

Matching is on the canonical form of the text (``canonical.py``: NFKC, no zero-width
characters, marks stripped, look-alikes folded to ASCII, Unicode spaces and dashes as " " and
"-"); ``scan`` folds what it is given and reports offsets in its bytes, unless told the data is
canonical already (``ScanText`` builds it once per request). Patterns are compiled to match that
form: a literal is canonicalised with the same function (a Cyrillic or accented keyword matches
however the text spells it), a regex is rewritten by ``canonical_regex.py``. ``\\s`` and ``-``
in a regex therefore also match NBSP, U+3000 and the Unicode dashes of the text.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import hyperscan

from .canonical import ASCII_CONTROLS, canonical_text, canonicalize, case_folds
from .canonical_regex import canonical_regex
from .scratch import ScratchPool

PatternKind = Literal["literal", "regex"]

_BASE_FLAGS = hyperscan.HS_FLAG_UTF8
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_MAX_SPELLINGS = 16

# White space as str.split() knows it: ASCII controls are translated byte for byte to a space
# (offsets unchanged); runs, and the multi-byte Unicode spaces, are squeezed to one space.
_ASCII_SPACE = bytes.maketrans(b"\t\n\v\f\r\x1c\x1d\x1e\x1f", b" " * 9)
_UNICODE_SPACE = (  # U+0085, U+00A0, U+1680, U+2000-200A, U+2028/9, U+202F, U+205F, U+3000
    rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80"
)
_ASCII_RUN = re.compile(rb" {2,}")
_ANY_RUN = re.compile(rb"(?: |" + _UNICODE_SPACE + rb"){2,}|" + _UNICODE_SPACE)
_SPACE_CLASS = (
    r"[\s\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}"
    r"\x{3000}]+"
)


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


def _plain_ascii_bytes(data: bytes) -> bool:
    return len(data.translate(None, ASCII_CONTROLS)) == len(data)


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


def _char_forms(ch: str) -> tuple[str, ...]:
    """The canonical spellings a caseless literal's character ``ch`` must meet: its fold in
    either case (``canonical.case_folds``), and each spelling outside ASCII in either case too
    (Hyperscan's caseless mode folds ASCII only)."""
    if ch.isascii():
        return (canonical_text(ch),)
    out: dict[str, str] = {}
    for f in case_folds(ch):
        if len(f) == 1 and not f.isascii():
            for x in (f, f.lower(), f.upper()):
                if len(x) == 1:
                    out.setdefault(x, x)
        else:
            out.setdefault(f.lower(), f)  # ASCII: the engine folds its case
    return tuple(sorted(out.values()))


def _spellings(p: Pattern) -> list[str] | None:
    """The literal(s) to compile for ``p`` (canonical, white space squeezed), or None for the
    regex path."""
    text = " ".join(canonical_text(p.expr).split())
    if p.case_sensitive or p.expr.isascii():
        return [text]
    choices = [_char_forms(ch) for ch in p.expr]
    count = 1
    for c in choices:
        count *= len(c)
    if count > _MAX_SPELLINGS:
        return None
    return list(dict.fromkeys(" ".join("".join(s).split()) for s in itertools.product(*choices)))


def _regex_of_literal(p: Pattern) -> str:
    if p.case_sensitive or p.expr.isascii():
        return _SPACE_CLASS.join(re.escape(w) for w in canonical_text(p.expr).split())
    words: list[str] = []
    for word in p.expr.split():
        atoms = []
        for ch in word:
            forms = _char_forms(ch)
            if len(forms) == 1:
                atoms.append(re.escape(forms[0]))
            else:
                atoms.append("(?:" + "|".join(re.escape(f) for f in forms) + ")")
        words.append("".join(atoms))
    return _SPACE_CLASS.join(w for w in words if w)


def _flags(p: Pattern, literal: bool) -> int:
    # The literal API takes no UTF8 flag: a literal is a byte string, matched as such.
    flags = 0 if literal else _BASE_FLAGS
    if not p.case_sensitive:
        flags |= hyperscan.HS_FLAG_CASELESS
    if not literal:
        # DOTALL: a prompt is one text, newlines are not record boundaries.
        flags |= hyperscan.HS_FLAG_SOM_LEFTMOST | hyperscan.HS_FLAG_DOTALL
    return flags


def _compile(entries: Sequence[tuple[Pattern, bytes]], literal: bool) -> ScratchPool | None:
    if not entries:
        return None
    db = hyperscan.Database()
    try:
        db.compile(
            expressions=[e for _, e in entries],
            ids=list(range(len(entries))),
            flags=[_flags(p, literal) for p, _ in entries],
            literal=literal,
        )
    except hyperscan.error as exc:
        # Hyperscan does not say which expression failed: probe each, on this error path only,
        # so that every bad pattern is reported at once.
        failures: dict[int, tuple[Pattern, str]] = {}
        for p, e in entries:
            probe = hyperscan.Database()
            try:
                probe.compile(expressions=[e], ids=[0], flags=[_flags(p, literal)], literal=literal)
            except hyperscan.error as one:
                failures.setdefault(id(p), (p, str(one)))
        raise PatternError(list(failures.values()) or [(entries[0][0], str(exc))]) from exc
    # Scanned from several threads at once (the admin dry run scans the live snapshot in a
    # worker thread): never with the database's own scratch.
    return ScratchPool(db)


class _Squeezed:
    """The text with white-space runs squeezed, and the way back to the original offsets."""

    __slots__ = ("_cum", "_keys", "data", "original")

    def __init__(self, original: bytes) -> None:
        self.original = original
        data = original.translate(_ASCII_SPACE)
        self._keys: list[int] | None = None
        self._cum: list[int] = []
        run = _ANY_RUN if not original.isascii() else _ASCII_RUN if b"  " in data else None
        if run is not None:
            squeezed = run.sub(b" ", data)
            if len(squeezed) != len(data):
                self._keys = []
                # Where each squeezed run's space sits, and how many bytes were dropped so far.
                removed = 0
                for m in run.finditer(data):
                    s, e = m.span()
                    self._keys.append(s - removed + 1)
                    removed += e - s - 1
                    self._cum.append(removed)
            data = squeezed
        self.data = data

    def original_offset(self, offset: int) -> int:
        if self._keys is None:
            return offset
        i = bisect_right(self._keys, offset) - 1
        return offset + self._cum[i] if i >= 0 else offset


_last_squeezed: tuple[bytes, _Squeezed] | None = None


def _squeezed(data: bytes) -> _Squeezed:
    # A request's text is scanned by the pattern sets of several policies in a row: squeeze it
    # once. One entry, replaced whole, so concurrent threads at worst squeeze twice.
    global _last_squeezed
    last = _last_squeezed
    if last is not None and last[0] is data:
        return last[1]
    squeezed = _Squeezed(data)
    _last_squeezed = (data, squeezed)
    return squeezed


class PatternSet:
    """A compiled set of patterns; ``scan`` returns every hit of every pattern in one pass each."""

    __slots__ = ("_lit", "_lit_db", "_lit_len", "_rx", "_rx_db", "_squeeze", "size")

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        lits: list[tuple[Pattern, bytes]] = []
        rxs: list[tuple[Pattern, bytes]] = []
        for p in patterns:
            if p.kind == "regex":
                rxs.append((p, canonical_regex(p.expr, not p.case_sensitive).encode()))
                continue
            spellings = _spellings(p)
            if spellings is None:
                rxs.append((p, _regex_of_literal(p).encode()))
            else:
                lits.extend((p, s.encode()) for s in spellings if s)
        self._lit: tuple[Pattern, ...] = tuple(p for p, _ in lits)
        self._lit_len = tuple(len(e) for _, e in lits)
        self._rx: tuple[Pattern, ...] = tuple(p for p, _ in rxs)
        # Only a literal with a space needs the squeezed text; the others cannot tell.
        self._squeeze = any(b" " in e for _, e in lits)
        errors: list[tuple[Pattern, str]] = []
        try:
            self._lit_db = _compile(lits, literal=True)
        except PatternError as exc:
            errors.extend(exc.failures)
        try:
            self._rx_db = _compile(rxs, literal=False)
        except PatternError as exc:
            errors.extend(exc.failures)
        if errors:
            raise PatternError(errors)
        self.size = len({id(p) for p, _ in lits}) + len(rxs)

    def scan(self, data: bytes, *, canonical: bool = False) -> list[Hit]:
        """All hits in ``data`` (UTF-8), matched on its canonical form, as byte spans of
        ``data``, in the order the engine reports them.

        ``canonical=True`` says ``data`` already is canonical text (``ScanText`` builds it once
        for every policy of a request), so it is scanned as it is.
        """
        if not data:
            return []
        if canonical or (data.isascii() and _plain_ascii_bytes(data)):
            return self._scan(data)
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return self._scan(data)  # not text: nothing to fold
        out: list[Hit] = []
        for h in self.find(text):
            s = len(text[: h.start].encode())
            out.append(Hit(h.tag, s, s + len(text[h.start : h.end].encode())))
        return out

    def _scan(self, data: bytes) -> list[Hit]:
        hits: list[Hit] = []
        if self._lit_db is not None:
            if self._squeeze:
                squeezed = _squeezed(data)
                found: list[Hit] = []
                handler = _literal_handler(self._lit, self._lit_len, squeezed.data, found)
                self._lit_db.scan(squeezed.data, handler)
                to = squeezed.original_offset
                hits.extend(Hit(h.tag, to(h.start), to(h.end)) for h in found)
            else:
                handler = _literal_handler(self._lit, self._lit_len, data, hits)
                self._lit_db.scan(data, handler)
        if self._rx_db is not None:
            self._rx_db.scan(data, _regex_handler(self._rx, data, hits))
        return hits

    def find(self, text: str) -> list[Hit]:
        """All hits in ``text``, matched on its canonical form, as str spans of ``text``."""
        canon = canonicalize(text)
        data = canon.text.encode("utf-8", "replace")
        hits = self._scan(data) if data else []
        if not hits:
            return hits
        out: list[Hit] = []
        for h in hits:
            s = len(data[: h.start].decode(errors="ignore"))
            e = s + len(data[h.start : h.end].decode(errors="ignore"))
            start, end = canon.span(s, e)
            out.append(Hit(h.tag, start, end))
        return out


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
