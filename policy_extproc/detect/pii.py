"""PII detection (DESIGN.md section 6): one Hyperscan pass for candidates, then cheap validators.

Every enabled pattern (``pii_rules``) is compiled into one database per detector. A scan
reports each candidate once per possible end, with its leftmost start
(``HS_FLAG_SOM_LEFTMOST``); for each start the longest end that validates wins. A candidate
then has to stand apart from its neighbours (not be one piece of a longer token such as a UUID
or a version), pass its validator (a checksum, a number plan, a calendar), and score at least
``min_score`` once the words before it are weighed (``pii_context``). Mail addresses in other
scripts come from a second, "@"-anchored pass (``pii_email``). Overlaps between types are
settled last: the higher score, then the longer span. A value found once is then found
wherever else it occurs, so that masking never leaves a copy behind.

Every step is linear in the text: a bounded amount of work per candidate, no rescans of the
text per value found (a body of 150,000 addresses costs about ten times one of 15,000).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import hyperscan
import phonenumbers

from policy_extproc.detect import pii_email, pii_phones
from policy_extproc.detect import pii_validators as v
from policy_extproc.detect.masking import mask
from policy_extproc.detect.pii_context import Context
from policy_extproc.detect.pii_rules import DEFAULT_REGIONS, RULES, Rule
from policy_extproc.detect.scratch import ScratchPool

__all__ = ["DEFAULT_REGIONS", "ENTITIES", "PiiDetector", "PiiMatch", "mask"]

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

# Ends tried per candidate start, longest first, before giving up on that start.
_MAX_ENDS = 4
# A candidate's key packs its start and its pattern's index (fewer than 2**8 patterns).
_PID_BITS = 8
_PID_MASK = (1 << _PID_BITS) - 1
# Up to this many distinct values found, their other occurrences are searched with str.find
# (C speed, a bounded number of passes: still linear); above, among the scan's candidates.
_FEW_VALUES = 8
_EMAIL_SCORE = 0.95
_EMAIL_JOINERS = "-"


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One PII value found: its type, where it is (str indices, end exclusive), how sure."""

    entity: str
    start: int
    end: int
    score: float


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


def _in_digit_run(text: str, start: int, end: int) -> bool:
    """True when a digit group sits one separator (or a clock's ":") before or after the span."""
    if start >= 2 and text[start - 1] in " -.:" and text[start - 2].isdigit():
        return True
    return end + 1 < len(text) and text[end] in " -.:" and text[end + 1].isdigit()


def _extend_left(text: str, start: int, chars: str, limit: int = 64) -> int:
    before = text[max(0, start - limit) : start]
    first = start - (len(before) - len(before.rstrip(chars)))
    while first < start and text[first] == ".":  # a local part never starts with a dot
        first += 1
    return first


def _regions(regions: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(r.upper() for r in regions))
    unknown = [r for r in wanted if r not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        raise ValueError(
            f"unknown phone region {', '.join(map(repr, unknown))}; expected ISO 3166 "
            "alpha-2 codes that libphonenumber knows, such as US, GB, DE"
        )
    if not wanted:
        raise ValueError("regions must name at least one region")
    return wanted


def _bind(rule: Rule, regions: tuple[str, ...], latest_year: int) -> Rule:
    """The rule with its phone checks bound to the detector's regions, its calendar checks to
    the latest year a birth date may lie in."""
    if rule.entity == "PHONE" and rule.loose is not None:
        possible: Callable[[str], bool] = partial(pii_phones.is_possible_phone, regions=regions)
        rule = replace(rule, loose=possible)
    if rule.regional:
        rule = replace(rule, check=partial(rule.check, regions=regions))
    if rule.dated:
        rule = replace(rule, check=partial(rule.check, latest_year=latest_year))
    return rule


class PiiDetector:
    """Finds PII of the enabled types in text; built once per rule set, thread-safe to call.

    ``latest_birth_year``: the current year, handed in by whoever builds the detector (the
    core reads no clock): a date in a later year is no birth date. None: not known, so no
    year is too late (such a date is masked rather than let through).
    """

    def __init__(
        self,
        entities: Iterable[str] = ENTITIES,
        *,
        allow: Sequence[str] = (),
        min_score: float = 0.5,
        regions: Iterable[str] = DEFAULT_REGIONS,
        latest_birth_year: int | None = None,
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
        self.regions: tuple[str, ...] = _regions(regions)
        self.latest_birth_year = latest_birth_year
        self._allow = (
            re.compile("|".join(fnmatch.translate(g) for g in allow), re.IGNORECASE)
            if allow
            else None
        )
        self._unicode_mail = "EMAIL" in wanted and min_score <= _EMAIL_SCORE
        # Rules that could never reach min_score, even with context, are not compiled at all.
        latest = v.ANY_YEAR if latest_birth_year is None else latest_birth_year
        rules = [
            _bind(r, self.regions, latest)
            for r in RULES
            if r.entity in wanted and max(r.base, r.context) >= min_score
        ]
        # Several types share a pattern (nine bare digits: SSN, ITIN, passport, routing); each
        # distinct pattern is compiled once and fans out to every rule that uses it.
        by_pattern: dict[tuple[str, bool], list[Rule]] = {}
        for rule in rules:
            by_pattern.setdefault((rule.pattern, rule.caseless), []).append(rule)
        self._rules: tuple[tuple[Rule, ...], ...] = tuple(tuple(rs) for rs in by_pattern.values())
        self.max_match_len: int = max((r.max_len for r in rules), default=0)
        self._db: ScratchPool | None = None
        assert len(by_pattern) <= _PID_MASK + 1, "candidate keys hold 8 bits of pattern index"
        if by_pattern:
            flags = hyperscan.HS_FLAG_SOM_LEFTMOST
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(
                expressions=[p.encode("ascii") for p, _ in by_pattern],
                ids=list(range(len(by_pattern))),
                elements=len(by_pattern),
                flags=[flags | (hyperscan.HS_FLAG_CASELESS if c else 0) for _, c in by_pattern],
            )
            # Hyperscan scratch space may not be shared by concurrent scans: a pool of them.
            self._db = ScratchPool(db)

    def find(self, text: str) -> list[PiiMatch]:
        """Every PII value in text, sorted by start, non-overlapping."""
        if self._db is None or not text:
            return []
        # Patterns are ASCII. Encoding each non-ASCII code point as one "?" keeps byte offsets
        # equal to str indices (no UTF-8 offset mapping), survives lone surrogates, and changes
        # no match: "?" is, like any UTF-8 byte above 0x7f, outside every class the patterns use.
        data = text.encode("ascii", "replace")
        # Candidate ends by (start, pattern), packed in one int: one small object an event,
        # not a tuple and a list (a PII-dense body has hundreds of thousands).
        ends: dict[int, int | list[int]] = {}

        def on_match(pid: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            key = start << _PID_BITS | pid
            got = ends.get(key)
            if got is None:
                ends[key] = end
            elif isinstance(got, int):
                ends[key] = [got, end]
            else:
                got.append(end)

        self._db.scan(data, on_match)
        contexts: dict[int, Context] = {}
        found: list[PiiMatch] = []
        firsts: dict[int, int] = {}  # where a left-extended candidate begins
        # Candidates that became no match: where a copy of a value found elsewhere may hide.
        missed: list[int] = []
        for key, got in ends.items():
            pid, start = key & _PID_MASK, key >> _PID_BITS
            stops = [got] if isinstance(got, int) else sorted(got, reverse=True)
            matched = False
            for rule in self._rules[pid]:
                first = start
                if rule.left:
                    first = firsts[key] = _extend_left(text, start, rule.left)
                    if first == start:
                        continue
                # Cheap shape tests first: most candidates are pieces of longer tokens.
                fits = [
                    e
                    for e in stops[:_MAX_ENDS]
                    if e - first <= rule.max_len
                    and _stands_apart(text, first, e, rule.joiners)
                    and not (rule.digit_run and _in_digit_run(text, first, e))
                ]
                if not fits:
                    continue
                context = None
                score = rule.base
                if rule.context != rule.base or rule.guarded:
                    context = contexts.get(first)
                    if context is None:
                        context = contexts[first] = Context.before(text, first)
                    score = context.score(rule)
                if score >= self.min_score:
                    loose = rule.loose is not None and context is not None and context.named(rule)
                    match = self._validate(text, rule, first, fits, score, loose)
                    if match is not None:
                        found.append(match)
                        matched = True
            if not matched:
                missed.append(key)
        if self._unicode_mail and not text.isascii():
            found.extend(self._unicode_emails(text))
        kept = _resolve(found)
        return _repeat(text, kept, ends, missed, firsts)

    def _validate(
        self, text: str, rule: Rule, start: int, stops: list[int], score: float, loose: bool
    ) -> PiiMatch | None:
        for end in stops:
            value = text[start:end]
            if rule.check(value) or (loose and rule.loose(value)):  # type: ignore[misc]
                if self._allowed(rule.entity, value):
                    return None
                return PiiMatch(rule.entity, start, end, round(score, 3))
        return None

    def _unicode_emails(self, text: str) -> list[PiiMatch]:
        out = []
        for start, end in pii_email.candidates(text):
            value = text[start:end]
            if (
                _stands_apart(text, start, end, _EMAIL_JOINERS)
                and v.is_email(value)
                and not self._allowed("EMAIL", value)
            ):
                out.append(PiiMatch("EMAIL", start, end, _EMAIL_SCORE))
        return out

    def _allowed(self, entity: str, value: str) -> bool:
        if self._allow is None:
            return False
        if self._allow.match(value):
            return True
        return entity in v.GROUPED and self._allow.match(v.compact(value)) is not None


def _resolve(found: list[PiiMatch]) -> list[PiiMatch]:
    """Keep the best of overlapping matches: higher score, then longer, then earlier.

    Matches are swept in order of start into clusters of overlapping ones; a lone match is
    kept as it is, a cluster is settled on its own (``_settle``). Each match costs its own
    length, so the whole is linear in the text (a sorted list with inserts was quadratic).
    """
    if len(found) < 2:
        return found
    found = sorted(found, key=_start)  # nearly sorted already: the scan reports by end
    kept: list[PiiMatch] = []
    cluster = [found[0]]
    reach = found[0].end
    for m in found[1:]:
        if m.start < reach:
            cluster.append(m)
            reach = max(reach, m.end)
            continue
        kept.extend(cluster if len(cluster) == 1 else _settle(cluster, reach))
        cluster, reach = [m], m.end
    kept.extend(cluster if len(cluster) == 1 else _settle(cluster, reach))
    return kept


def _start(m: PiiMatch) -> int:
    return m.start


def _settle(cluster: list[PiiMatch], reach: int) -> list[PiiMatch]:
    """The greedy choice in one cluster, over a map of the characters already taken."""
    base = cluster[0].start
    taken = bytearray(reach - base)
    kept = []
    for m in sorted(cluster, key=lambda m: (-m.score, m.start - m.end, m.start)):
        s, e = m.start - base, m.end - base
        if taken.find(1, s, e) != -1:
            continue
        taken[s:e] = b"\x01" * (e - s)
        kept.append(m)
    kept.sort(key=_start)
    return kept


def _repeat_few(text: str, kept: list[PiiMatch], values: dict[str, PiiMatch]) -> list[PiiMatch]:
    if sum(text.count(value) for value in values) == len(kept):
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


def _repeat(
    text: str,
    kept: list[PiiMatch],
    ends: dict[int, int | list[int]],
    missed: list[int],
    firsts: dict[int, int],
) -> list[PiiMatch]:
    """Add other occurrences of each value found, so that one value is masked everywhere.

    Context can demote one occurrence ("order (212) 555-0173") that another shows to be PII
    ("call (212) 555-0173"); leaving the first unmasked would leak the value all the same.
    Another occurrence of a value is another candidate of the same pattern ending where it
    ends, one that became no match (a candidate that did is covered already): those are
    looked up in a table of the values found, by end and length (the candidate's leftmost
    start may lie before the value, "1 " or "+" before a number). No search of the text per
    value.
    """
    if not kept:
        return kept
    values = {text[m.start : m.end]: m for m in kept}
    if len(values) <= _FEW_VALUES:
        return _repeat_few(text, kept, values)
    lengths = sorted({m.end - m.start for m in kept})
    at = {(m.start, m.end) for m in kept}
    extra = []
    for key in missed:
        got = ends[key]
        stops = [got] if isinstance(got, int) else got
        first = firsts.get(key)
        for end in stops:
            if first is not None:  # the start is the pattern's own (a mail's local part)
                if (first, end) in at:
                    continue
                starts: Iterable[int] = (first,)
            else:
                starts = (end - n for n in lengths if end - n >= key >> _PID_BITS)
            for s in starts:
                if (s, end) in at:
                    continue
                m = values.get(text[s:end])
                if m is not None and _stands_apart(text, s, end, ""):
                    extra.append(PiiMatch(m.entity, s, end, m.score))
                    at.add((s, end))
    if not extra:
        return kept
    return _resolve(kept + extra)
