"""One character's canonical spelling: what is removed, what is read as ASCII.

The character-level half of the canonical form (``canonical.py`` holds the text, ``words.py``
the word): default-ignorable code points and controls, the TS #39 look-alikes of ASCII, and
``fold_char``, the spelling of one character outside any word that decides otherwise (spaces
and dashes, NFKC, marks stripped, a look-alike read as its ASCII).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

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


# The tag characters U+E0020..U+E007E mirror printable ASCII (U+E0041 is a tag "A"). They are
# default ignorable, so the canonical form removes them (a tag letter inside a keyword must not
# break it), but a model reads them as the letters they mirror: an instruction written in them
# is invisible to a reader ("ASCII smuggling"). ``read_tags`` gives the text as read that way.
_TAG_RUN = re.compile("[\U000e0020-\U000e007e]")
_TAGS_AS_ASCII = {0xE0000 + c: c for c in range(0x20, 0x7F)}


def read_tags(text: str) -> str | None:
    """``text`` with each tag character that mirrors ASCII read as that ASCII, None when it
    holds none."""
    if text.isascii() or _TAG_RUN.search(text) is None:
        return None
    return text.translate(_TAGS_AS_ASCII)


def tags_only(text: str) -> str | None:
    """What ``text`` says in tag characters alone: each read as its ASCII, every other
    character a space (one for one: the same offsets), None when it holds none."""
    tagged = read_tags(text)
    if tagged is None:
        return None
    return "".join(t if t != c else " " for c, t in zip(text, tagged, strict=True))


def removed(ch: str) -> bool:
    """Default ignorable, or a control that is not white space."""
    if is_default_ignorable(ch):
        return True
    return unicodedata.category(ch) == "Cc" and not ch.isspace()


# -- TS #39 confusables --------------------------------------------------------------------


def ascii_prototypes(table: dict[str, str]) -> dict[str, str]:
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


TO_ASCII = ascii_prototypes(PROTOTYPES)
# The letters that read as ASCII only through their other case (Cyrillic small ``т``, ``к``):
# TS #39 does not say they look like it (``words.py`` tells the two apart).
CASE_ONLY = frozenset(ch for ch in TO_ASCII if ch not in PROTOTYPES)


# -- one character -------------------------------------------------------------------------


def _simple(ch: str) -> str:
    """Fold one character that has no compatibility decomposition of its own."""
    if ch.isascii():
        return ch if not (ch < " " or ch == "\x7f") or ch.isspace() else ""
    if removed(ch) or unicodedata.category(ch).startswith("M"):
        return ""
    if ch.isspace():
        return " "
    if unicodedata.category(ch) == "Pd":
        return "-"
    return TO_ASCII.get(ch, ch)


def fold_char(ch: str) -> str:
    """The canonical spelling of one character ("" if it is removed)."""
    if ch.isascii():
        return _simple(ch)
    if removed(ch):
        return ""
    if ch.isspace():
        return " "
    if unicodedata.category(ch) == "Pd":
        return "-"
    ascii_ = TO_ASCII.get(ch)
    if ascii_ is not None:
        # Before NFKD, which may lose the likeness (U+03F2 lunate sigma "c" -> final sigma).
        return ascii_
    decomposed = unicodedata.normalize("NFKD", ch)
    if decomposed == ch:
        return _simple(ch)
    if decomposed[0] == " " and all(unicodedata.category(c)[0] == "M" for c in decomposed[1:]):
        # A spacing accent (U+00B4, U+02DC, ...) is a mark, not a word break.
        return TO_ASCII.get(ch, "")
    folded = "".join(_simple(c) for c in decomposed)
    # Recompose what needs it (a Hangul syllable is decomposed to jamo by NFKD).
    return folded if folded.isascii() else unicodedata.normalize("NFC", folded)


FOLD_CACHE_LIMIT = 100_000  # code points remembered; a client could send all 1.1 million


class _FoldTable(dict[str, str]):
    """fold_char, remembered for the code points met (up to a bound)."""

    def __missing__(self, ch: str) -> str:
        folded = fold_char(ch)
        if len(self) < FOLD_CACHE_LIMIT:
            self[ch] = folded
        return folded


FOLD = _FoldTable()
