"""Topics by meaning: a sentence fires a topic when it is close to the topic's examples and
clearly closer to them than to the topic's near neighbours.

Built once per rule (compile time): the examples of every topic and a shipped background of
generic questions and everyday requests (``topic_data.BACKGROUND``, generated from
``data/topic_background_v6.yaml``) are embedded, and each domain of the shipped topic library
(``topic_data.LIBRARY``: requests as people write them in fields that policies often name)
whose requests are near a topic's examples joins that topic as more prototypes, at a discount
(``_adopt``): a static embedding knows little of paraphrase, the library brings the field's
vocabulary. At request time each sentence of the (canonical) text gets, per topic, a raw score
that adds two margins:

- sentence margin: the topic's nearness (half the cosine to its nearest prototype, half the
  cosine to its centroid, the unit mean of its prototypes) minus the nearest neighbour (a
  background sentence, or the nearness to another topic of the rule);
- word margin: over the sentence's words, the best of (cosine to the nearest word of the
  topic's examples, minus cosine to the nearest word of the neighbours). The topic's own words
  are those of its examples that no neighbour uses and that are nearer its centroid than the
  background's, so "how", "the" or "invest" in an
  educational question count for nothing; "ETH" near "bitcoin", "detonates" near "explosives"
  count. A word's margins are computed once and remembered (bounded), so warm requests pay a
  dictionary look-up per word.

"how do index funds work in general" is near "how does the stock market work" (background) as
much as "should I buy this stock" (topic): both margins stay small. "dump my ETH or hold?" has
no educational neighbour and a word close to the topic's: it fires.

The raw score is mapped to 0..1 (``0.55 + raw``, clipped) so a policy's ``threshold`` reads as a
score; ``DEFAULT_THRESHOLD`` was chosen on the tune split (docs/semantic.md).

At request time everything is a few matrix products over all the sentences (or new words) of a
part at once: one against the prototypes and the background together, one against the topic
words and the background words together (``_product``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress

import numpy as np

from . import prior, topic_data
from .arrays import Groups, flat, others_max
from .embedder import (
    DEFAULT_MODEL,
    Embedder,
    Vectors,
    columns,
    embed_texts,
    words_flat,
    words_pieces,
)
from .encoder import MULTILINGUAL_MODEL
from .rowcache import RowCache
from .text import Memo, Sentences, Span, embed_sentences

DEFAULT_THRESHOLD = 0.47
# A topic rule's ``model``, by the name policies use: wordllama's static table (the default), or
# the sentence encoder of 16 languages (``encoder``), about a thousand times the CPU per sentence.
MODELS: Mapping[str, str] = {"static": DEFAULT_MODEL, "multilingual": MULTILINGUAL_MODEL}
BACKGROUND: tuple[str, ...] = topic_data.BACKGROUND
LIBRARY: dict[str, tuple[str, ...]] = topic_data.LIBRARY

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
_WORD_CACHE_LIMIT = 20_000  # words, and pieces, remembered per rule: 20,000 x topics floats each
# A sentence's raw score plus _OFFSET is its score (0..1): 0.55 puts the default threshold
# 0.47 where, on the tune split, as many negatives fire as at the previous version's (8 of 270:
# near misses, unrelated texts, everyday traffic and the injection data's benign texts) and
# recall is 0.83 against 0.77 (docs/semantic.md).
_OFFSET = 0.55
# A word counts only where it is nearer a topic word than _WORD_FLOOR and than every neighbour
# word: rare words (names, units) sit far from everything, and a margin over far neighbours
# alone says nothing. Chosen on the tune split.
_WORD_FLOOR = 0.3
# Half of 0.5, the first version's: on the tune split it fires fewer near misses at equal
# recall, with the library and without it.
_WORD_WEIGHT = 0.25
# The largest word margin a sentence can get (a cosine is at most 1; 1e-3 more for rounding).
_WORD_BOUND = _WORD_WEIGHT * (1.0 - _WORD_FLOOR) + 1e-3
# The topic library: a domain joins the topic its requests are nearest to on average (cosine to
# the topic's nearest example) when that average reaches _ADOPT; its requests then count as
# examples of the topic less _LIBRARY_DISCOUNT. Their words do not join the topic's own words:
# on the tune split that made near misses fire (10 of 92 at the default threshold, against 1).
# Chosen on the tune split, where recall and firing are flat around them (0.03 to 0.07, 0.3 to
# 0.4).
_ADOPT = 0.35
_LIBRARY_DISCOUNT = 0.05
# A topic's nearness: (1 - _CENTROID) x the cosine to its nearest prototype (less the library's
# discount) + _CENTROID x the cosine to the centroid of its prototypes (their unit mean). A
# paraphrase that shares no word with any one example often still points the way the field's
# requests point on average. Chosen on the tune split: recall at 3% of its negatives firing
# 0.79 with the nearest prototype alone, 0.80 to 0.87 with the centroid at 0.3 to 0.7 (with the
# topical own words and background v6).
_CENTROID = 0.5
# OpenBLAS runs a product on one thread only while rows x inner x columns stays under this
# (its GEMM_MULTITHREAD_THRESHOLD 4 x 65,536). Over it, the request thread hands the product
# to BLAS threads and waits for them: on a busy 2-core machine a 72 x 256 by 256 x 150 product
# took 300 to 900 us of wall time that way, against 60 us as products of a few rows each. The
# sidecar's parallelism is its requests, not one product's rows.
_SINGLE_THREAD_WORK = 4 * 65_536


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One semantic topic of a rule: its name, examples and threshold (None: the default)."""

    name: str
    examples: tuple[str, ...]
    threshold: float | None = None


def _words(texts: Sequence[str]) -> list[str]:
    return sorted({w.lower() for t in texts for w in _WORD.findall(t)})


def _adopt(embedder: Embedder, topics: Sequence[TopicSpec],
           library: Mapping[str, Sequence[str]]) -> list[list[str]]:  # fmt: skip
    """Per topic, the library requests it adopts: those of each domain whose requests are, on
    average, nearest to that topic's examples, by at least ``_ADOPT``."""
    out: list[list[str]] = [[] for _ in topics]
    if not topics or not library:
        return out
    examples = [columns(embed_texts(embedder, t.examples)) for t in topics]
    for requests in library.values():
        vecs = embed_texts(embedder, list(requests))
        affinity = [float(_product(vecs, ex).max(axis=1).mean()) if ex.shape[1] else -1.0
                    for ex in examples]  # fmt: skip
        best = int(np.argmax(affinity))
        if affinity[best] >= _ADOPT:
            out[best].extend(requests)
    return out


def _centroids(rows: Vectors, owners: np.ndarray, n: int) -> Vectors:
    """Per topic 0..n-1, the unit mean of its prototypes' rows (a zero row without any)."""
    out = np.zeros((n, rows.shape[1]), np.float32)
    np.add.at(out, owners, rows)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.asarray(out / np.where(norms > 0, norms, 1.0), np.float32)


def _topical(embedder: Embedder, own: list[list[str]], centroids: Vectors,
             background: Vectors) -> list[list[str]]:  # fmt: skip
    """Per topic, its words nearer its centroid than the background's centroid."""
    out = []
    for k, ws in enumerate(own):
        vecs = embed_texts(embedder, ws)
        keep = vecs @ centroids[k] > vecs @ background
        out.append([w for w, ok in zip(ws, keep, strict=True) if ok])
    return out


def _product(rows: Vectors, cols: Vectors, one_thread: bool = False) -> Vectors:
    """``rows @ cols``, in blocks of rows small enough for one BLAS thread each, unless BLAS
    runs on ``one_thread`` (then one call: a 72-row product in blocks of 3 rows took about
    2.5 times as long as one call)."""
    n, inner = rows.shape
    width = cols.shape[1]
    step = max(1, _SINGLE_THREAD_WORK // max(1, inner * width))
    if n <= step or one_thread:
        return np.asarray(rows @ cols, np.float32)
    out = np.empty((n, width), np.float32)
    for i in range(0, n, step):
        np.matmul(rows[i : i + step], cols, out=out[i : i + step])
    return out


def _lower(text: str) -> str:
    """Lower case with the offsets of ``text`` (a character whose lower case is longer, such
    as U+0130, is kept as it is)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


class TopicClassifier:
    """The semantic topics of one rule, embedded once; ``scores`` is pure at request time."""

    __slots__ = ("_cols", "_emb", "_ex_groups", "_ex_offset", "_memo", "_n_ex", "_n_tw",
                 "_one_thread", "_piece_rows", "_tw_groups", "_wcols", "_word_rows", "names",
                 "thresholds")  # fmt: skip

    def __init__(self, embedder: Embedder, topics: Sequence[TopicSpec],
                 background: Sequence[str] = BACKGROUND,
                 library: Mapping[str, Sequence[str]] = LIBRARY,
                 one_blas_thread: bool = False) -> None:  # fmt: skip
        """``one_blas_thread``: the process's BLAS runs on one thread (told by the edge,
        ``model.Models.one_blas_thread``), so a request's products need not be cut in blocks
        (``_product``)."""
        self._emb = embedder
        self._one_thread = one_blas_thread
        self.names = tuple(t.name for t in topics)
        self.thresholds = tuple(
            t.threshold if t.threshold is not None else DEFAULT_THRESHOLD for t in topics
        )
        adopted = _adopt(embedder, topics, library)
        protos = [[*t.examples, *adopted[k]] for k, t in enumerate(topics)]
        self._n_ex = sum(map(len, protos))
        owners = np.asarray([k for k, ps in enumerate(protos) for _ in ps], int)
        self._ex_groups = Groups(owners, len(topics))
        self._ex_offset = np.asarray([0.0 if j < len(t.examples) else -_LIBRARY_DISCOUNT
                                      for t, ps in zip(topics, protos, strict=True)
                                      for j in range(len(ps))], np.float32)  # fmt: skip
        # One matrix of columns (a contiguous transpose: see embedder.columns): the examples
        # and adopted library requests, each topic's centroid, then the background, so a
        # request pays one product.
        every = [p for ps in protos for p in ps]
        rows = embed_texts(embedder, [*every, *background])
        centroids = _centroids(rows[: self._n_ex], owners, len(topics))
        self._cols = columns(np.concatenate([rows[: self._n_ex], centroids,
                                             rows[self._n_ex :]]))  # fmt: skip
        # A topic's own words: those of its examples that the background does not use, and
        # that point the topic's way ("instructions", in "instructions for making explosives",
        # does not: it is nearer the background's centroid than the topic's).
        bg_words = set(_words(background))
        own = [[w for w in _words(t.examples) if w not in bg_words and w not in _COMMON
                and len(w) > 2] for t in topics]  # fmt: skip
        own = _topical(embedder, own, centroids, _centroids(
            rows[self._n_ex :], np.zeros(len(background), int), 1)[0])  # fmt: skip
        words = [w for ws in own for w in ws]
        self._n_tw = len(words)
        self._tw_groups = Groups(np.asarray([i for i, ws in enumerate(own) for _ in ws], int),
                                  len(topics))  # fmt: skip
        self._wcols = columns(embed_texts(embedder, [*words, *sorted(bg_words)]))
        # word -> its margins per topic; white-space piece -> the best row of its words.
        self._word_rows = RowCache(_WORD_CACHE_LIMIT, len(self.names))
        self._piece_rows = RowCache(_WORD_CACHE_LIMIT, len(self.names))
        self._memo: Memo[list[tuple[int, float, Span]]] = Memo()

    def _word_margins(self, words: list[str]) -> Vectors:
        """Per word and topic: nearest own word minus nearest neighbour word."""
        sims = _product(embed_texts(self._emb, words), self._wcols, self._one_thread)
        mine = self._tw_groups.max(sims[:, : self._n_tw])
        neighbour = others_max(mine)
        if sims.shape[1] > self._n_tw:
            np.maximum(neighbour, sims[:, self._n_tw :].max(axis=1)[:, None], out=neighbour)
        np.maximum(neighbour, _WORD_FLOOR, out=neighbour)
        return np.asarray(np.maximum(mine - neighbour, 0.0) * _WORD_WEIGHT, np.float32)

    def _word_scores(self, sentences: list[list[str]]) -> Vectors:
        """Per sentence and topic, the best word margin: one gather and one segmented max."""
        return self._best(*flat(sentences), self._word_rows, self._word_margins)

    def _piece_margins(self, pieces: list[str]) -> Vectors:
        """Per white-space piece and topic, the best margin of its words (0 without words).
        The words are gathered in one list: a list per piece kept at once (one per new piece)
        made the cyclic GC run a full collection every few requests (20 ms)."""
        findall, words, counts = _WORD.findall, [], []
        for piece in pieces:
            found = findall(piece)
            words += found
            counts.append(len(found))
        return self._best(words, np.asarray(counts, np.int64), self._word_rows,
                          self._word_margins)  # fmt: skip

    def _best(self, flat: list[str], counts: np.ndarray, rows: RowCache,
              margins: Callable[[list[str]], Vectors]) -> Vectors:  # fmt: skip
        """Per sentence and topic, the max of its units' rows (words or pieces: ``flat``,
        ``counts[i]`` of them for sentence ``i``), a unit's row computed once by ``margins``
        and remembered in ``rows``: one gather, one segmented max."""
        out = np.zeros((len(counts), len(self.names)), np.float32)
        if not flat:
            return out
        table = rows.gather(flat, margins)
        starts = np.cumsum(counts) - counts
        has = counts > 0
        out[has] = np.maximum.reduceat(table, starts[has], axis=0)
        return out

    def _sentence_words(self, sentences: Sentences, low: str,
                        need: np.ndarray | None = None) -> Vectors:  # fmt: skip
        """Per sentence and topic, the best word margin, from the white-space pieces the
        embedding cut (a piece's best is remembered: most pieces are a word, with or without
        its punctuation), or from the words of ``low`` (``_lower(sentences.text)``). The max
        over the pieces' maxes is the max over the words (margins are >= 0): the same rows.
        ``need``: a boolean per sentence; the rows of the others are left 0 (not read)."""
        spans = sentences.spans
        if need is None:
            got = words_flat(sentences.text, spans)
            if got is not None:
                return self._best(*got, self._piece_rows, self._piece_margins)
            return self._word_scores([_WORD.findall(low, s, e) for s, e in spans])
        out = np.zeros((len(spans), len(self.names)), np.float32)
        at = np.flatnonzero(need)
        per = words_pieces(sentences.text, spans)
        if per is not None:
            out[at] = self._best(*flat(list(compress(per, need))), self._piece_rows,
                                 self._piece_margins)  # fmt: skip
        else:
            out[at] = self._word_scores([_WORD.findall(low, *spans[i]) for i in at.tolist()])
        return out

    def hits_in(self, text: str,
                sentences: Callable[[], Sentences]) -> list[tuple[int, float, Span]]:  # fmt: skip
        """``hits`` of ``text``, remembered by the text: ``sentences`` (its sentences, embedded
        with this classifier's model) is called only for a text not judged before."""
        found = self._memo.get(text)
        if found is None:
            found = self._memo.put(text, self.hits(sentences()))
        return found

    @property
    def embedder(self) -> Embedder:
        """The model the examples were embedded with; the sentences judged must be too."""
        return self._emb

    def hits(self, sentences: Sentences) -> list[tuple[int, float, Span]]:
        """(topic index, score, sentence span) of every sentence that reaches a topic's
        threshold."""
        if not self.names or not sentences.spans:
            return []
        score = self.score_matrix(sentences, min(self.thresholds))
        thr = np.asarray(self.thresholds, np.float32)
        spans = sentences.spans
        return [(int(k), round(float(score[i, k]), 3), spans[i])
                for i, k in zip(*np.nonzero(score >= thr), strict=True)]  # fmt: skip

    def score_matrix(self, sentences: Sentences, floor: float = 0.0) -> Vectors:
        """Per sentence and topic, the score (0..1). The generic-question prior is tested only
        on sentences that reach ``floor`` somewhere (it only lowers a score), and the words of
        a sentence are read only when it could reach ``floor`` with them: a score under
        ``floor`` may be left other than its final value, but which scores reach it is exact."""
        vecs, spans = sentences.vectors, sentences.spans
        n = len(self.names)
        if not n or not spans:
            return np.zeros((len(spans), n), np.float32)
        sims = _product(vecs, self._cols, self._one_thread)
        ne = self._n_ex
        proto = sims[:, :ne]
        np.add(proto, self._ex_offset, out=proto)  # the library's prototypes count less
        mine = self._ex_groups.max(proto)
        mine *= 1.0 - _CENTROID
        mine += _CENTROID * sims[:, ne : ne + n]
        neighbour = others_max(mine)
        if sims.shape[1] > ne + n:
            np.maximum(neighbour, sims[:, ne + n :].max(axis=1)[:, None], out=neighbour)
        low = _lower(sentences.text)
        score = _OFFSET + (mine - neighbour)
        # A sentence whose best topic cannot reach ``floor`` even with the largest word margin
        # there can be (``_WORD_BOUND``) is not read for words: its score stays under ``floor``.
        need = None
        if floor > 0.0:
            need = score.max(axis=1) + _WORD_BOUND >= floor
            if need.all():
                need = None
        score += self._sentence_words(sentences, low, need)
        for i in np.nonzero(score.max(axis=1) >= floor)[0]:
            if prior.generic(low, *spans[i]):
                score[i] -= prior.PENALTY
        return np.clip(score, 0.0, 1.0, out=score)

    def scores(self, text: str) -> dict[str, float]:
        """Per topic, the best score (0..1) of a sentence of ``text``; topics at 0 left out."""
        sentences = embed_sentences(self._emb, text)
        if not self.names or not sentences.spans:
            return {}
        best = self.score_matrix(sentences).max(axis=0)
        return {name: round(float(s), 3) for name, s in zip(self.names, best, strict=True)
                if s > 0}  # fmt: skip

    def matches(self, text: str) -> list[tuple[str, float]]:
        """The topics that fire on ``text`` with their best scores, best first."""
        best: dict[str, float] = {}
        for k, s, _ in self.hits(embed_sentences(self._emb, text)):
            best[self.names[k]] = max(s, best.get(self.names[k], 0.0))
        return sorted(best.items(), key=lambda h: -h[1])
