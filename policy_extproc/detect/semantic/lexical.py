"""A learned lexical score for prompt injection: logistic regression over a part's words and
word pairs, trained on public attack and benign corpora (``tools/train_injection_lexicon.py``).

What the heuristic signals and the exemplar similarity miss is mostly attacks in other
people's words: role plays, "you are now ..." personas, requests stacked onto a benign
question, phrasings no signal names. A linear model over the words that such attacks use, and
that ordinary requests do not, generalises to them better than a phrase list, at the cost of
a look-up per word and word pair.

The features of a part are the lower-cased ``\\w+`` words of its reading form and the pairs of
consecutive words, each occurrence worth ``1 / sqrt(n)`` with ``n`` the number of words and
pairs (long and short texts are judged alike; counting distinct features instead, tried first,
scored a little worse out of fold and cost more). The shipped lexicon
(``data/injection_lexicon_v1.json``) holds the weight of every feature the training kept, the
bias, and the map of the model's logit ``z`` to the score the detector combines:
``sigmoid((z - offset) * scale)``, chosen out of fold on the training data.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping

LEXICON = "injection_lexicon_v1.json"

_WORD = re.compile(r"\w+")


def features(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The words and word pairs of ``text`` (lower-cased), each as often as it occurs."""
    words = _WORD.findall(text.lower())
    return words, list(itertools.pairwise(words))


class Lexicon:
    """The shipped weights; ``score(text)`` is pure: one dictionary look-up per word and per
    pair of the text, in C (``map``), about 0.25 ms for 4 KB, half of it finding the words
    (a numpy gather and ``searchsorted`` of integer pair keys was no faster)."""

    __slots__ = ("_bias", "_offset", "_pairs", "_scale", "_words", "version")

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
            words: dict[str, float] = {}
            pairs: dict[tuple[str, str], float] = {}
            for key, w in weights.items():
                first, _, second = str(key).partition(" ")
                if second:
                    pairs[(first, second)] = float(w)
                else:
                    words[first] = float(w)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{LEXICON}: needs bias, offset, scale and weights ({exc})") from None
        self._words, self._pairs = words, pairs
        self.version = f"v{data['version']}"

    def logit(self, text: str) -> float:
        """The model's log-odds that ``text`` is an attack."""
        words = _WORD.findall(text.lower())
        if not words:
            return self._bias
        zero = itertools.repeat(0.0)
        total = sum(map(self._words.get, words, zero))
        total += sum(map(self._pairs.get, itertools.pairwise(words), zero))
        return self._bias + total / math.sqrt(2 * len(words) - 1)

    def score(self, text: str) -> float:
        """0..1, what the detector combines with its other scores."""
        z = (self.logit(text) - self._offset) * self._scale
        if z < -30.0:
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))
