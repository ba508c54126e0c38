"""Misspelt attack words read as the words they misspell: "Ignroe all previuos instrcutions"
is the attack it spells, to a model and now to the signals.

A model reads a word with a letter dropped, two letters swapped or (in a long word) one letter
changed as the word meant; the signals match exact words. ``Typos`` knows, for the words the
signals are made of, every such misspelling that is not itself a word (``known``: the words
of the lexical model, which has seen ordinary text), and ``correct`` gives the text with each
misspelling replaced, or None when it holds none: the detector then scans that reading as it
scans its other decodings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from string import ascii_lowercase

# The words the override, extraction and persona signals turn on (signals.py), in English.
KEY_WORDS = (
    "ignore", "disregard", "forget", "previous", "prior", "preceding", "earlier", "above",
    "instructions", "instruction", "directions", "guidelines", "rules", "directives",
    "everything", "system", "prompt", "reveal", "repeat", "override", "bypass", "pretend",
    "jailbreak", "restrictions", "unrestricted", "unfiltered", "developer", "commands",
    "confidential", "password", "hidden", "initial",
)  # fmt: skip

_WORD = re.compile(rb"[a-z]+")


def misspellings(word: str) -> set[str]:
    """One letter dropped (words of five letters or more), two neighbours swapped, one letter
    changed (eight or more)."""
    out = set()
    n = len(word)
    for i in range(n):
        if n >= 5:
            out.add(word[:i] + word[i + 1 :])
        if i + 1 < n:
            out.add(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
        if n >= 8:
            out.update(word[:i] + c + word[i + 1 :] for c in ascii_lowercase)
    out.discard(word)
    return out


class Typos:
    """Misspelling -> word, for ``KEY_WORDS``; built once per detector."""

    __slots__ = ("_fix",)

    def __init__(self, known: Iterable[str]) -> None:
        words = set(known) | set(KEY_WORDS)
        fix: dict[bytes, bytes] = {}
        ambiguous: set[bytes] = set()
        for word in KEY_WORDS:
            for wrong in misspellings(word):
                if wrong in words:
                    continue  # a word of its own ("prion", "fore")
                key = wrong.encode()
                if key in fix and fix[key] != word.encode():
                    ambiguous.add(key)
                fix[key] = word.encode()
        for key in ambiguous:
            del fix[key]
        self._fix = fix

    def correct(self, low: bytes, words: list[bytes] | None = None) -> bytes | None:
        """Lower-cased ``low`` with each misspelt key word replaced, None if it has none;
        ``words``: its words, when the caller has them (any split that keeps runs of ASCII
        letters whole: ``lexical.words_of``'s)."""
        fix = self._fix
        if not any(map(fix.__contains__, _WORD.findall(low) if words is None else words)):
            return None
        return _WORD.sub(lambda m: fix.get(m.group(), m.group()), low)
