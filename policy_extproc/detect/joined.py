"""Several prompt parts as one canonical text: the parts the provider joins, back to back.

Content filters and PII detectors match the canonical forms (``canonical.py``) of all parts of
a request in one buffer; a match maps back to (part, original span) pieces, one per part it
covers, so a keyword or an e-mail address split over two parts of one message is found and
redacted in both. The semantic classifiers read the parts' reading forms (``reading.py``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from contextvars import ContextVar, Token
from types import TracebackType

from .canonical import Canonical, canonicalize, plain_ascii
from .reading import latin_only, readable

_Forms = tuple[list[str], list[Canonical | None]]  # canonical texts; their maps (None: same)
_Entry = tuple[tuple[str, ...], _Forms]  # the last parts and their forms
# The last parts' forms, inside a ``Remembering`` scope only (None: outside, nothing kept):
# the canonical forms (filters, PII) and the reading forms (the semantic classifiers).
_last_forms: ContextVar[_Entry | None] = ContextVar("canonical_forms", default=None)
_last_reading: ContextVar[_Entry | None] = ContextVar("reading_forms", default=None)
_EMPTY: _Entry = ((), ([], []))


class Remembering:
    """The checks of one request (or of one response window) read the same parts: inside this
    scope their canonical forms are computed once and remembered; at its end they are
    forgotten, so no part's text outlives the decision it was read for. Outside any scope
    nothing is remembered. The entry lives in a context variable, so concurrent threads and
    tasks each have their own (``policy/evaluator.py`` opens one per check)."""

    __slots__ = ("_reading", "_token")

    def __enter__(self) -> None:
        self._token: Token[_Entry | None] = _last_forms.set(_EMPTY)
        self._reading: Token[_Entry | None] = _last_reading.set(_EMPTY)

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        _last_reading.reset(self._reading)
        _last_forms.reset(self._token)


def _canonical_forms(texts: Sequence[str], reading: bool = False) -> _Forms:
    # One entry per form, the last parts: the content filters and the PII rules of one check
    # read the same parts, and so do its semantic classifiers. (Tuples compare their items by
    # identity first: the same parts cost no string compare.)
    if reading and all(map(latin_only, texts)):
        reading = False  # the same forms: those the content filters computed (the common case)
    memo = _last_reading if reading else _last_forms
    key = tuple(texts)
    last = memo.get()
    if last is not None and key == last[0]:
        return last[1]
    if plain_ascii("".join(key)):
        forms: _Forms = (list(key), [None] * len(key))  # the common case, checked at once
    else:
        fold = readable if reading else canonicalize
        forms = ([], [])
        for t in key:
            c = fold(t)
            forms[0].append(c.text)
            forms[1].append(None if c.identity else c)
    if last is not None:
        memo.set((key, forms))  # the scope's reset forgets it
    return forms


class JoinedParts:
    """The canonical forms of several texts joined, and the way back to each text.

    Neighbouring texts of one group (``group >= 0``, the same value) are text the provider
    concatenates: they are joined back to back, so a word split over two of them is matched
    whole. Other neighbours are kept apart by ``sep``, which the caller picks so that no match
    runs across it (NUL for content filters, a newline for PII).
    """

    __slots__ = ("_joins", "_layout", "_sep", "forms", "maps", "runs", "text")

    def __init__(self, texts: Sequence[str], groups: Sequence[int], sep: str,
                 reading: bool = False) -> None:  # fmt: skip
        """``reading``: the texts' reading forms (``reading.py``: the semantic classifiers'),
        not their canonical forms."""
        forms, self.maps = _canonical_forms(texts, reading)
        self.forms = forms
        self._sep = sep
        self._layout: tuple[list[int], list[tuple[int, int]]] | None = None
        if not groups or max(groups) < 0:  # the common case: every part stands alone
            self._joins: frozenset[int] = frozenset()
            self.runs = forms  # the text of each run of parts that are joined
        else:
            self._joins = frozenset(
                i for i in range(1, len(groups)) if groups[i] >= 0 and groups[i] == groups[i - 1]
            )
            runs: list[str] = []
            run: list[str] = []
            for i, form in enumerate(forms):
                if i and i not in self._joins:
                    runs.append("".join(run))
                    run = []
                run.append(form)
            runs.append("".join(run))
            self.runs = runs
        self.text = sep.join(self.runs)

    def _positions(self) -> tuple[list[int], list[tuple[int, int]]]:
        """Where each text starts in ``text``, and each run's (start, end); only on a match."""
        if self._layout is not None:
            return self._layout
        starts: list[int] = []
        segments: list[tuple[int, int]] = []
        pos = run_start = 0
        for i, form in enumerate(self.forms):
            if i and i not in self._joins:
                segments.append((run_start, pos))
                pos += len(self._sep)
                run_start = pos
            starts.append(pos)
            pos += len(form)
        if self.forms:
            segments.append((run_start, pos))
        self._layout = (starts, segments)
        return self._layout

    @property
    def starts(self) -> list[int]:
        return self._positions()[0]

    @property
    def segments(self) -> list[tuple[int, int]]:
        """(start, end) in ``text`` of each run of joined parts."""
        return self._positions()[1]

    def pieces(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(text index, start, end) in original str offsets of each text ``[start, end)`` of
        the joined text covers, in order; separators belong to no text."""
        out: list[tuple[int, int, int]] = []
        starts = self.starts
        i = max(0, bisect_right(starts, start) - 1)
        while i < len(self.forms) and starts[i] < end:
            s = max(start - starts[i], 0)
            e = min(end - starts[i], len(self.forms[i]))
            if e > s:
                c = self.maps[i]
                out.append((i, *(c.span(s, e) if c is not None else (s, e))))
            i += 1
        return out
