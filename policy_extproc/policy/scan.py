"""The text content filters scan: the parts' canonical text in one buffer, hits mapped back."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from ..detect.characters import read_tags
from ..detect.joined import JoinedParts
from ..detect.patterns import Hit, PatternSet
from .findings import TextPart


def groups_of(parts: Sequence[TextPart]) -> list[int]:
    """Each part's join group (``PromptPart.group``; a part without one stands alone)."""
    return [getattr(p, "group", -1) for p in parts]


class ScanText:
    """The parts' canonical text in one UTF-8 buffer, so each pattern database scans once.

    Matching is on the canonical form (``detect/canonical.py``: NFKC, no zero-width characters,
    look-alikes folded) and every hit is mapped back to the original text of its part(s). Parts
    of one join group are back to back (the provider concatenates them); other parts are kept
    apart by NUL, which no keyword, phrase (``\\s+``) or word character matches and which the
    canonical form never holds, so a hit does not run from one into the next; a pattern that
    does match NUL (``.``, ``[^x]``) and crosses is caught by ``scan``, which then scans the
    joined runs one by one.
    """

    __slots__ = ("apart", "ascii", "bstarts", "data", "encoded", "joined", "marks", "views")

    MARK_BYTES = 512  # a non-ASCII run's byte -> character checkpoints, this far apart

    def __init__(self, parts: Sequence[TextPart]) -> None:
        texts = [p.text for p in parts]
        self.joined = joined = JoinedParts(texts, groups_of(parts), "\0")
        runs = list(joined.runs)
        # Joined, "a" + "confidential" reads "aconfidential": whole words would miss a keyword
        # standing at the edge of a part. So when parts are joined, each part is scanned on its
        # own too (after the joined runs): a match in either view counts (fail closed).
        self.apart: JoinedParts | None = None
        if len(runs) < len(texts):
            self.apart = JoinedParts(texts, [-1] * len(texts), "\0")
            runs += self.apart.runs
        self.views = [v for v in (joined, self.apart) if v is not None]
        # Unicode tag characters, which the canonical form removes, are also read as the ASCII
        # they mirror, as a model reads them: a keyword written in them is found there, and its
        # span (one character for one: the same offsets) is the tags' in the original. The
        # visible text stays in that view (a keyword half visible, half in tags is one word to
        # the model); a match it shares with the other views is one redaction (``located``).
        tagged = [read_tags(t) for t in texts]
        if any(t is not None for t in tagged):
            hidden = JoinedParts([t or "" for t in tagged], groups_of(parts), "\0")
            self.views.append(hidden)
            runs += hidden.runs
        # A JSON body may hold lone surrogates ("\ud800"), which UTF-8 cannot encode: each
        # becomes "?", one byte for one character, so offsets still map back to the text.
        self.encoded = [r.encode("utf-8", "replace") for r in runs]
        self.ascii = [len(b) == len(r) for b, r in zip(self.encoded, runs, strict=True)]
        bstarts, pos = [], 0
        for b in self.encoded:
            bstarts.append(pos)
            pos += len(b) + 1
        self.bstarts = bstarts
        self.data = b"\0".join(self.encoded)
        # Per non-ASCII run, built when a hit in it is first located: (byte, chars before it)
        # checkpoints, so mapping a hit decodes at most MARK_BYTES, not the run up to it (a
        # text with many hits was quadratic).
        self.marks: dict[int, tuple[list[int], list[int]]] = {}

    def _chars(self, k: int, b: int) -> int:
        """The characters of run ``k`` before its byte offset ``b``."""
        raw = self.encoded[k]
        marks = self.marks.get(k)
        if marks is None:
            at, chars = [0], [0]
            pos, count = 0, 0
            while pos + self.MARK_BYTES < len(raw):
                nxt = pos + self.MARK_BYTES
                while raw[nxt] & 0xC0 == 0x80:  # a continuation byte: back to its lead byte
                    nxt -= 1
                count += len(raw[pos:nxt].decode(errors="ignore"))
                pos = nxt
                at.append(pos)
                chars.append(count)
            marks = self.marks[k] = (at, chars)
        at, chars = marks
        i = bisect_right(at, b) - 1
        return chars[i] + len(raw[at[i] : b].decode(errors="ignore"))

    def _crosses(self, hit: Hit) -> bool:
        k = bisect_right(self.bstarts, hit.start) - 1
        return hit.end > self.bstarts[k] + len(self.encoded[k])

    def scan(self, patterns: PatternSet) -> list[Hit]:
        """Every hit of ``patterns``, each inside one joined run, as byte spans of ``data``."""
        hits = patterns.scan(self.data, canonical=True)
        if len(self.encoded) > 1 and any(self._crosses(h) for h in hits):
            hits = []
            for base, raw in zip(self.bstarts, self.encoded, strict=True):
                hits.extend(
                    Hit(h.tag, base + h.start, base + h.end)
                    for h in patterns.scan(raw, canonical=True)
                )
        return hits

    def locate(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(part index, start, end) in str offsets of the original parts, for a byte span of
        ``data``: one piece per part the span covers (a match may run over a join)."""
        k = bisect_right(self.bstarts, start) - 1
        base = self.bstarts[k]
        raw = self.encoded[k]
        s, e = start - base, min(end - base, len(raw))
        if not self.ascii[k]:
            s, e = self._chars(k, s), self._chars(k, e)
        for view in self.views:
            if k < len(view.runs):
                break
            k -= len(view.runs)
        offset = view.segments[k][0]
        return view.pieces(offset + s, offset + e)
