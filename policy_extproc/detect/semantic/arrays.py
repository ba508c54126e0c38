"""Array helpers of the topic pass (``topics``): the max per group of columns, the max over
the other topics, a list of lists made flat with its counts."""

from __future__ import annotations

from itertools import chain

import numpy as np

from .embedder import Vectors


class Groups:
    """Columns sorted by owner (0..n-1), for the max over each owner's columns per row."""

    __slots__ = ("all", "n", "present", "starts")

    def __init__(self, owners: np.ndarray, n: int) -> None:
        self.n = n
        self.present = np.unique(owners)
        self.starts = np.searchsorted(owners, self.present)
        self.all = len(self.present) == n and n > 0

    def max(self, sims: Vectors) -> Vectors:
        """Per row, the max over the columns of each owner; -1 for an owner without columns."""
        if self.all:  # every owner has columns: no fill, no scatter
            return np.maximum.reduceat(sims, self.starts, axis=1)
        out = np.full((len(sims), self.n), -1.0, np.float32)
        if len(self.present) and sims.shape[1]:
            out[:, self.present] = np.maximum.reduceat(sims, self.starts, axis=1)
        return out


def others_max(per_topic: Vectors) -> Vectors:
    """Per row and topic, the max over the other topics (the top one's own gets the second)."""
    n = per_topic.shape[1]
    if n == 1:
        return np.full_like(per_topic, -1.0)
    rows = np.arange(len(per_topic))
    top = per_topic.argmax(axis=1)
    best = per_topic[rows, top]
    rest = per_topic.copy()
    rest[rows, top] = -np.inf
    out = np.empty_like(per_topic)
    out[:] = best[:, None]
    out[rows, top] = rest.max(axis=1)
    return out


def flat(sentences: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """(every unit in order, how many per sentence)."""
    counts = np.fromiter(map(len, sentences), np.int64, len(sentences))
    return list(chain.from_iterable(sentences)), counts
