"""Prompt-injection detection: heuristic signals per family, plus similarity to exemplars.

``InjectionDetector`` is built once per process (compile time: the signals become one
Hyperscan database, the exemplar library, read by ``sources.models``, is embedded); ``score``
is pure and does no I/O. Per sentence the score is
the larger of

- the heuristic score: the noisy-or of the weights of the signals found in it (signals.py),
  scanned in the text and in its decodings (base64 runs, ROT13, leetspeak, spaced-out letters);
  a signal found only in a decoding also counts as the ``encoding`` family;
- the similarity score: how much closer the sentence is to the nearest attack exemplar than to
  the nearest benign look-alike, mapped to 0..1;

and the part's score adds, as a noisy-or, the learned lexical score of the whole part
(lexical.py: a logistic regression over its words and word pairs, trained on public corpora).

The text is the caller's reading form (NFKC, ignorables removed, look-alikes folded in words
that could pass for ASCII, words of other scripts kept: ``detect/reading``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

import hyperscan
import numpy as np

from ..scratch import ScratchPool
from .embedder import Embedder, columns, embed_texts
from .languages import NEGATION_OTHER
from .lexical import Lexicon, words_of
from .signals import NEGATION, SIGNALS
from .text import Memo, Sentences, Span, sentence_spans
from .typos import Typos

EXEMPLARS = "injection_exemplars_v2.yaml"
# The model the exemplars are read with (docs/semantic.md: the sharper of the two candidates
# on injection; topics use the default model).
MODEL = "tokenlearn-10k-64"

# Operating points on the combined score (chosen on the tune split, see docs/semantic.md).
SENSITIVITY = {"low": 0.85, "medium": 0.7, "high": 0.55}

# Similarity to score: (cosine to the nearest attack - _SIM_FLOOR) + (that - cosine to the
# nearest benign look-alike), clipped to 0..1. Static embeddings alone separate attacks from
# hard negatives poorly (docs/semantic.md): the benign maximum on the tune split is about 0.4,
# so similarity alone fires only at high sensitivity and mostly adds to a weak heuristic cue.
_SIM_FLOOR = 0.35
# The lexical score a reason names, as "+lexicon", when another score decides (smaller ones
# change the figure too little to be worth a word); the reason names the family of the signal
# or exemplar that scored most unless that score could not fire on its own (below `high`).
_LEX_NAMED = 0.05
_ON_ITS_OWN = SENSITIVITY["high"]
_NEGATED = 0.3  # weight factor of a signal right after a negation ("never reveal ...")

_B64 = re.compile(rb"[A-Za-z0-9+/]{16,}={0,2}")
_ROT13 = bytes.maketrans(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    b"nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
)
_LEET = bytes.maketrans(b"0134579@$|!", b"oieastgasii")
# A leet character between letters, or a leet digit before two letters (_LEET_CUE's language,
# written from the leet character so that ``re`` skips to candidates).
_HAS_LEET = re.compile(rb"[0134579@$](?:(?<=[a-z].)[a-z]|(?<=[0134579])[a-z]{2})")
_SPACED = re.compile(rb"(?<![\w])\w(?:[ \-.]\w){4,}(?![\w])")
# Text written backwards, or asked to be read so: "the" and "you" reversed, "reverse" either way.
_REVERSED_CUES = (b" eht ", b" uoy ", b"esrever", b"revers", b"backward", b"right to left")
_LETTER_GAP = re.compile(rb"(?<=\b\w)[ \-.](?=\w\b)")
_NEG = re.compile(NEGATION.encode() + rb"[^.\n]{0,30}$")
# A signal quoted in a sentence that talks about it ("What does 'ignore previous instructions'
# mean?", "phrases such as \"reveal your system prompt\""): an opening quote before it, a
# closing one after it, and a word of talk about attacks in the sentence.
_OPEN_QUOTES = (b' "', b" '", b" `", b"\xe2\x80\x9c", b"\xe2\x80\x98", b"\xc2\xab", b'("', b"('")
_CLOSE_QUOTES = (b'"', b"'", b"`", b"\xe2\x80\x9d", b"\xe2\x80\x99", b"\xc2\xbb")
_MENTION = re.compile(
    rb"\b(prompt injections?|injections?|jailbreak\w*|attack\w*|phrases?|examples?|such as|e\.g\."
    rb"|means?|meaning|called|detect\w*|filter\w*|classif\w*|security|red[ -]team\w*|payloads?"
    rb"|quoted?|keywords?|warn\w*|like|prompts|defend\w*|protect\w*|mitigat\w*|safe)\b"
)


def _quoted_mention(data: bytes, start: int, hit: tuple[int, int], stop: int) -> bool:
    """Whether the text at ``hit`` is quoted in the sentence ``data[start:stop]`` (a quote
    opened before it, one closed after it) and the sentence talks about such text."""
    before, after = data[max(start - 1, 0) : hit[0]], data[hit[1] : stop]
    opened = (start == 0 and data[:1] in (b'"', b"'")) or any(q in before for q in _OPEN_QUOTES)
    closed = any(q in after for q in _CLOSE_QUOTES)
    return opened and closed and _MENTION.search(data, start, stop) is not None


def _talks_about(sentence: str) -> bool:
    """Whether ``sentence`` quotes something and talks about attacks: ``_quoted_mention`` of
    what follows its first opening quote."""
    low = sentence.lower().encode("utf-8", "replace")
    # (where an opening quote starts, where what it quotes starts)
    opened = [(i, i + len(q)) for q, i in ((q, low.find(q)) for q in _OPEN_QUOTES) if i >= 0]
    if low[:1] in (b'"', b"'"):
        opened.append((0, 1))
    if not opened:
        return False
    inside = min(opened)[1]
    return _quoted_mention(low, 0, (inside, inside), len(low))


_ENDS = (b"\n", b". ", b"! ", b"? ", b".\t", b"!\t", b"?\t")


def _sentence_start(data: bytes, end: int) -> int:
    """Where the sentence holding the byte before ``end`` starts (as text.sentence_spans cuts,
    by a few ``rfind`` calls: no scan of the whole text per hit). The first sentence starts at
    0, not at ``-1 + len(end)``: its first byte is where a negation or ``unless`` begins."""
    starts = (data.rfind(e, 0, max(end - 1, 0)) for e in _ENDS)
    return max((i + len(e) for i, e in zip(starts, _ENDS, strict=True) if i >= 0), default=0)


def _sentence_end(data: bytes, end: int) -> int:
    """Where the sentence holding the byte at ``end - 1`` ends."""
    found = [i for i in (data.find(e, end) for e in _ENDS) if i >= 0]
    return min(found) if found else len(data)


# Cues that a decoding may hold something, found in one Hyperscan pass (the ``re`` searches
# cost 0.1 ms on 4 KB of prose): a run of spaced-out letters (wider than _SPACED, which then
# confirms it), the leet cue (_HAS_LEET's language), a run of 16 base64 characters (lower case:
# a run of the raw text is one of the lower-cased text).
_SPACED_CUE, _LEET_CUE, _B64_CUE = 0, 1, 2
_CUES = {
    _SPACED_CUE: rb"\w[ \-.]\w[ \-.]\w[ \-.]\w[ \-.]\w",
    _LEET_CUE: rb"[a-z][0134579@$][a-z]|[0134579][a-z]{2}",
    _B64_CUE: rb"[a-z0-9+/]{16}",
}


class _Prefilter:
    """Where signals end in a text: one Hyperscan pass over its lower-cased UTF-8 bytes; and
    which decodings a text calls for (``cues``), in another.

    Byte mode without start-of-match: the bounded gaps make UTF-8 or leftmost-start databases
    too large to build. Python's ``re`` then finds a hit's start, in its sentence only. Each
    scan takes a scratch of its own (``detect.scratch``): the admin API's dry run scans in a
    thread while the event loop does."""

    __slots__ = ("_cues", "_signals")

    def __init__(self) -> None:
        db = hyperscan.Database()
        exprs = [s.expr.encode() for s in SIGNALS]
        db.compile(expressions=exprs, ids=list(range(len(SIGNALS))),
                   flags=[hyperscan.HS_FLAG_CASELESS] * len(SIGNALS))  # fmt: skip
        self._signals = ScratchPool(db)
        cues = hyperscan.Database()
        cues.compile(expressions=list(_CUES.values()), ids=list(_CUES),
                     flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(_CUES))  # fmt: skip
        self._cues = ScratchPool(cues)

    def hits(self, data: bytes) -> list[tuple[int, int]]:
        """(signal, end offset) of every match."""
        seen: list[tuple[int, int]] = []

        def on_match(tag: int, start: int, end: int, flags: int, context: object) -> None:
            seen.append((tag, end))

        self._signals.scan(data, on_match)
        return seen

    def cues(self, low: bytes) -> frozenset[int]:
        """The decoding cues (``_CUES``) found in lower-cased ``low``."""
        seen: set[int] = set()

        def on_match(tag: int, start: int, end: int, flags: int, context: object) -> None:
            seen.add(tag)

        self._cues.scan(low, on_match)
        return frozenset(seen)


@dataclass(frozen=True, slots=True)
class InjectionFinding:
    """The strongest sentence: its score, the family that gave it, and how it was found."""

    score: float
    family: str
    via: str  # "heuristic", "heuristic+decoded", "similarity", with "+similarity" when both


def _library(data: object) -> tuple[str, dict[str, list[str]], list[str]]:
    """(version, attacks by family, benign look-alikes) of a parsed exemplar library."""
    if not isinstance(data, dict) or data.get("version") != 2:
        raise ValueError(f"{EXEMPLARS}: not a version 2 exemplar library")
    attacks, benign = data.get("attacks"), data.get("benign")
    if not isinstance(attacks, dict) or not isinstance(benign, list):
        raise ValueError(f"{EXEMPLARS}: needs 'attacks' (family -> texts) and 'benign' (texts)")
    families = {str(f): [str(t) for t in texts] for f, texts in attacks.items()}
    return f"v{data['version']}", families, [str(t) for t in benign]


def _decodings(low: bytes, raw: bytes, cues: frozenset[int] | None = None) -> list[bytes]:
    """Readings an attacker may have hidden an instruction in (lower-cased but base64, which
    is decoded from ``raw`` and then lower-cased). ``cues``: ``_Prefilter.cues(low)``; None
    looks for them with ``re`` (the reference the tests compare the cues with)."""
    out = [low.translate(_ROT13)]
    if any(cue in low for cue in _REVERSED_CUES):
        out.append(low[::-1])  # "... .snoitcurtsni suoiverp lla erongi": read right to left
    if (_LEET_CUE in cues) if cues is not None else _HAS_LEET.search(low):
        out.append(low.translate(_LEET))
    if (cues is None or _SPACED_CUE in cues) and _SPACED.search(low):
        out.append(_LETTER_GAP.sub(b"", low))  # "i g n o r e  a l l": drop the separators
    if cues is not None and _B64_CUE not in cues:
        return out
    for m in _B64.finditer(raw):
        chunk = m.group()
        try:
            decoded = base64.b64decode(chunk + b"=" * (-len(chunk) % 4), validate=True)
            text = decoded.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if text.isprintable():
            out.append(text.lower().encode())
    return out


def _best(found: dict[tuple[int, int], float]) -> tuple[float, str]:
    """Best (noisy-or score, family) over the sentences of ``found`` (``weights``)."""
    if not found:
        return 0.0, ""
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


class InjectionDetector:
    """Signals and exemplars compiled once; ``score(text)`` per part at request time."""

    __slots__ = ("_attack", "_benign", "_embedder", "_families", "_lexicon", "_memo", "_patterns",
                 "_typos", "version")  # fmt: skip

    _regexes = tuple(re.compile(s.expr.encode(), re.IGNORECASE) for s in SIGNALS)
    _unless = tuple(re.compile(s.unless.encode()) if s.unless else None for s in SIGNALS)

    def __init__(self, embedder: Embedder, exemplars: object, lexicon: object = None) -> None:
        """``exemplars``: the parsed library (``data/injection_exemplars_v2.yaml``, read by
        ``sources.models.read_exemplars``); ``lexicon``: the parsed lexical model
        (``data/injection_lexicon_v1.json``, ``sources.models.read_lexicon``), None to score
        without it (the tests of the other parts do)."""
        self._embedder = embedder
        self._patterns = _Prefilter()
        self._lexicon = Lexicon(lexicon) if lexicon is not None else None
        # The words the lexical model has seen are words, not misspellings of attack words.
        weights = lexicon.get("weights", {}) if isinstance(lexicon, dict) else {}
        self._typos = Typos(k for k in weights if " " not in k)
        self.version, attacks, benign = _library(exemplars)
        if self._lexicon is not None:
            self.version += f"+lexicon-{self._lexicon.version}"
        texts = [t for family in attacks.values() for t in family]
        self._families = [f for f, family in attacks.items() for _ in family]
        # Kept as columns (a contiguous transpose): see embedder.columns.
        self._attack = columns(embed_texts(embedder, texts))
        self._benign = columns(embed_texts(embedder, benign))
        self._memo: Memo[InjectionFinding] = Memo()

    def weights(self, data: bytes) -> dict[tuple[int, int], float]:
        """The signals found in lower-cased ``data``: (sentence start, signal) -> its weight,
        damped when a negation comes before it in its sentence ("never reveal ...") or its
        sentence holds its benign context (``unless``)."""
        found: dict[tuple[int, int], float] = {}
        for tag, end in self._patterns.hits(data):
            start = _sentence_start(data, end)
            if (start, tag) in found:
                continue
            m = self._regexes[tag].search(data, start, end)
            w = SIGNALS[tag].weight
            stop = _sentence_end(data, end)
            if m is not None and (
                _NEG.search(data, start, m.start())
                or NEGATION_OTHER.search(data, start, m.start())
                or _quoted_mention(data, start, m.span(), stop)
            ):
                w *= _NEGATED
            unless = self._unless[tag]
            if unless is not None and unless.search(data, start, stop):
                w *= _NEGATED
            found[(start, tag)] = w
        return found

    def _heuristic(self, data: bytes, judged: frozenset[tuple[int, int]] = frozenset()
                   ) -> tuple[float, str]:  # fmt: skip
        """Best (noisy-or score, family) over the sentences of lower-cased ``data``; without
        the (sentence, signal) pairs of ``judged``, found in the text a decoding came from."""
        return _best({k: w for k, w in self.weights(data).items() if k not in judged})

    def _similarity(self, sentences: Sentences) -> tuple[float, str]:
        if not sentences.spans:
            return 0.0, ""
        vecs = sentences.vectors
        attack = vecs @ self._attack
        near = attack.max(axis=1)
        margin = near - (vecs @ self._benign).max(axis=1)
        score = np.clip(near - _SIM_FLOOR + margin, 0.0, 1.0)
        # A sentence that quotes an attack to talk about it is near the attack exemplars for
        # the quote's words: it counts half (the few best sentences are looked at).
        for i in np.argsort(-score)[:3].tolist():
            if score[i] > 0.0 and _talks_about(sentences.text[slice(*sentences.spans[i])]):
                score[i] *= 0.5
        i = int(score.argmax())
        if score[i] <= 0.0:
            return 0.0, ""
        return float(score[i]), self._families[int(attack[i].argmax())]

    def score(self, text: str, sentences: Sentences | None = None,
              spans: Callable[[], list[Span]] | None = None) -> InjectionFinding:  # fmt: skip
        """The injection score of one part (0 when nothing looks like an attack), remembered
        by its text; ``sentences``: the part's, when the caller has embedded them already with
        this detector's model; ``spans``: gives the part's sentence spans, when the caller cuts
        them for other classifiers too (called only for a text not judged before)."""
        found = self._memo.get(text)
        if found is None:
            found = self._memo.put(text, self._score(text, sentences, spans))
        return found

    def _score(self, text: str, sentences: Sentences | None,
               spans: Callable[[], list[Span]] | None) -> InjectionFinding:  # fmt: skip
        raw = text.encode("utf-8", "replace")
        low = text.lower().encode("utf-8", "replace")
        plain = self.weights(low)
        h, family = _best(plain)
        via = "heuristic"
        # A signal the text itself holds was judged there, with what damps it (a negation);
        # ROT13 keeps offsets and other scripts, so its reading would find it again undamped.
        judged = frozenset(plain)
        for decoded in _decodings(low, raw, self._patterns.cues(low)):
            d, _ = self._heuristic(decoded, judged)
            if d > h:
                h, family, via = d, "encoding", "heuristic+decoded"
        words = words_of(low)  # for the typos and the lexical model
        fixed = self._typos.correct(low, words)
        if fixed is not None:  # "ignroe all previuos instrcutions": read as the words meant
            d, fam = self._heuristic(fixed)
            if d > h:
                h, family, via = d, fam, "heuristic+typos"
        if sentences is None:
            cut = spans() if spans is not None else sentence_spans(text)
            sentences = Sentences(text, cut, self._embedder.embed_spans(text, cut))
        s, sim_family = self._similarity(sentences)
        lex = self._lexicon.score(low, words) if self._lexicon is not None else 0.0
        # Noisy-or: similarity strengthens a weak cue, and so does the lexical score.
        both = round(1.0 - (1.0 - h) * (1.0 - s) * (1.0 - lex), 3)
        if s > h:
            family, via = sim_family, "similarity"
        elif s:
            via += "+similarity"
        if lex >= _LEX_NAMED and lex > max(h, s) and max(h, s) < _ON_ITS_OWN:
            return InjectionFinding(both, "learned", "lexicon" + f"+{via}" * bool(h or s))
        return InjectionFinding(both, family, via + "+lexicon" * (lex >= _LEX_NAMED))
