"""The reading form: the text as the semantic classifiers read it, decided word by word.

Keywords, patterns and PII match the canonical form (``canonical.py``): every character that
Unicode TS #39 says looks like ASCII becomes that ASCII, whatever word it is in. That is the
skeleton TS #39 compares for look-alike detection, and it is what a keyword must meet: no
spelling of ``bomb`` in Cyrillic, Greek or Cherokee letters passes it. But it is not text a
model can read: Russian ``Как сделать бомбу`` becomes ``Kak cдeлatb 6om6y``, Japanese ``で``
loses its dakuten, Hindi its vowel signs. The two classifiers (``prompt_injection`` and semantic
topics) read this form instead, the same request text with the same tricks undone:

- removed, as in the canonical form: default-ignorables (zero-width characters, bidi controls,
  variation selectors, tags) and controls; white space and dashes folded; NFKC;
- word by word (``words.py`` says what a word is, and argues the rule): a word that could pass
  for an ASCII word (Latin with accents, Latin with Cyrillic or Greek look-alikes slipped in, a
  whole-script confusable such as Cyrillic ``ѕех``), or whose dominant script is Latin, folds as
  in the canonical form; any other word is a word of its dominant script and keeps its letters
  and marks (``бомба``, ``で``, ``नमस्ते``), a letter slipped in from another script becoming its
  look-alike in that script (Latin ``o`` in ``бoмба`` is Cyrillic ``о``).

So an instruction written with look-alikes or zero-width characters still reads as the
instruction, and a sentence in Russian reads as Russian. The form is a fixed point, and its
``Canonical`` maps a sentence back to its original span (a topic redaction).
"""

# ruff: noqa: RUF002 (look-alike letters are what this module is about)

from __future__ import annotations

import re

from .canonical import Canonical, canonicalize, mostly_outside_ascii, plain_ascii
from .words import WORD_TAIL, fold_words, pieces, settle

__all__ = ["latin_only", "readable", "reading_text"]

# Characters of no script but Latin's (Latin letters, accents and marks, IPA, punctuation,
# currency, arrows, symbols, enclosed and fullwidth ASCII, Latin math letters and digits, emoji,
# tags, variation selectors): in a text of only these every word is Latin or folds alike in
# both forms, so the reading form is the canonical form (tests/unit/test_canonical_scripts.py
# checks it, and every such character was checked). Left out: the micro sign, letterlike
# symbols (U+2100..U+214F) and the Greek math letters, which are Greek letters under NFKC.
_NOT_LATIN_ONLY = re.compile(
    "[^\\x00-\\xb4\\xb6-\\u036f\\u1e00-\\u1eff\\u2000-\\u20ff\\u2150-\\u2bff\\ufe00-\\ufe0f"
    "\\uff00-\\uff5e\\U0001d400-\\U0001d6a3\\U0001d7ce-\\U0001d7ff\\U0001f000-\\U0001faff"
    "\\U000e0000-\\U000e007f]"
)


def latin_only(text: str) -> bool:
    """Whether ``text`` holds no letter of a script other than Latin: its reading form is then
    its canonical form (the semantic pass shares the content filters' one)."""
    return _NOT_LATIN_ONLY.search(text) is None


_SPECIAL_RUN = re.compile(r"[^\t-\r -~]+")  # anything but printable ASCII and white space
_GAP = re.compile(f"[^{WORD_TAIL.pattern[1:-2]}]*")  # no word character
_ASCII_WORD = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _sparse(text: str) -> str:
    """Fold only what is around characters outside printable ASCII: for text that is mostly
    ASCII. A word folds as a whole (``words.py``), so a run that holds a word character is
    widened to a region of whole words: back over the ASCII letters before it, on to the end
    of the word it ends in; a run between words (a curly quote, a dash) folds as it is."""
    out: list[str] = []
    last = 0  # original offset up to which ``out`` holds the reading form
    end = 0  # the end of the last region
    tail = WORD_TAIL.match
    for m in _SPECIAL_RUN.finditer(text):
        start, stop = m.span()
        if stop <= end:
            continue  # inside the last region
        start = max(start, end)
        if _GAP.fullmatch(text, start, stop):
            end = stop
        else:
            while start > end and text[start - 1] in _ASCII_WORD:
                start -= 1
            end = tail(text, stop).end()  # type: ignore[union-attr]
        region = text[start:end]
        folded = fold_words(region)  # remembers each word
        if folded != region:
            out.append(text[last:start])
            out.append(folded)
            last = end
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def readable(text: str) -> Canonical:
    """The reading form of ``text`` with its offset map (see the module docstring)."""
    if plain_ascii(text):
        return Canonical(text, text)
    if latin_only(text):  # curly quotes, accents, emoji: nothing a word of its own script keeps
        return canonicalize(text)
    folded = fold_words(text) if mostly_outside_ascii(text) else _sparse(text)
    return Canonical(settle(text, folded), text, pieces)


def reading_text(text: str) -> str:
    """Just the reading form (tests, benchmarks)."""
    return readable(text).text
