"""PII detection (DESIGN.md section 6): one Hyperscan pass for candidates, then cheap validators.

Every enabled pattern is compiled into one database per detector. A scan reports each candidate
once per possible end, with its leftmost start (``HS_FLAG_SOM_LEFTMOST``); for each start the
longest end that validates wins. A candidate then has to stand apart from its neighbours (not
be one piece of a longer token such as a UUID or a version), pass its validator (a checksum, a
number plan, a calendar), and score at least ``min_score`` once context words are weighed.
Overlaps between types are settled last: the higher score, then the longer span. A value found
once is then found wherever else it occurs, so that masking never leaves a copy behind.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
import string
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import hyperscan

from policy_extproc.detect import pii_validators as v
from policy_extproc.detect import pii_wallets as w
from policy_extproc.detect.masking import mask

__all__ = ["ENTITIES", "PiiDetector", "PiiMatch", "mask"]

ENTITIES: tuple[str, ...] = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN",
    "IP_ADDRESS",
    "US_PASSPORT",
    "US_DRIVER_LICENSE",
    "DATE_OF_BIRTH",
    "US_BANK_ROUTING",
    "US_ITIN",
    "UK_NHS",
    "CRYPTO_WALLET",
    "API_SECRET",
)


@dataclass(frozen=True, slots=True)
class _Rule:
    """One candidate pattern of one type, with the check and scores that make it a match."""

    entity: str
    pattern: str  # Hyperscan syntax, ASCII only
    check: Callable[[str], bool]
    base: float  # score of a valid value with no context word before it
    context: float  # score with one
    max_len: int  # longer candidates are rejected, so max_match_len is a true bound
    guarded: bool = True  # demoted right after a negative word ("order", "version")
    joiners: str = "-./"  # glue the match to a neighbour when an alphanumeric follows them
    caseless: bool = False
    # Characters the start extends left over after the scan. The mail pattern starts at "@":
    # a leading unbounded class would make Hyperscan track a start at every letter.
    left: frozenset[str] = frozenset()


# fmt: off
# Context words, as regular-expression fragments matched as whole words in lower case.
_CONTEXT: dict[str, tuple[str, ...]] = {
    "EMAIL": ("e-?mail", "mail", "contact"),
    "PHONE": (r"phone", "tel", "telephone", "mobile", "cell", "call", "text me", "sms", "fax",
              "whatsapp", "contact", "reach", r"ph\.?", r"mob\.?"),
    "CREDIT_CARD": ("cards?", "credit", "debit", "visa", "master ?card", "amex",
                    "american express", "discover", "cc", "pan", "pay", "paid", "payment",
                    "charge"),
    "US_SSN": ("ssn", "ss#", "social security( number| no\\.?)?"),
    "IBAN": ("iban", "account", "bank", "transfer", "wire"),
    "IP_ADDRESS": ("ip", "ipv4", "ipv6", "address", "host", "server", "client"),
    "US_PASSPORT": ("passport( number| no\\.?| #)?",),
    "US_DRIVER_LICENSE": ("driver'?s?'? licen[cs]e", "driving licen[cs]e", "dl", "dl#", "dln",
                          "licen[cs]e (number|no\\.?|#)", "lic\\.? ?(no\\.?|#)"),
    "DATE_OF_BIRTH": ("dob", r"d\.o\.b\.?", "date of birth", "birth ?date", "born( on| in)?",
                      "birthday", "b-?day"),
    "US_BANK_ROUTING": ("routing", "aba", "rtn", "transit", "routing (number|no\\.?|#)"),
    "US_ITIN": ("itin", "taxpayer", "tax id", "tin", "individual taxpayer identification"),
    "UK_NHS": ("nhs", "national health service", "nhs (number|no\\.?|#)"),
    "CRYPTO_WALLET": ("bitcoin", "btc", "wallet", "ethereum", "eth", "address", "crypto",
                      "send", "usdt", "usdc"),
    "API_SECRET": ("key", "token", "secret", "api", "bearer", "password", "credential"),
}
# Words that name something else when they stand just before a number.
_NEGATIVE = ("order", "orders", "invoice", "inv", "ref", "reference", "tracking", "ticket",
             "transaction", "txn", "sku", "po", "receipt", "confirmation", "booking", "case",
             "build", "version", "ver", "v", "release", "firmware", "patch", "section",
             "chapter", "step", "serial", "model", "part", "isbn", "item", "product")

_LOCAL_PART = frozenset(string.ascii_letters + string.digits + "._%+-")
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_B58 = "[1-9A-HJ-NP-Za-km-z]"


def _key(mixed_case: bool) -> Callable[[str], bool]:
    return partial(v.is_random_token, mixed_case=mixed_case)


_r = _Rule


def _secret(pattern: str, check: Callable[[str], bool], base: float, max_len: int) -> _Rule:
    # A provider key says what it is: no context needed, none of the "order" demotion.
    return _Rule("API_SECRET", pattern, check, base, 0.99, max_len, guarded=False, joiners="-_.")


def _always(_value: str) -> bool:
    return True


_US_PHONE = partial(v.is_phone, region="US")
_INTL_PHONE = partial(v.is_phone, region=None)
_DATE, _DL = v.is_birth_date, v.is_driver_license
_RULES: tuple[_Rule, ...] = (
    _r("EMAIL", r"@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b", v.is_email, 0.95, 0.95, 254,
       guarded=False, joiners="-", left=_LOCAL_PART),
    _r("PHONE", r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}\b", _INTL_PHONE, 0.8, 0.95, 32),
    _r("PHONE", r"(?:\b1[ .-]?)?(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b", _US_PHONE,
       0.7, 0.95, 18),
    _r("PHONE", r"\b1?\d{10}\b", _US_PHONE, 0.3, 0.85, 11),
    _r("CREDIT_CARD", r"\b(?:\d[ -]?){12,18}\d\b", v.is_credit_card, 0.9, 0.98, 23),
    _r("US_SSN", r"\b\d{3}-\d{2}-\d{4}\b", v.is_us_ssn, 0.85, 0.95, 11),
    _r("US_SSN", r"\b\d{3} \d{2} \d{4}\b", v.is_us_ssn, 0.6, 0.95, 11),
    _r("US_SSN", r"\b\d{9}\b", v.is_us_ssn, 0.3, 0.85, 9),
    _r("US_ITIN", r"\b\d{3}-\d{2}-\d{4}\b", v.is_us_itin, 0.85, 0.95, 11),
    _r("US_ITIN", r"\b\d{3} \d{2} \d{4}\b", v.is_us_itin, 0.6, 0.95, 11),
    _r("US_ITIN", r"\b\d{9}\b", v.is_us_itin, 0.3, 0.85, 9),
    _r("IBAN", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", v.is_iban,
       0.95, 0.98, 42, guarded=False),
    _r("IP_ADDRESS", r"\b(?:\d{1,3}\.){3}\d{1,3}\b", v.is_ipv4, 0.85, 0.95, 15, joiners="."),
    _r("IP_ADDRESS", r"(?:[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}",
       v.is_ipv6, 0.85, 0.95, 45, joiners="."),
    _r("US_PASSPORT", r"\b(?:[A-Za-z]\d{8}|\d{9})\b", v.is_us_passport, 0.0, 0.85, 9),
    # State formats are too many to tell apart without context: shapes that cover them.
    _r("US_DRIVER_LICENSE", r"\b[A-Za-z]{0,2}\d{5,14}\b", _DL, 0.0, 0.8, 16),
    _r("US_DRIVER_LICENSE", r"\b[A-Za-z]-?\d{3}(?:-\d{1,4}){2,4}\b", _DL, 0.0, 0.8, 20),
    _r("US_DRIVER_LICENSE", r"\b\d{2,3} \d{3} \d{3}\b", _DL, 0.0, 0.8, 11),
    _r("US_DRIVER_LICENSE", r"\b\d{2}[A-Za-z]{3}\d{5}\b", _DL, 0.0, 0.8, 10),
    _r("DATE_OF_BIRTH", r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b", _DATE, 0.0, 0.85, 10),
    _r("DATE_OF_BIRTH", r"\b\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})\b", _DATE, 0.0, 0.85, 10),
    _r("DATE_OF_BIRTH", rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", _DATE,
       0.0, 0.85, 24, caseless=True),
    _r("DATE_OF_BIRTH", rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}\b",
       _DATE, 0.0, 0.85, 27, caseless=True),
    _r("DATE_OF_BIRTH", rf"\b\d{{1,2}}-{_MONTH}-\d{{4}}\b", _DATE, 0.0, 0.85, 17, caseless=True),
    _r("US_BANK_ROUTING", r"\b\d{9}\b", v.is_aba_routing, 0.2, 0.9, 9),
    _r("UK_NHS", r"\b\d{3} \d{3} \d{4}\b", v.is_uk_nhs, 0.6, 0.95, 12),
    _r("UK_NHS", r"\b\d{3}-\d{3}-\d{4}\b", v.is_uk_nhs, 0.3, 0.9, 12),
    _r("UK_NHS", r"\b\d{10}\b", v.is_uk_nhs, 0.2, 0.9, 10),
    _r("CRYPTO_WALLET", rf"\b[13]{_B58}{{25,34}}\b", w.is_btc_base58, 0.95, 0.98, 35,
       guarded=False),
    _r("CRYPTO_WALLET", r"\b(?:bc1|BC1)[02-9ac-hj-np-zAC-HJ-NP-Z]{6,87}\b", w.is_btc_bech32,
       0.95, 0.98, 90, guarded=False),
    _r("CRYPTO_WALLET", r"\b0x[0-9a-fA-F]{40}\b", w.is_eth_address, 0.9, 0.98, 42,
       guarded=False),
    _secret(r"\bsk-[A-Za-z0-9]{48}\b", _key(True), 0.95, 51),
    _secret(r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}\b", _key(True), 0.95, 300),
    _secret(r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{40,}\b", _key(True), 0.95, 300),
    _secret(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", _always, 0.95, 20),
    _secret(r"\bgh[pousr]_[A-Za-z0-9]{36}\b", _key(True), 0.95, 40),
    _secret(r"\bgithub_pat_[A-Za-z0-9_]{50,}\b", _key(True), 0.95, 120),
    _secret(r"\bxox[bpars]-[A-Za-z0-9-]{10,}\b", _key(False), 0.9, 200),
    _secret(r"\b[sr]k_live_[A-Za-z0-9]{20,}\b", _key(True), 0.95, 120),
    _secret(r"\bAIza[A-Za-z0-9_-]{35}", _key(True), 0.95, 39),
    _secret(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\b", v.is_jwt, 0.9, 8192),
    # The body may hold single dashes (PEM headers) but never the "-----" of an END line.
    _secret(r"-----BEGIN[A-Z ]{0,20}PRIVATE KEY-----(?:[^-]|-[^-])+"
            r"-----END[A-Z ]{0,20}PRIVATE KEY-----", _always, 0.99, 8192),
)
# fmt: on


# Context words are looked for this many characters before a candidate; negative words (order,
# invoice, version) only this close, since they label the number right after them.
_CONTEXT_WINDOW = 48
_NEGATIVE_WINDOW = 24
# A candidate right after a negative word is more likely an order or version number than PII.
_NEGATIVE_FACTOR = 0.4
# The nearer the context word, the surer: when two types both find one, the nearest wins.
_DISTANCE_PENALTY = 0.005
# Ends tried per candidate start, longest first, before giving up on that start.
_MAX_ENDS = 4


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One PII value found: its type, where it is (str indices, end exclusive), how sure."""

    entity: str
    start: int
    end: int
    score: float


def _words(fragments: Iterable[str]) -> re.Pattern[str]:
    return re.compile(r"(?<![\w'])(?:" + "|".join(fragments) + r")(?![\w'])")


# One search per candidate start finds the context words of every type at once (longest
# fragments first, so "routing number" is read as one word); which types a word belongs to is
# worked out once per distinct word.
_ANY_CONTEXT = _words(sorted({f for ws in _CONTEXT.values() for f in ws}, key=len, reverse=True))
_CONTEXT_OF = {e: re.compile("|".join(ws)) for e, ws in _CONTEXT.items()}
_WORD_TYPES: dict[str, tuple[str, ...]] = {}
_NEGATIVE_RE = _words(_NEGATIVE)


def _types_of(word: str) -> tuple[str, ...]:
    types = _WORD_TYPES.get(word)
    if types is None:
        types = _WORD_TYPES[word] = tuple(e for e, r in _CONTEXT_OF.items() if r.fullmatch(word))
    return types


@dataclass(frozen=True, slots=True)
class _Context:
    """What precedes a candidate: distance to the nearest context word of each type."""

    nearest: dict[str, int]
    negative: bool

    @classmethod
    def before(cls, text: str, start: int) -> _Context:
        # snake_case keys of JSON or key=value data ("date_of_birth") count as words.
        window = text[max(0, start - _CONTEXT_WINDOW) : start].lower().replace("_", " ")
        nearest: dict[str, int] = {}
        for m in _ANY_CONTEXT.finditer(window):
            for entity in _types_of(m.group()):
                nearest[entity] = len(window) - m.end()  # later words overwrite: the nearest
        # The lookbehind of _words still sees before pos, so a cut word never matches.
        negative = _NEGATIVE_RE.search(window, max(0, len(window) - _NEGATIVE_WINDOW)) is not None
        return cls(nearest, negative)

    def score(self, rule: _Rule) -> float:
        distance = self.nearest.get(rule.entity)
        if distance is not None:
            return rule.context - _DISTANCE_PENALTY * distance
        return rule.base * _NEGATIVE_FACTOR if rule.guarded and self.negative else rule.base


def _stands_apart(text: str, start: int, end: int, joiners: str) -> bool:
    """True unless the candidate continues into a neighbouring word or token."""
    if start:
        before = text[start - 1]
        if before.isalnum() or before == "_":
            return False
        if before in joiners and start >= 2 and text[start - 2].isalnum():
            return False
    if end < len(text):
        after = text[end]
        if after.isalnum() or after == "_":
            return False
        if after in joiners and end + 1 < len(text) and text[end + 1].isalnum():
            return False
    return True


def _extend_left(text: str, start: int, chars: frozenset[str], limit: int = 64) -> int:
    stop = max(0, start - limit)
    while start > stop and text[start - 1] in chars:
        start -= 1
    while start < len(text) and text[start] == ".":  # a local part never starts with a dot
        start += 1
    return start


class PiiDetector:
    """Finds PII of the enabled types in text; built once per rule set, thread-safe to call."""

    def __init__(
        self,
        entities: Iterable[str] = ENTITIES,
        *,
        allow: Sequence[str] = (),
        min_score: float = 0.5,
    ) -> None:
        wanted = tuple(dict.fromkeys(entities))
        unknown = [e for e in wanted if e not in ENTITIES]
        if unknown:
            raise ValueError(
                f"unknown PII entity {', '.join(map(repr, unknown))}; "
                f"expected any of {', '.join(ENTITIES)}"
            )
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be between 0 and 1, got {min_score}")
        self.entities: tuple[str, ...] = wanted
        self.min_score = min_score
        self._allow = (
            re.compile("|".join(fnmatch.translate(g) for g in allow), re.IGNORECASE)
            if allow
            else None
        )
        # Rules that could never reach min_score, even with context, are not compiled at all.
        rules = [r for r in _RULES if r.entity in wanted and max(r.base, r.context) >= min_score]
        # Several types share a pattern (nine bare digits: SSN, ITIN, passport, routing); each
        # distinct pattern is compiled once and fans out to every rule that uses it.
        by_pattern: dict[tuple[str, bool], list[_Rule]] = {}
        for rule in rules:
            by_pattern.setdefault((rule.pattern, rule.caseless), []).append(rule)
        self._rules: tuple[tuple[_Rule, ...], ...] = tuple(tuple(rs) for rs in by_pattern.values())
        self.max_match_len: int = max((r.max_len for r in rules), default=0)
        self._db: hyperscan.Database | None = None
        if by_pattern:
            flags = hyperscan.HS_FLAG_SOM_LEFTMOST
            self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            self._db.compile(
                expressions=[p.encode("ascii") for p, _ in by_pattern],
                ids=list(range(len(by_pattern))),
                elements=len(by_pattern),
                flags=[flags | (hyperscan.HS_FLAG_CASELESS if c else 0) for _, c in by_pattern],
            )
        # Hyperscan scratch space may not be shared by concurrent scans: one per thread.
        self._local = threading.local()

    def _scratch(self) -> hyperscan.Scratch:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        return scratch

    def find(self, text: str) -> list[PiiMatch]:
        """Every PII value in text, sorted by start, non-overlapping."""
        if self._db is None or not text:
            return []
        # Patterns are ASCII. Encoding each non-ASCII code point as one "?" keeps byte offsets
        # equal to str indices (no UTF-8 offset mapping), survives lone surrogates, and changes
        # no match: "?" is, like any UTF-8 byte above 0x7f, outside every class the patterns use.
        data = text.encode("ascii", "replace")
        ends: dict[tuple[int, int], list[int]] = {}

        def on_match(pid: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            ends.setdefault((pid, start), []).append(end)

        self._db.scan(data, match_event_handler=on_match, scratch=self._scratch())
        contexts: dict[int, _Context] = {}
        found: list[PiiMatch] = []
        for (pid, start), stops in ends.items():
            for rule in self._rules[pid]:
                first = _extend_left(text, start, rule.left) if rule.left else start
                if first == start and rule.left:
                    continue
                score = rule.base
                if rule.context != rule.base or rule.guarded:
                    context = contexts.get(first)
                    if context is None:
                        context = contexts[first] = _Context.before(text, first)
                    score = context.score(rule)
                if score >= self.min_score:
                    match = self._validate(text, rule, first, stops, score)
                    if match is not None:
                        found.append(match)
        return _repeat(text, _resolve(found))

    def _validate(
        self, text: str, rule: _Rule, start: int, stops: list[int], score: float
    ) -> PiiMatch | None:
        for end in sorted(stops, reverse=True)[:_MAX_ENDS]:
            if end - start > rule.max_len or not _stands_apart(text, start, end, rule.joiners):
                continue
            value = text[start:end]
            if rule.check(value) and not self._allowed(rule.entity, value):
                return PiiMatch(rule.entity, start, end, round(score, 3))
        return None

    def _allowed(self, entity: str, value: str) -> bool:
        if self._allow is None:
            return False
        if self._allow.match(value):
            return True
        return entity in v.GROUPED and self._allow.match(v.compact(value)) is not None


def _resolve(found: list[PiiMatch]) -> list[PiiMatch]:
    """Keep the best of overlapping matches: higher score, then longer, then earlier."""
    if len(found) < 2:
        return found
    kept: list[PiiMatch] = []  # sorted by start, never overlapping
    starts: list[int] = []
    for m in sorted(found, key=lambda m: (-m.score, m.start - m.end, m.start)):
        i = bisect.bisect_right(starts, m.start)
        if (i and kept[i - 1].end > m.start) or (i < len(kept) and kept[i].start < m.end):
            continue
        kept.insert(i, m)
        starts.insert(i, m.start)
    return kept


def _repeat(text: str, kept: list[PiiMatch]) -> list[PiiMatch]:
    """Add other occurrences of each value found, so that one value is masked everywhere.

    Context can demote one occurrence ("order (212) 555-0173") that another shows to be PII
    ("call (212) 555-0173"); leaving the first unmasked would leak the value all the same.
    """
    values = {text[m.start : m.end]: m for m in kept}
    if len(values) == 0 or sum(text.count(value) for value in values) == len(kept):
        return kept
    extra = []
    for value, m in values.items():
        at = text.find(value)
        while at != -1:
            end = at + len(value)
            if _stands_apart(text, at, end, ""):
                extra.append(PiiMatch(m.entity, at, end, m.score))
            at = text.find(value, end)
    return _resolve(kept + extra)
