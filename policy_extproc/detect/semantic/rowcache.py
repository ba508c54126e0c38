"""Rows remembered by key, at most ``capacity`` at a time (``RowCache``): a piece's token sums
(``embedder``), a word's margins per topic (``topics``), a span's sentence vector
(``encoder``)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]


# An entry of the position table is one int64: the key's hash above SLOT_BITS, its row below,
# so one write publishes both (the GIL makes a numpy element write whole); 0 is a free position.
SLOT_BITS = 20
_SLOT = (1 << SLOT_BITS) - 1
_HIGH = np.int64(~_SLOT)


def table_mask(n: int, what: str) -> int:
    """The index mask of a position table for ``n`` keys: a power of two, at most half full;
    ``what`` it is for, named when ``n`` does not fit."""
    if not 0 < n < _SLOT:
        raise ValueError(f"a {what} holds 1 to {_SLOT - 1} keys, not {n}")
    return (1 << (2 * n - 1).bit_length()) - 1


def find_slots(entries: Ints, hashes: Ints, mask: int) -> Ints:
    """The slot of each hash in the position table ``entries`` (linear probing, all hashes at
    once: a few vectorised gathers), 0 for one not there."""
    out = np.zeros(len(hashes), np.int64)
    which = np.arange(len(hashes))
    at = hashes & mask
    high = hashes & _HIGH
    while len(which):
        found = entries[at]
        hit = (found & _HIGH) == high
        out[which[hit]] = found[hit] & _SLOT
        on = ~hit & (found != 0)
        which, at, high = which[on], (at[on] + 1) & mask, high[on]
    return out


def free_position(entries: Ints, h: int, mask: int) -> int | None:
    """Where hash ``h`` would go in ``entries``, None when it is there already."""
    high, at = h & _HIGH, h & mask
    while entries[at] != 0:
        if entries[at] & _HIGH == high:
            return None
        at = (at + 1) & mask
    return at


def entry(h: int, slot: int) -> np.int64:
    """The position table's entry for hash ``h`` and row ``slot`` (1 or more)."""
    return np.int64(h & _HIGH) | slot


class _Table(NamedTuple):
    entries: Ints  # open addressing by hash: (hash & _HIGH) | slot, 0 where free
    rows: Vectors  # row 0 unused
    taken: count[int]  # the next slot: ``next`` is one C call, two threads never share one


class RowCache:
    """A key's row is a slot of one table, so the rows of many keys are one gather. Keys are
    held by their ``hash`` (SipHash with this process's secret key), never as text: no piece
    of a prompt outlives its request here. When the table is full it starts again empty, so
    the keys of today's traffic are kept, not only the first ``capacity`` ever seen.

    Where each key's row is, is an open-addressing table in numpy (linear probing, at most half
    full), so finding the rows of a part's 700 keys is a few vectorised gathers, not 700
    dictionary probes: on a busy process each probe of a 50,000-key dictionary missed the
    cache (about 0.5 ms a request across the classifiers' caches).

    No lock: a new key's row is written to a slot no other thread has (``taken``), then the
    key is published by one write of its entry (hash and slot together), so a reader sees a
    key with its own row or not at all. Two threads adding keys at one free position at once
    leave one of them (the other is computed again when next asked); a full table is replaced
    whole, and a thread still holding the old one reads rows that stay consistent with its
    entries. Two keys whose hashes agree above ``SLOT_BITS`` (about one chance in 10^9 among
    50,000) would share a row."""

    __slots__ = ("_capacity", "_mask", "_state", "_width")

    def __init__(self, capacity: int, width: int) -> None:
        self._capacity, self._width = capacity, width
        self._mask = table_mask(capacity, "RowCache")
        self._state = self._fresh()

    def _fresh(self) -> _Table:
        rows = np.zeros((self._capacity + 1, self._width), np.float32)  # zeroed pages: lazy
        return _Table(np.zeros(self._mask + 1, np.int64), rows, count(1))

    def __len__(self) -> int:
        return int(np.count_nonzero(self._state.entries))

    def gather(self, keys: list[str], compute: Callable[[list[str]], Vectors]) -> Vectors:
        """The row of each key; ``compute`` gives the rows of the keys not known (distinct,
        in order of first appearance), once."""
        state = self._state
        hashes = np.fromiter(map(hash, keys), np.int64, len(keys))
        at = find_slots(state.entries, hashes, self._mask)
        out = state.rows[at]
        if at.all():
            return out
        missing = np.flatnonzero(at == 0)
        index = {k: i for i, k in enumerate(dict.fromkeys(keys[k] for k in missing.tolist()))}
        new = list(index)
        fresh = compute(new)
        rows = [index[keys[k]] for k in missing.tolist()]
        out[missing] = fresh[rows]
        self._keep(dict(zip(hashes[missing].tolist(), rows, strict=True)), fresh)
        return out

    def _keep(self, rows_of: dict[int, int], fresh: Vectors) -> None:
        """Remember ``fresh[rows_of[h]]`` for each key hash ``h``."""
        state, mask = self._state, self._mask
        for h, i in rows_of.items():
            at = free_position(state.entries, h, mask)
            if at is None:
                continue  # another thread was first
            slot = next(state.taken)
            if slot > self._capacity:  # full: start again, with the keys of now
                state = self._state = self._fresh()
                slot, at = next(state.taken), h & mask
            state.rows[slot] = fresh[i]
            state.entries[at] = entry(h, slot)  # published once its row is written
