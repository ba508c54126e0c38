"""Sentence vectors from a static embedding model shipped inside a wheel, or a tiny test one.

A static model is a table of one vector per token: a text's vector is the mean of its tokens'
rows, scaled to unit length, so cosine similarity is a dot product. There is no network and no
neural network at request time: a dictionary look-up per white-space piece, one gather, one
segmented sum (the tokenizer runs once per piece never seen before).

The shipped models are read by ``sources.models`` (the edge) and handed in at compile time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .rowcache import RowCache

Vectors = npt.NDArray[np.float32]
Span = tuple[int, int]

DEFAULT_MODEL = "wordllama-l2-256"


class EmbedderError(RuntimeError):
    """The model's package is missing or its files are not where a wheel puts them."""


class Embedder(Protocol):
    """What the classifiers need from a model: unit vectors, one per span of a text."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed_spans(self, text: str, spans: Sequence[Span]) -> Vectors:
        """One unit row per (start, end) character span of ``text``; a span without tokens
        gets a zero row (similar to nothing)."""
        ...


def embed_texts(embedder: Embedder, texts: Sequence[str]) -> Vectors:
    """Unit rows for whole texts (compile time: examples, exemplars)."""
    if not texts:
        return np.zeros((0, embedder.dim), np.float32)
    joined = "\n".join(texts)
    spans, pos = [], 0
    for t in texts:
        spans.append((pos, pos + len(t)))
        pos += len(t) + 1
    return embedder.embed_spans(joined, spans)


def columns(rows: Vectors) -> Vectors:
    """``rows`` transposed into a contiguous array, for ``vectors @ columns(rows)``.

    Compile-time matrices are stored this way: the product with a transposed view
    (``vectors @ rows.T``) goes to a BLAS call that OpenBLAS may split over its threads, and on
    a busy 2-core machine that put tens of milliseconds on the p99 of a 40 x 256 by 256 x 68
    product; the contiguous operand does not (13 us p50, 43 us p99 there).
    """
    return np.ascontiguousarray(rows.T)


def _normalise(rows: Vectors) -> Vectors:
    """``rows`` scaled to unit length in place (a zero row stays zero): the squared norms by
    one ``einsum`` (13 us for 80 x 256 against 20 us by ``np.linalg.norm``)."""
    norms = np.einsum("ij,ij->i", rows, rows)
    np.sqrt(norms, out=norms)
    np.maximum(norms, 1e-12, out=norms)
    rows /= norms[:, None]
    return rows


class _Segmenter:
    """Token rows -> one mean row per span, from the tokens' character offsets."""

    @staticmethod
    def pool(rows: Vectors, starts: npt.NDArray[np.int64], spans: Sequence[Span]) -> Vectors:
        """The rows starting inside each span, summed and scaled to unit length: the unit
        mean of the tokens, whose divisor the scaling makes moot (a row may sum tokens).
        ``rows`` has one row more than ``starts``, a zero row, last."""
        out = np.zeros((len(spans), rows.shape[1] if rows.ndim == 2 else 0), np.float32)
        if not len(starts) or not spans:
            return out
        bounds = np.asarray(spans, np.int64)
        lo = np.searchsorted(starts, bounds[:, 0], side="left")
        hi = np.searchsorted(starts, bounds[:, 1], side="left")
        has = hi > lo
        if has.any():
            # reduceat over (lo, hi) pairs: the even results are the spans' sums (the odd ones,
            # and those of empty spans, are not sums and are dropped). cumsum along the rows
            # is about 20 times slower here.
            # ``rows`` ends with a zero row, so ``hi`` may point one past the last token.
            pairs = np.column_stack([lo, np.minimum(hi, len(rows) - 1)]).ravel()
            out[has] = np.add.reduceat(rows, pairs, axis=0)[0::2][has]
        return _normalise(out)


_CHUNK = re.compile(r"\S{1,48}")  # white-space separated pieces, long runs cut (CJK, base64)
_RUN = 48
_CACHE_LIMIT = 50_000  # pieces remembered (50 MB at 256 dims); past it computed, not kept


def pieces_of(text: str, spans: Sequence[Span]) -> list[list[str]]:
    """Each span's white-space separated pieces, runs longer than 48 characters cut into
    48-character pieces (what ``_CHUNK.findall`` gives, which is the reference).

    ``str.split`` splits on the same white space as ``\\s`` (``Py_UNICODE_ISSPACE``, checked
    over every code point by the tests) and is about five times faster than ``findall`` per
    span; a span holding a longer run is cut by ``findall``."""
    return _cut(text, spans)[0]


def _cut(text: str, spans: Sequence[Span]) -> tuple[list[list[str]], bool]:
    """(``pieces_of``, whether a run longer than 48 characters was cut)."""
    per = [text[s:e].split() for s, e in spans]
    if max(map(len, chain.from_iterable(per)), default=0) <= _RUN:
        return per, False
    findall = _CHUNK.findall
    return [
        findall(text, s, e) if any(len(p) > _RUN for p in ps) else ps
        for (s, e), ps in zip(spans, per, strict=True)
    ], True


def text_pieces(text: str, spans: Sequence[Span]) -> tuple[bool, list[list[str]]]:
    """(lower-cased, ``pieces_of``) of ``text``: lower-cased where that keeps every offset
    (examples and prompts differ in case more than in meaning: "Dump my ETH" and "dump my eth"
    should be one point). Kept in the spans when they have room for it (``text.Spans``): the
    two models embed the same part with the same spans, one after the other."""
    kept = _kept(text, spans)
    return kept[1], kept[2]


def flat_pieces(text: str, spans: Sequence[Span]) -> tuple[list[str], npt.NDArray[np.int64]]:
    """(every piece of ``text_pieces`` in order, how many per span): what a gather reads, made
    once per spans (both models and the topics' word pass read it)."""
    kept = _kept(text, spans)
    return kept[4], kept[5]


_Kept = tuple[str, bool, list[list[str]], bool, list[str], npt.NDArray[np.int64]]


def _kept(text: str, spans: Sequence[Span]) -> _Kept:
    """(text, lowered, pieces per span, whether a run was cut, flat pieces, counts), kept in
    the spans when they have room (and for this very text)."""
    kept: _Kept | None = getattr(spans, "pieces", None)
    if kept is not None and kept[0] is text:
        return kept
    low = text.lower()
    lowered = len(low) == len(text)
    per, cut = _cut(low if lowered else text, spans)
    counts = np.fromiter(map(len, per), np.int64, len(per))
    kept = (text, lowered, per, cut, list(chain.from_iterable(per)), counts)
    with suppress(AttributeError):  # a plain list or tuple of spans: nothing kept
        spans.pieces = kept  # type: ignore[attr-defined]
    return kept


def words_pieces(text: str, spans: Sequence[Span]) -> list[list[str]] | None:
    """Each span's white-space pieces of ``text.lower()``, when ``text_pieces`` kept them in
    the spans, ``text.lower()`` keeps every offset and no run was cut: then the ``\\w+`` words
    of a span (of the lower-cased text) are those of its pieces, in order, as no white space
    is a word character (the topics' word pass reads them, not the text again). Else None."""
    kept = getattr(spans, "pieces", None)
    if kept is None or kept[0] is not text or not kept[1] or kept[3]:
        return None
    return kept[2]


def words_flat(text: str, spans: Sequence[Span]) -> tuple[list[str], npt.NDArray[np.int64]] | None:
    """``words_pieces`` flat, with the count per span (``flat_pieces``); None when that is."""
    if words_pieces(text, spans) is None:
        return None
    return flat_pieces(text, spans)


def segment_sums(rows: Vectors, counts: npt.NDArray[np.int64], dim: int) -> Vectors:
    """Consecutive runs of ``rows`` summed, ``counts[i]`` rows for output row ``i`` (a zero row
    for a count of 0), by one ``np.add.reduceat`` over the runs that have rows.

    ``reduceat`` along the rows costs about 1 ns per element whatever the width (it does not
    vectorise across the columns): read as ``complex64`` (two floats per element, added
    column by column all the same) the rows are half as many elements, and the sum of 700
    rows of 256 floats takes 0.13 ms instead of 0.19 ms."""
    has = counts > 0
    starts = np.cumsum(counts) - counts
    wide = dim % 2 == 0 and rows.flags.c_contiguous
    if has.all() and len(rows):  # every run has rows: summed straight into the output
        out = np.empty((len(counts), dim), np.float32)
        if wide:
            np.add.reduceat(rows.view(np.complex64), starts, axis=0, out=out.view(np.complex64))
        else:
            np.add.reduceat(rows, starts, axis=0, out=out)
        return out
    out = np.zeros((len(counts), dim), np.float32)
    if has.any():
        if wide:
            out.view(np.complex64)[has] = np.add.reduceat(rows.view(np.complex64),
                                                          starts[has], axis=0)  # fmt: skip
        else:
            out[has] = np.add.reduceat(rows, starts[has], axis=0)
    return out


def _in_order_sums(rows: Vectors, counts: npt.NDArray[np.int64], dim: int) -> Vectors:
    """``segment_sums`` added row after row, as ``rows[a:b].sum(axis=0)`` adds (``reduceat``
    groups its additions otherwise, which changes the last bit): one step per position, for
    the few tokens of a piece."""
    out = np.zeros((len(counts), dim), np.float32)
    starts = np.cumsum(counts) - counts
    for k in range(int(counts.max(initial=0))):
        at = np.nonzero(counts > k)[0]
        out[at] += rows[starts[at] + k]
    return out


class StaticEmbedder:
    """A token table and its tokenizer (``tokenizers``); optional per-token weights and a row
    index (model2vec's vocabulary quantisation: token -> shared row).

    The tokenizer (about 1.5 ms for 4 KB) is called once per distinct white-space piece, not
    per request: a piece's token rows are summed once and remembered, and a text is its
    pieces' sums added up. Both models' tokenizers split on white space before anything else,
    so the sum over pieces equals the sum over the whole text's tokens.

    The remembered sums are a ``RowCache``, which needs no lock.
    """

    __slots__ = ("_pieces", "_tokenizer", "dim", "index", "name", "table", "weights")

    def __init__(self, name: str, tokenizer: object, table: Vectors,
                 index: npt.NDArray[np.int64] | None = None,
                 weights: npt.NDArray[np.float32] | None = None,
                 capacity: int = _CACHE_LIMIT) -> None:  # fmt: skip
        self.name = name
        self._tokenizer = tokenizer
        self.table = table
        self.index = index
        self.weights = weights
        self.dim = int(table.shape[1])
        self._pieces = RowCache(capacity, self.dim)  # a piece's token sums, remembered

    def _token_rows(self, ids: npt.NDArray[np.int64]) -> Vectors:
        rows_ids = self.index[ids] if self.index is not None else ids.copy()
        np.clip(rows_ids, 0, len(self.table) - 1, out=rows_ids)
        rows = self.table[rows_ids]
        if self.weights is not None:
            rows = rows * self.weights[ids][:, None]
        return rows

    def piece_sums(self, pieces: Sequence[str]) -> Vectors:
        """Per piece, the sum of its tokens' rows: one tokenizer call and one gather for all
        of them."""
        encs = self._tokenizer.encode_batch(list(pieces), add_special_tokens=False)  # type: ignore[attr-defined]
        ids_of = [enc.ids for enc in encs]
        counts = np.fromiter(map(len, ids_of), np.int64, len(ids_of))
        ids = np.fromiter(chain.from_iterable(ids_of), np.int64, int(counts.sum()))
        rows = self._token_rows(ids) if len(ids) else np.zeros((0, self.dim), np.float32)
        return _in_order_sums(rows, counts, self.dim)

    def embed_spans(self, text: str, spans: Sequence[Span]) -> Vectors:
        pieces, counts = flat_pieces(text, spans)
        if not pieces:
            return np.zeros((len(spans), self.dim), np.float32)
        rows = self._pieces.gather(pieces, self.piece_sums)
        return _normalise(segment_sums(rows, counts, self.dim))


_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class HashEmbedder:
    """A deterministic bag-of-words embedder for tests: each lower-cased word hashes to a fixed
    random unit vector, so equal word sets give similarity 1 and disjoint ones about 0."""

    dim: int = 64
    name: str = "hash-test"

    def _word(self, word: str) -> Vectors:
        seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def embed_spans(self, text: str, spans: Sequence[Span]) -> Vectors:
        words = [(m.start(), self._word(m.group().lower())) for m in _WORD.finditer(text)]
        if not words:
            return np.zeros((len(spans), self.dim), np.float32)
        starts = np.asarray([s for s, _ in words], np.int64)
        rows = np.vstack([*(v for _, v in words), np.zeros(self.dim, np.float32)])
        return _Segmenter.pool(rows, starts, spans)
