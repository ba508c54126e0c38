"""The words before a PII candidate: which types they name, and how near.

A context word of a type raises a candidate's score; a negative word ("order", "version")
lowers it. Whichever stands nearer the candidate wins, so "SSN: 066-15-3745 Order #634880087"
reads the second number as an order number. Both look only within the candidate's sentence:
a window stops at a sentence end ("... my card. Order 4111 ..." is not about a card).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from policy_extproc.detect.pii_rules import CONTEXT, NEGATIVE, Rule

# Context words are looked for this many characters before a candidate; negative words (order,
# invoice, version) only this close, since they label the number right after them.
CONTEXT_WINDOW = 48
NEGATIVE_WINDOW = 40
# A candidate after a (nearest) negative word is more likely an order or version number.
NEGATIVE_FACTOR = 0.4
# The nearer the context word, the surer: when two types both find one, the nearest wins.
DISTANCE_PENALTY = 0.005


def _words(fragments: Iterable[str]) -> re.Pattern[str]:
    return re.compile(r"(?<![\w'])(?:" + "|".join(fragments) + r")(?![\w'])")


# One search per candidate start finds the context words of every type at once (longest
# fragments first, so "routing number" is read as one word); which types a word belongs to is
# worked out once per distinct word.
_ANY_CONTEXT = _words(sorted({f for ws in CONTEXT.values() for f in ws}, key=len, reverse=True))
_CONTEXT_OF = {e: re.compile("|".join(ws)) for e, ws in CONTEXT.items()}
_WORD_TYPES: dict[str, tuple[str, ...]] = {}
_NEGATIVE_RE = _words(NEGATIVE)
# A sentence ends at ".", "!" or "?" before white space and a capital (or an opening quote), or
# at a blank line. A period after an initial or a usual abbreviation ("J. Smith", "Dr. Roe",
# "tel. 0141 ...", "no. 123") ends nothing.
_SENTENCE_END = re.compile(r"(\w*)([.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])|\n[ \t]*\n")
_ABBREVIATIONS = frozenset(
    re.findall(r"\w+", "mr mrs ms dr prof st no nr tel ph mob fax ref inv cat approx vs etc eg ie")
    + re.findall(r"\w+", "jr sr inc ltd co corp dept acct ave rd")
)


def _types_of(word: str) -> tuple[str, ...]:
    types = _WORD_TYPES.get(word)
    if types is None:
        types = _WORD_TYPES[word] = tuple(e for e, r in _CONTEXT_OF.items() if r.fullmatch(word))
    return types


def _sentence_start(window: str) -> int:
    """Where the last sentence of window begins (0 when it holds no sentence end)."""
    start = 0
    for m in _SENTENCE_END.finditer(window):
        word = m.group(1)
        if m.group(2) == "." and (len(word) == 1 or word.lower() in _ABBREVIATIONS):
            continue
        start = m.end()
    return start


@dataclass(frozen=True, slots=True)
class Context:
    """What precedes a candidate: distance to the nearest context word of each type and to the
    nearest negative word (None: none in the window)."""

    nearest: dict[str, int]
    negative: int | None

    @classmethod
    def before(cls, text: str, start: int) -> Context:
        """The context of a candidate starting at ``start``."""
        window = text[max(0, start - CONTEXT_WINDOW) : start]
        if "." in window or "!" in window or "?" in window or "\n" in window:
            window = window[_sentence_start(window) :]
        # snake_case keys of JSON or key=value data ("date_of_birth") count as words.
        window = window.lower().replace("_", " ")
        nearest: dict[str, int] = {}
        for m in _ANY_CONTEXT.finditer(window):
            for entity in _types_of(m.group()):
                nearest[entity] = len(window) - m.end()  # later words overwrite: the nearest
        negative = None
        # The lookbehind of _words still sees before pos, so a cut word never matches.
        for m in _NEGATIVE_RE.finditer(window, max(0, len(window) - NEGATIVE_WINDOW)):
            negative = len(window) - m.end()
        return cls(nearest, negative)

    def named(self, rule: Rule) -> bool:
        """True when a context word of the rule's type is nearer than any negative word."""
        distance = self.nearest.get(rule.entity)
        if distance is None:
            return False
        return not rule.guarded or self.negative is None or distance < self.negative

    def score(self, rule: Rule) -> float:
        """The rule's score for a valid value here."""
        if self.named(rule):
            return rule.context - DISTANCE_PENALTY * self.nearest[rule.entity]
        if rule.guarded and self.negative is not None:
            return rule.base * NEGATIVE_FACTOR
        return rule.base
