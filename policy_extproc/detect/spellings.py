"""The spellings a policy is compiled to: every form a literal or a regex character can take
in canonical text, where the fold is decided per word (``words.py``) and a policy cannot know
the word around its letters, nor the case the text writes them in."""

# ruff: noqa: RUF002 (look-alike letters are what this module is about)

from __future__ import annotations

import unicodedata
from itertools import product

from .characters import FOLD, removed
from .words import EXACT, EXACT_SPLIT, INFO, LOOK_ALIKES, cases, fold_gap, fold_word, kept


def spellings(ch: str) -> list[str]:
    """Every canonical spelling of ``ch`` (outside ASCII) in some word: as ``fold_char`` folds it,
    as a kept word keeps it (NFKC), as the look-alike another script reads it as."""
    if removed(ch) or not EXACT.fullmatch(ch):
        return [FOLD[ch]]  # removed, or between words: folded alike everywhere
    out = dict.fromkeys((FOLD[ch], unicodedata.normalize("NFKC", ch)))
    s, _, reads, _ = INFO[ch]
    if s is not None and reads:
        category = unicodedata.category(ch)
        for (reading, cat, _), look in LOOK_ALIKES.items():
            if reading == FOLD[ch] and cat == category:
                out[look] = None
    return list(out)


_MAX_FORMS = 16


def _case_forms(word: str) -> list[str]:
    """The spellings a word outside ASCII takes in its other casings, caselessly distinct: kept
    in each of its scripts but Latin (``как``, ``Σ``), and folded character by character with
    each letter in each of its cases (``КАК`` is ``KAK``; Greek ``ν`` is ``v``, ``Ν`` is ``N``)."""
    forms: dict[str, None] = {}
    for s in dict.fromkeys(INFO[ch][0] for ch in word):
        if s is not None and s != "LATIN":
            forms["".join(kept(word, s))] = None
    choices: list[list[str]] = []
    for ch in word:
        readings: dict[str, str] = {}
        for c in sorted(cases(ch)) if INFO[ch][0] is not None else [ch]:
            readings.setdefault(FOLD[c].lower(), FOLD[c])
        choices.append(list(readings.values()))
    for combo, _ in zip(product(*choices), range(_MAX_FORMS), strict=False):
        forms["".join(combo)] = None
    return list(forms)


def literal_forms(literal: str, whole_words: bool, caseless: bool) -> list[str]:
    """The spellings of a policy literal in canonical text, its canonical form first, at most
    16. Caseless: a word outside ASCII also in the spellings of its other casings
    (``_case_forms``: a keyword ``как`` meets ``КАК``, which is ``KAK``). Not whole words: the
    first and last words may be parts of longer words, whose fold decides theirs, so they
    also take every fold a word can (character by character, kept in one of their scripts:
    ``ток`` alone is ``tok``, in ``поток`` it stays)."""
    parts = EXACT_SPLIT.split(literal)
    choices: list[list[str]] = [[fold_gap(p)] for p in parts]
    last = len(parts) - 2
    for i in range(1, len(parts), 2):
        word = parts[i]
        forms = dict.fromkeys([fold_word(word)])
        if caseless and not word.isascii():
            forms.update(dict.fromkeys(_case_forms(word)))
        if not whole_words and ((i == 1 and not parts[0]) or (i == last and not parts[-1])):
            forms["".join(map(FOLD.__getitem__, word))] = None
            for c in word:
                s = INFO[c][0]
                if s is not None and s != "LATIN":
                    forms["".join(kept(word, s))] = None
        choices[i] = list(forms)
    out: dict[str, None] = {}
    for combo in product(*choices):
        out["".join(combo)] = None
        if len(out) >= _MAX_FORMS:
            break
    return list(out)
