"""``pii``: personal data of the 14 types of DESIGN.md s6, masked or refused.

A detector per rule is built at load time (``build``). A ``mask`` rule replaces each value in
place (placeholder, partial, or keyed pseudonym); a ``block`` rule refuses the request. Only
entity types and counts leave this module: the values never reach a reason, an audit record
or a log line. Compliance packs with data types mask them through the same scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ...detect.characters import tags_only
from ...detect.masking import replacement
from ...detect.pii import DEFAULT_REGIONS, ENTITIES, PiiDetector
from ...errors import PolicyError, Problem
from .. import fields as f
from ..compiler import EffectiveRule, EffectiveSet
from ..compliance import PACKS
from ..decision import RequestContext
from ..findings import Findings, TextPart
from ..model import Policy, Rule, Secrets
from ..privacy import KEY_ENV, KEY_FILE_ENV, JoinedText
from .compliance import ComplianceRule
from .kind import DIRECTION, Field, RuleKind


@dataclass(frozen=True, slots=True)
class PiiRule(Rule):
    entities: tuple[str, ...] | None = None
    action: Literal["mask", "block"] = "mask"
    style: Literal["placeholder", "partial", "hash"] = "placeholder"
    allow: tuple[str, ...] = ()
    direction: Literal["request", "response", "both"] = "both"
    min_score: float = 0.5
    # Regions whose national formats (no "+") are phone numbers; None: the detector's default.
    regions: tuple[str, ...] | None = None

    type = "pii"

    def build(self, policy: Policy, secrets: Secrets) -> Masking:
        key = None
        if self.style == "hash":
            # Handed in by the edge that compiles (sources.secrets): never read on the way.
            key = secrets.pii_hash_key
            if key is None:
                raise PolicyError([Problem(policy.file, self.line, "style 'hash' needs a key: set "
                                           f"{KEY_ENV} or {KEY_FILE_ENV}", policy.name,
                                           self.index, self.type)])  # fmt: skip
        entities = ENTITIES if self.entities is None else self.entities
        regions = DEFAULT_REGIONS if self.regions is None else self.regions
        detector = PiiDetector(entities, allow=self.allow, min_score=self.min_score,
                               regions=regions, latest_birth_year=secrets.year)  # fmt: skip
        return Masking(detector, key)

    @property
    def reads_response(self) -> bool:
        return self.direction != "request"


@dataclass(frozen=True, slots=True)
class Masking:
    """What a ``pii`` rule builds: its detector, and the pseudonym key of ``style: hash``."""

    detector: PiiDetector
    key: bytes | None = None


def _masking(e: EffectiveRule) -> Masking | None:
    built = e.built
    if isinstance(built, PiiDetector):  # a compliance pack: placeholders, no key
        return Masking(built)
    return built if isinstance(built, Masking) else None


def detector_of(e: EffectiveRule) -> PiiDetector | None:
    """The detector a ``pii`` or ``compliance`` rule built (None: a pack without data types)."""
    masking = _masking(e)
    return masking.detector if masking is not None else None


def scan_pii(es: EffectiveSet, direction: str, parts: Sequence[TextPart], out: Findings) -> None:
    """Run every applying ``pii`` rule of ``direction`` over ``parts``."""
    rules: list[EffectiveRule] = [
        e for e in es.rules_of(PiiRule) if e.rule.direction in (direction, "both")
    ]
    # Compliance packs mask their data types in both directions (policy/compliance.py).
    rules += [e for e in es.rules_of(ComplianceRule) if detector_of(e) is not None]
    if not rules or not parts:
        return
    views = [JoinedText(parts)]
    # What the parts say in Unicode tag characters (which the canonical form removes), read
    # as the ASCII they mirror, as a model reads it: personal data written in them is found
    # there, at the tags' own offsets; everything visible is blank in that view.
    hidden = [tags_only(p.text) for p in parts]
    if any(h is not None for h in hidden):
        views.append(JoinedText(parts, [h or "" for h in hidden]))
    where = "prompt" if direction == "request" else "response"
    for e in rules:
        rule = _as_pii(e.rule)
        mode = _mode(e)
        masking = _masking(e)
        assert masking is not None
        found = [(joined, m) for joined in views for m in masking.detector.find(joined.text)]
        matches = [m for _, m in found]
        if not matches:
            continue
        counts: dict[str, int] = {}
        for m in matches:
            counts[m.entity] = counts.get(m.entity, 0) + 1
        summary = ", ".join(f"{n} {entity}" for entity, n in counts.items())
        if rule.action == "block":
            out.fire(e, "block", f"{where} contains personal data ({summary})", mode)
            continue
        out.fire(e, "modify", f"masked {summary} in the {where}", mode)
        if mode != "enforce":
            continue  # shadow: say what would be masked, change nothing
        for joined, m in found:
            # The mask is made from the canonical value (a fullwidth U+FF20 is read as "@", so
            # a partial mask keeps "@example.org"; two spellings of one address get one
            # pseudonym). It replaces the original span where the value starts; the rest of a
            # value that runs into the next parts of its group is cut from them.
            mask = replacement(m.entity, joined.text[m.start : m.end], rule.style, masking.key)
            for n, (i, s, end) in enumerate(joined.pieces(m.start, m.end)):
                out.edits.setdefault(i, []).append((s, end, mask if n == 0 else ""))
            out.redactions[m.entity] = out.redactions.get(m.entity, 0) + 1


def _as_pii(rule: Rule) -> PiiRule:
    """A compliance pack behaves as a placeholder-masking pii rule over its data types."""
    if isinstance(rule, ComplianceRule):
        entities = PACKS[rule.framework].entities
        return PiiRule(id=rule.id, index=rule.index, line=rule.line, final=rule.final,
                       entities=entities, direction="both")  # fmt: skip
    assert isinstance(rule, PiiRule)
    return rule


def _mode(e: EffectiveRule) -> Literal["enforce", "log"]:
    """Shadow when the policy is in log mode, or the compliance rule itself says ``mode: log``."""
    rule = e.rule
    if e.policy.policy.mode == "log" or (isinstance(rule, ComplianceRule) and rule.mode == "log"):
        return "log"
    return "enforce"


def _request(es: EffectiveSet, ctx: RequestContext, out: Findings) -> None:
    if ctx.request is not None:
        scan_pii(es, "request", ctx.request.parts, out)


def _response(es: EffectiveSet, parts: Sequence[TextPart], out: Findings) -> None:
    scan_pii(es, "response", parts, out)


KIND = RuleKind(
    PiiRule,
    {
        "entities": Field(f.string_list(f.one_of(*ENTITIES))),
        "action": Field(f.one_of("mask", "block")),
        "style": Field(f.one_of("placeholder", "partial", "hash")),
        "allow": Field(f.string_list(allow_empty=True)),
        "direction": Field(DIRECTION),
        "min_score": Field(f.fraction),
        "regions": Field(f.string_list(f.phone_region)),
    },
    check_request=_request,
    check_response=_response,
)
