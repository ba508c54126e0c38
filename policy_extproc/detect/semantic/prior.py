"""The topics' generic-question prior: a sentence that asks how something works in general,
what it is, its history or definition, and says nothing of the asker ("I", "my", "me"), is about
the field, not a request in it; its topic scores are lowered by ``PENALTY``.

"how do index funds work in general" is such a sentence; "should I dump my ETH?" is not.
"""

from __future__ import annotations

import re

PENALTY = 0.3
_OPENING = (
    r"\W*(how (do|does|did|is|are|was|were|can) (?!i\b|we\b)\w+|what (is|are|was|were|does|do) "
    r"(?!i\b|my\b)|explain\b|why (do|does|did|is|are|was|were) (?!i\b|my\b)|when (was|were|did) "
    r"|who (invented|discovered|founded|wrote)|describe\b|define\b)"
)
_ANYWHERE = ("in general", "history of", "difference between")
# The reference (what the tests compare with): an opening at the start, or a phrase anywhere.
# ``generic`` reads it as two parts: ``match`` of the opening and, only when one of the phrases
# is in the sentence, a search for it between word bounds (3.6 us per sentence -> 0.7 us: the
# one search tried the anchored alternatives at every position).
EDUCATIONAL = re.compile("^" + _OPENING + "|" + "|".join(rf"\b{p}\b" for p in _ANYWHERE))
PERSONAL = re.compile(r"\b(i|i'm|i've|my|me|mine|myself|should i)\b")
_OPENS = re.compile(_OPENING)
_PHRASE = re.compile(r"\b(?:" + "|".join(_ANYWHERE) + r")\b")


def generic(low: str, start: int, end: int) -> bool:
    """Whether ``low[start:end]`` (lower case) is a general question, not a personal one."""
    sentence = low[start:end]
    if _OPENS.match(sentence) is None and not (
        any(p in sentence for p in _ANYWHERE) and _PHRASE.search(sentence) is not None
    ):
        return False
    return PERSONAL.search(sentence) is None
