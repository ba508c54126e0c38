"""Topics by meaning: a sentence fires a topic when it is close to the topic's examples and
clearly closer to them than to the topic's near neighbours.

Built once per rule (compile time): the examples of every topic and a shipped background of
generic questions from many fields (``data/topic_background_v2.yaml``) are embedded. At request
time each sentence of the (canonical) text gets, per topic, a raw score that adds two margins:

- sentence margin: cosine to the nearest example of the topic, minus cosine to the nearest
  neighbour (a background sentence or an example of another topic of the rule);
- word margin: over the sentence's words, the best of (cosine to the nearest word of the
  topic's examples, minus cosine to the nearest word of the neighbours). The topic's own words
  are those of its examples that no neighbour uses, so "how", "the" or "invest" in an
  educational question count for nothing; "ETH" near "bitcoin", "detonates" near "explosives"
  count. A word's margins are computed once and remembered (bounded), so warm requests pay a
  dictionary look-up per word.

"how do index funds work in general" is near "how does the stock market work" (background) as
much as "should I buy this stock" (topic): both margins stay small. "dump my ETH or hold?" has
no educational neighbour and a word close to the topic's: it fires.

The raw score is mapped to 0..1 (``0.5 + raw``, clipped) so a policy's ``threshold`` reads as a
score; ``DEFAULT_THRESHOLD`` was chosen on the tune split (docs/semantic.md).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import repeat

import numpy as np
import yaml

from .embedder import Embedder, Vectors, columns, embed_texts
from .text import Memo, Sentences, Span, embed_sentences

DEFAULT_THRESHOLD = 0.47
BACKGROUND = "topic_background_v2.yaml"

_WORD = re.compile(r"\w+")
# Words too common to say what a topic is about, whatever the examples: they never count as a
# topic's own words (the background removes more: every word it uses).
_COMMON = frozenset(
    """
a about after again all also am an and any are as at be because been before being but by can
could did do does doing done down each even every few for from get gets getting give go going
good got had has have having he her here him his how i if in into is it its just know let like
make many me more most much must my need new no not now of off on once one only or other our
out over please put really right same say see she should so some still such take tell than
that the their them then there these they thing things this those through time to too try
under up us use very want was way we well were what when where which while who why will with
would yes you your
""".split()  # noqa: SIM905 (a word list reads better as text)
)
_WORD_CACHE_LIMIT = 20_000  # words remembered per rule: 20,000 x topics floats
_OFFSET = 0.5
# A word counts only where it is nearer a topic word than _WORD_FLOOR and than every neighbour
# word: rare words (names, units) sit far from everything, and a margin over far neighbours
# alone says nothing. Chosen on the tune split.
_WORD_FLOOR = 0.3
# The generic-question prior: a sentence that asks how something works in general, what it
# is, its history or definition, and says nothing of the asker ("I", "my", "me"), is about the
# field, not a request in it; its score is lowered by _GENERIC.
_GENERIC = 0.3
_EDUCATIONAL = re.compile(
    r"^\W*(how (do|does|did|is|are|was|were|can) (?!i\b|we\b)\w+|what (is|are|was|were|does|do) "
    r"(?!i\b|my\b)|explain\b|why (do|does|did|is|are|was|were) (?!i\b|my\b)|when (was|were|did) "
    r"|who (invented|discovered|founded|wrote)|describe\b|define\b)|\bin general\b|\bhistory of\b"
    r"|\bdifference between\b"
)
_PERSONAL = re.compile(r"\b(i|i'm|i've|my|me|mine|myself|should i)\b")
_WORD_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One semantic topic of a rule: its name, examples and threshold (None: the default)."""

    name: str
    examples: tuple[str, ...]
    threshold: float | None = None


def _background() -> list[str]:
    text = resources.files(__package__).joinpath("data", BACKGROUND).read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or data.get("version") != 2:
        raise ValueError(f"{BACKGROUND}: not a version 2 background set")
    return [str(s) for s in data["background"]]


def _words(texts: Sequence[str]) -> list[str]:
    return sorted({w.lower() for t in texts for w in _WORD.findall(t)})


def _group_max(sims: Vectors, owners: np.ndarray, n: int) -> Vectors:
    """Per row, the max over the columns of each owner 0..n-1 (columns sorted by owner)."""
    starts = np.searchsorted(owners, np.arange(n))
    return np.maximum.reduceat(sims, starts, axis=1)


def _others_max(per_topic: Vectors) -> Vectors:
    """Per row and topic, the max over the other topics (the top one's own gets the second)."""
    n = per_topic.shape[1]
    if n == 1:
        return np.full_like(per_topic, -1.0)
    order = np.argsort(per_topic, axis=1)
    top, second = order[:, -1], order[:, -2]
    rows = np.arange(len(per_topic))
    out = np.repeat(per_topic[rows, top][:, None], n, axis=1)
    out[rows, top] = per_topic[rows, second]
    return out


def _generic(low: str, start: int, end: int) -> bool:
    """Whether ``low[start:end]`` (lower case) is a general question, not a personal one."""
    sentence = low[start:end]
    return _EDUCATIONAL.search(sentence) is not None and _PERSONAL.search(sentence) is None


class TopicClassifier:
    """The semantic topics of one rule, embedded once; ``scores`` is pure at request time."""

    __slots__ = ("_bg", "_bg_words", "_cache", "_emb", "_ex", "_ex_owner", "_lock", "_memo",
                 "_rows", "_tw", "_tw_owner", "names", "thresholds")  # fmt: skip

    def __init__(self, embedder: Embedder, topics: Sequence[TopicSpec]) -> None:
        self._emb = embedder
        self.names = tuple(t.name for t in topics)
        self.thresholds = tuple(
            t.threshold if t.threshold is not None else DEFAULT_THRESHOLD for t in topics
        )
        background = _background()
        # Matrices kept as columns (a contiguous transpose): see embedder.columns.
        self._bg = columns(embed_texts(embedder, background))
        examples = [e for t in topics for e in t.examples]
        self._ex = columns(embed_texts(embedder, examples))
        self._ex_owner = np.asarray([i for i, t in enumerate(topics) for _ in t.examples])
        # A topic's own words: those of its examples that the background does not use.
        bg_words = set(_words(background))
        own = [[w for w in _words(t.examples) if w not in bg_words and w not in _COMMON
                and len(w) > 2] for t in topics]  # fmt: skip
        words = [w for ws in own for w in ws]
        self._tw = columns(embed_texts(embedder, words))
        self._tw_owner = np.asarray([i for i, ws in enumerate(own) for _ in ws])
        self._bg_words = columns(embed_texts(embedder, sorted(bg_words)))
        self._cache: dict[str, int] = {}  # word -> row of ``_rows`` (its margins per topic)
        self._rows = np.zeros((256, len(self.names)), np.float32)
        self._lock = threading.Lock()
        self._memo: Memo[list[tuple[int, float, Span]]] = Memo()

    def _word_margins(self, words: list[str]) -> Vectors:
        """Per word and topic: nearest own word minus nearest neighbour word."""
        vecs = embed_texts(self._emb, words)
        n = len(self.names)
        if len(self._tw_owner):
            sims = vecs @ self._tw
            mine = np.full((len(words), n), -1.0, np.float32)
            present = np.unique(self._tw_owner)
            starts = np.searchsorted(self._tw_owner, present)
            mine[:, present] = np.maximum.reduceat(sims, starts, axis=1)
        else:
            mine = np.full((len(words), n), -1.0, np.float32)
        bg = (vecs @ self._bg_words).max(axis=1) if self._bg_words.shape[1] else -1.0
        neighbour = np.maximum(_others_max(mine), np.asarray(bg)[..., None])
        neighbour = np.maximum(neighbour, _WORD_FLOOR)
        return np.asarray(np.maximum(mine - neighbour, 0.0) * _WORD_WEIGHT, np.float32)

    def _word_scores(self, sentences: list[list[str]]) -> Vectors:
        """Per sentence and topic, the best word margin: one gather and one segmented max."""
        out = np.zeros((len(sentences), len(self.names)), np.float32)
        flat = [w for ws in sentences for w in ws]
        if not flat:
            return out
        cache = self._cache
        rows = list(map(cache.get, flat, repeat(-1)))
        extra: dict[str, Vectors] = {}
        if -1 in rows:
            new = sorted({w for w, r in zip(flat, rows, strict=True) if r < 0})
            extra = dict(zip(new, self._word_margins(new), strict=True))
            with self._lock:
                for w, margins in extra.items():
                    if w in cache or len(cache) >= _WORD_CACHE_LIMIT:
                        continue
                    slot = len(cache) + 1  # row 0 stays zeros
                    if slot >= len(self._rows):
                        self._rows = np.vstack([self._rows, np.zeros_like(self._rows)])
                    self._rows[slot] = margins
                    cache[w] = slot
            rows = list(map(cache.get, flat, repeat(-1)))
        table = self._rows[np.asarray(rows, np.int64)]
        if extra:  # words past the cache limit
            for n, (w, r) in enumerate(zip(flat, rows, strict=True)):
                if r < 0:
                    table[n] = extra[w]
        counts = np.fromiter((len(ws) for ws in sentences), np.int64, len(sentences))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        has = counts > 0
        out[has] = np.maximum.reduceat(table, starts[has], axis=0)
        return out

    def hits_in(self, text: str,
                sentences: Callable[[], Sentences]) -> list[tuple[int, float, Span]]:  # fmt: skip
        """``hits`` of ``text``, remembered by the text: ``sentences`` (its sentences, embedded
        with this classifier's model) is called only for a text not judged before."""
        found = self._memo.get(text)
        if found is None:
            found = self._memo.put(text, self.hits(sentences()))
        return found

    def hits(self, sentences: Sentences) -> list[tuple[int, float, Span]]:
        """(topic index, score, sentence span) of every sentence that reaches a topic's
        threshold, and of the best sentence per topic with a score above 0 (``score_all``)."""
        return self._judge(sentences, every=False)

    def _judge(self, sentences: Sentences, every: bool) -> list[tuple[int, float, Span]]:
        if not self.names or not sentences.spans:
            return []
        vecs, spans, text = sentences.vectors, sentences.spans, sentences.text
        n = len(self.names)
        mine = _group_max(vecs @ self._ex, self._ex_owner, n)
        neighbour = np.maximum(_others_max(mine), (vecs @ self._bg).max(axis=1)[:, None])
        low = text.lower()
        if len(low) != len(text):  # a character whose lower case is longer: per word, then
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        words = [_WORD.findall(low, s, e) for s, e in spans]
        score = _OFFSET + (mine - neighbour) + self._word_scores(words)
        # The prior only lowers a score: test it on the sentences that could fire at all.
        floor = 0.0 if every else min(self.thresholds)
        for i in np.nonzero(score.max(axis=1) >= floor)[0]:
            if _generic(low, *spans[i]):
                score[i] -= _GENERIC
        score = np.clip(score, 0.0, 1.0)
        out: list[tuple[int, float, Span]] = []
        if every:
            best = score.argmax(axis=0)
            for k in range(n):
                if score[best[k], k] > 0:
                    out.append((k, round(float(score[best[k], k]), 3), spans[best[k]]))
            return out
        thr = np.asarray(self.thresholds, np.float32)
        for i, k in zip(*np.nonzero(score >= thr), strict=True):
            out.append((int(k), round(float(score[i, k]), 3), spans[i]))
        return out

    def scores(self, text: str) -> dict[str, float]:
        """Per topic, the best score (0..1) of a sentence of ``text``; topics at 0 left out."""
        found = self._judge(embed_sentences(self._emb, text), every=True)
        return {self.names[k]: s for k, s, _ in found}

    def matches(self, text: str) -> list[tuple[str, float]]:
        """The topics that fire on ``text`` with their best scores, best first."""
        best: dict[str, float] = {}
        for k, s, _ in self.hits(embed_sentences(self._emb, text)):
            best[self.names[k]] = max(s, best.get(self.names[k], 0.0))
        return sorted(best.items(), key=lambda h: -h[1])
