"""Prompt-injection detection: heuristic signals per family, plus similarity to exemplars.

``InjectionDetector`` is built once (compile time: the signals become one Hyperscan database,
the exemplar library is embedded); ``score`` is pure and does no I/O. Per sentence the score is
the larger of

- the heuristic score: the noisy-or of the weights of the signals found in it (signals.py),
  scanned in the text and in its decodings (base64 runs, ROT13, leetspeak, spaced-out letters);
  a signal found only in a decoding also counts as the ``encoding`` family;
- the similarity score: how much closer the sentence is to the nearest attack exemplar than to
  the nearest benign look-alike, mapped to 0..1.

The text is the caller's canonical text (NFKC, ignorables removed, confusables folded).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from bisect import bisect_right
from dataclasses import dataclass
from importlib import resources

import hyperscan
import numpy as np
import yaml

from .embedder import Embedder, embed_texts
from .signals import NEGATION, SIGNALS
from .text import Sentences, embed_sentences

EXEMPLARS = "injection_exemplars_v1.yaml"

# Operating points on the combined score (chosen on the tune split, see docs/semantic.md).
SENSITIVITY = {"low": 0.85, "medium": 0.7, "high": 0.55}

# Similarity to score: (cosine to the nearest attack - _SIM_FLOOR) + (that - cosine to the
# nearest benign look-alike), clipped to 0..1. Static embeddings alone separate attacks from
# hard negatives poorly (docs/semantic.md): the benign maximum on the tune split is about 0.4,
# so similarity alone fires only at high sensitivity and mostly adds to a weak heuristic cue.
_SIM_FLOOR = 0.35
_NEGATED = 0.3  # weight factor of a signal right after a negation ("never reveal ...")

_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_LEET = str.maketrans("0134579@$|!", "oieastgasii")
_HAS_LEET = re.compile(r"[a-z][0134579@$][a-z]|[0134579][a-z]{2}", re.IGNORECASE)
_SPACED = re.compile(r"(?<![\w])\w(?:[ \-.]\w){4,}(?![\w])")
_LETTER_GAP = re.compile(r"(?<=\b\w)[ \-.](?=\w\b)")
_NEG = re.compile(NEGATION + r"[^.\n]{0,30}$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?\n]+")


class _Prefilter:
    """Which signals occur anywhere in a text: one Hyperscan pass over its UTF-8 bytes.

    Byte mode without start-of-match (the bounded gaps make UTF-8 or leftmost-start databases
    too large to build); ``\\w`` and ``\\b`` are then ASCII, so a non-ASCII signal must not rely
    on them (those of other languages use literal words)."""

    __slots__ = ("_db",)

    def __init__(self) -> None:
        self._db = hyperscan.Database()
        flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH
        self._db.compile(expressions=[s.expr.encode() for s in SIGNALS],
                         ids=list(range(len(SIGNALS))), flags=[flags] * len(SIGNALS))  # fmt: skip

    def which(self, text: str) -> list[int]:
        seen: list[int] = []

        def on_match(tag: int, start: int, end: int, flags: int, context: object) -> None:
            seen.append(tag)

        self._db.scan(text.encode("utf-8", "replace"), match_event_handler=on_match)
        return seen


@dataclass(frozen=True, slots=True)
class InjectionFinding:
    """The strongest sentence: its score, the family that gave it, and how it was found."""

    score: float
    family: str
    via: str  # "heuristic", "heuristic+decoded", "similarity", with "+similarity" when both


def _load_exemplars() -> dict[str, object]:
    text = resources.files(__package__).joinpath("data", EXEMPLARS).read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError(f"{EXEMPLARS}: not a version 1 exemplar library")
    return data


def _decodings(text: str) -> list[str]:
    """Readings of ``text`` an attacker may have hidden an instruction in."""
    out = [codecs.encode(text, "rot13")]
    if _HAS_LEET.search(text):
        out.append(text.translate(_LEET))
    if _SPACED.search(text):  # "i g n o r e  a l l": drop the single separators of letters
        out.append(_LETTER_GAP.sub("", text))
    for m in _B64.finditer(text):
        raw = m.group()
        try:
            decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
            s = decoded.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if s.isprintable():
            out.append(s)
    return out


class InjectionDetector:
    """Signals and exemplars compiled once; ``score(text)`` per part at request time."""

    __slots__ = ("_attack", "_benign", "_embedder", "_families", "_patterns", "version")

    _regexes = tuple(re.compile(s.expr, re.IGNORECASE) for s in SIGNALS)

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._patterns = _Prefilter()
        data = _load_exemplars()
        self.version = f"v{data['version']}"
        attacks: dict[str, list[str]] = data["attacks"]  # type: ignore[assignment]
        texts = [t for family in attacks.values() for t in family]
        self._families = [f for f, family in attacks.items() for _ in family]
        self._attack = embed_texts(embedder, texts)
        self._benign = embed_texts(embedder, list(data["benign"]))  # type: ignore[call-overload]

    def _heuristic(self, text: str) -> tuple[float, str]:
        """Best (noisy-or score, family) over the sentences of ``text``."""
        tags = self._patterns.which(text)
        if not tags:
            return 0.0, ""
        # Only the signals Hyperscan saw somewhere are run again with ``re``, for their spans:
        # one weight per (sentence, signal), damped after a negation.
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        found: dict[tuple[int, int], float] = {}
        for tag in tags:
            for m in self._regexes[tag].finditer(text):
                sentence = bisect_right(ends, m.start())
                start = ends[sentence - 1] if sentence else 0
                w = SIGNALS[tag].weight
                if _NEG.search(text, start, m.start()):
                    w *= _NEGATED
                found[(sentence, tag)] = max(w, found.get((sentence, tag), 0.0))
        best, family = 0.0, ""
        by_sentence: dict[int, list[tuple[float, int]]] = {}
        for (sentence, tag), w in found.items():
            by_sentence.setdefault(sentence, []).append((w, tag))
        for items in by_sentence.values():
            miss = 1.0
            for w, _ in items:
                miss *= 1.0 - w
            score = 1.0 - miss
            if score > best:
                best, family = score, SIGNALS[max(items)[1]].family
        return best, family

    def _similarity(self, sentences: Sentences) -> tuple[float, str]:
        if not sentences.spans:
            return 0.0, ""
        vecs = sentences.vectors
        attack = vecs @ self._attack.T
        near = attack.max(axis=1)
        margin = near - (vecs @ self._benign.T).max(axis=1)
        score = np.clip(near - _SIM_FLOOR + margin, 0.0, 1.0)
        i = int(score.argmax())
        if score[i] <= 0.0:
            return 0.0, ""
        return float(score[i]), self._families[int(attack[i].argmax())]

    def score(self, text: str, sentences: Sentences | None = None) -> InjectionFinding:
        """The injection score of one part (0 when nothing looks like an attack);
        ``sentences``: the part's, when the caller has embedded them already."""
        h, family = self._heuristic(text)
        via = "heuristic"
        for decoded in _decodings(text):
            d, _ = self._heuristic(decoded)
            if d > h:
                h, family, via = d, "encoding", "heuristic+decoded"
        if sentences is None:
            sentences = embed_sentences(self._embedder, text)
        s, sim_family = self._similarity(sentences)
        both = 1.0 - (1.0 - h) * (1.0 - s)  # noisy-or: similarity strengthens a weak cue
        if s > h:
            return InjectionFinding(round(both, 3), sim_family, "similarity")
        return InjectionFinding(round(both, 3), family, via if not s else f"{via}+similarity")
