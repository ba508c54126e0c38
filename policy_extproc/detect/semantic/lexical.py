"""A learned lexical score for prompt injection: logistic regression over a part's words and
word pairs, trained on public attack and benign corpora (``tools/train_injection_lexicon.py``).

What the heuristic signals and the exemplar similarity miss is mostly attacks in other
people's words: role plays, "you are now ..." personas, requests stacked onto a benign
question, phrasings no signal names. A linear model over the words that such attacks use, and
that ordinary requests do not, generalises to them better than a phrase list, at the cost of
a look-up per word and word pair.

The words of a part are the runs of ASCII letters, digits and ``_`` and of any character
outside ASCII in its lower-cased UTF-8 reading form (``_WORD``: cut at ASCII punctuation and
white space only, so a word of another script stays whole), and its pairs the pairs of
consecutive words; each occurrence is worth ``1 / sqrt(n)`` with ``n`` the number of words and
pairs (long and short texts are judged alike; counting distinct features instead, tried
first, scored a little worse out of fold and cost more). The shipped lexicon
(``data/injection_lexicon_v1.json``) holds the weight of every feature the training kept, the
bias, and the map of the model's logit ``z`` to the score the detector combines:
``sigmoid((z - offset) * scale)``, chosen out of fold on the training data.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping

import numpy as np

from .rowcache import entry, find_slots, free_position, table_mask

LEXICON = "injection_lexicon_v1.json"

_WORD = re.compile(rb"[\w\x80-\xff]+")
# A pair's key: its words' hashes combined (wrapping int64 arithmetic).
_MIX = np.int64(0x9E3779B97F4A7C15 - (1 << 64))


def words_of(low: bytes) -> list[bytes]:
    """The words of lower-cased UTF-8 ``low`` (a word never ends inside a character: it is
    cut at ASCII bytes only)."""
    return _WORD.findall(low)


def features(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The words and word pairs of ``text``, each as often as it occurs (the training's view:
    what ``Lexicon`` scores, as text)."""
    words = [w.decode() for w in words_of(text.lower().encode("utf-8", "replace"))]
    return words, list(itertools.pairwise(words))


def _pair_keys(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return first * _MIX + second


class Lexicon:
    """The shipped weights, found through a position table of the features' hashes (Python's
    ``hash`` of each word's bytes, computed when the table is built, in this process; the
    table of ``rowcache``), so that a part's words and pairs are looked up together by a few
    numpy gathers: no dictionary of 50,000 strings probed 1,400 times a part, which on a busy
    process missed the cache for most of its 0.7 ms. Two features whose hashes agree above
    ``rowcache.SLOT_BITS`` would share a weight; among the lexicon's features and a part's
    words that is as likely as none."""

    __slots__ = ("_bias", "_entries", "_mask", "_offset", "_scale", "_values", "version")

    def __init__(self, data: object) -> None:
        """``data``: the parsed lexicon file (``sources.models.read_lexicon``)."""
        if not isinstance(data, Mapping) or data.get("version") != 1:
            raise ValueError(f"{LEXICON}: not a version 1 lexicon")
        try:
            self._bias = float(data["bias"])
            self._offset = float(data["offset"])
            self._scale = float(data["scale"])
            weights = data["weights"]
            if not isinstance(weights, Mapping):
                raise TypeError("weights is not a mapping")
            values = [float(w) for w in weights.values()]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{LEXICON}: needs bias, offset, scale and weights ({exc})") from None
        firsts, seconds = [], []
        for key in weights:
            first, _, second = str(key).partition(" ")
            firsts.append(hash(first.encode()))
            seconds.append(hash(second.encode()) if second else None)
        keys = np.array(firsts, np.int64)
        pair = np.array([s is not None for s in seconds], bool)
        keys[pair] = _pair_keys(keys[pair], np.array([s for s in seconds if s is not None],
                                                     np.int64))  # fmt: skip
        self._mask = table_mask(max(len(keys), 1), LEXICON)
        self._entries = np.zeros(self._mask + 1, np.int64)
        self._values = np.zeros(len(keys) + 1, np.float64)  # slot 0: a word it does not know
        for slot, (k, w) in enumerate(zip(keys.tolist(), values, strict=True), 1):
            at = free_position(self._entries, k, self._mask)
            if at is not None:
                self._entries[at] = entry(k, slot)
                self._values[slot] = w
        self.version = f"v{data['version']}"

    def logit(self, low: bytes, words: list[bytes] | None = None) -> float:
        """The model's log-odds that the lower-cased UTF-8 text ``low`` is an attack;
        ``words``: its ``words_of``, when the caller has them."""
        words = words_of(low) if words is None else words
        n = len(words)
        if not n:
            return self._bias
        hashes = np.fromiter(map(hash, words), np.int64, n)
        wanted = np.concatenate((hashes, _pair_keys(hashes[:-1], hashes[1:])))
        total = float(self._values[find_slots(self._entries, wanted, self._mask)].sum())
        return self._bias + total / math.sqrt(2 * n - 1)

    def score(self, low: bytes, words: list[bytes] | None = None) -> float:
        """0..1, what the detector combines with its other scores."""
        z = (self.logit(low, words) - self._offset) * self._scale
        if z < -30.0:
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))
