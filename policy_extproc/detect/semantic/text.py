"""Sentences: the unit both classifiers judge. Callers pass the reading form (detect/reading:
NFKC, ignorables removed, look-alikes folded in the words that could pass for ASCII, other
scripts kept as they are written), so none of that is redone here."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from .embedder import Embedder, Vectors

Span = tuple[int, int]
T = TypeVar("T")

# A sentence ends at . ! ? ; followed by space or the end, at a line break, or at the CJK full
# stop (canonical text is NFKC, so fullwidth ! ? ; are already ASCII); a very long run without
# an end is cut so one span never averages a whole document.
_MAX = 320


# One sentence: from a non-space to an end mark followed by space or the end, a line break,
# or the CJK full stop. ``finditer`` does the whole cut in C; the run ``[^...]+`` lets it take
# the characters between marks in one step (four times faster than one per repetition).
_SENTENCE = re.compile(r"[^\s](?:[^\n.!?;\u3002]+|[.!?;]+(?![\s]|$))*(?:[.!?;]+|\u3002+)?")


class Spans(list[Span]):
    """A text's sentence spans, with a slot for what an embedder derives from them once (the
    white-space pieces both models read: ``embedder.text_pieces``), which lives as long as
    the spans do, that is the request: never a text kept past it."""

    __slots__ = ("pieces",)


def sentence_spans(text: str) -> Spans:
    """(start, end) of each non-blank sentence of ``text``, at most ``_MAX`` characters."""
    spans = Spans()
    for m in _SENTENCE.finditer(text):
        start, end = m.span()
        if end - start > _MAX or text[end - 1].isspace():
            _add(text, start, end, spans)
        else:
            spans.append((start, end))
    return spans


def _add(text: str, start: int, end: int, out: list[Span]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    while end - start > _MAX:
        cut = text.rfind(" ", start + _MAX // 2, start + _MAX)
        cut = cut if cut > start else start + _MAX
        out.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        out.append((start, end))


@dataclass(frozen=True, slots=True)
class Sentences:
    """A text's sentences and their vectors, computed once and read by both classifiers."""

    text: str
    spans: list[Span]
    vectors: Vectors


def embed_sentences(embedder: Embedder, text: str) -> Sentences:
    spans = sentence_spans(text)
    return Sentences(text, spans, embedder.embed_spans(text, spans))


class Memo(Generic[T]):
    """Results per part text, the least recently used dropped first (bounded in entries and in
    the characters of the texts judged). The previous turns of a chat come back with every
    request: each part is judged once, then found here. Texts are held by their BLAKE2b digest
    (128 bits), never as text, so this memo keeps no prompt (``detect/joined.py`` remembers
    canonical forms only within one check).

    No lock: the event loop and the threads that may share a memo (the admin API's dry run)
    change it only by single ``OrderedDict`` calls, each atomic under the GIL (``setdefault``
    adds an entry once, ``popitem`` removes it once, ``move_to_end`` of an entry another thread
    just dropped is skipped). The character count is kept by whoever added or removed an entry;
    two threads' ``+=`` racing could lose one of the updates, which leaves that bound off by one
    part's length (the entry bound stays exact).
    """

    __slots__ = ("_chars", "_items", "max_chars", "max_items")

    def __init__(self, max_items: int = 4096, max_chars: int = 8_000_000) -> None:
        self.max_items = max_items
        self.max_chars = max_chars
        self._items: OrderedDict[bytes, tuple[T, int]] = OrderedDict()
        self._chars = 0

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, text: str) -> T | None:
        key = self._key(text)
        found = self._items.get(key)
        if found is None:
            return None
        with suppress(KeyError):  # dropped by another thread meanwhile: still a valid answer
            self._items.move_to_end(key)
        return found[0]

    def put(self, text: str, value: T) -> T:
        if len(text) > self.max_chars // 8:  # one huge part must not flush the rest
            return value
        key = self._key(text)
        items = self._items
        entry = (value, len(text))
        if items.setdefault(key, entry) is entry:
            self._chars += len(text)
        else:
            with suppress(KeyError):
                items.move_to_end(key)
        while len(items) > self.max_items or self._chars > self.max_chars:
            try:
                _, (_, n) = items.popitem(last=False)
            except KeyError:  # emptied by another thread
                break
            self._chars -= n
        return value

    def __len__(self) -> int:
        return len(self._items)
