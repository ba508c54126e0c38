"""``pii`` rules: a detector per rule built at load time, and their effect on one request.

A ``mask`` rule replaces each value in place (placeholder, partial, or keyed pseudonym); a
``block`` rule refuses the request. Only entity types and counts leave this module: the values
themselves never reach a reason, an audit record or a log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..detect.joined import JoinedParts
from ..detect.masking import replacement
from ..detect.pii import PiiDetector
from ..errors import PolicyError, Problem
from .compliance import PACKS
from .model import ComplianceRule, PiiRule, Policy

if TYPE_CHECKING:
    from .compiler import EffectiveRule, EffectiveSet
    from .evaluator import Findings, TextPart

KEY_ENV = "POLICY_EXTPROC_PII_HASH_KEY"
KEY_FILE_ENV = "POLICY_EXTPROC_PII_HASH_KEY_FILE"


def hash_key() -> bytes | None:
    """The pseudonym key, from a file (Kubernetes secret volume) or the environment."""
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        with open(path, "rb") as f:
            return f.read().strip() or None
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else None


def build_detectors(policy: Policy) -> Mapping[int, PiiDetector]:
    """One detector per ``pii`` rule of ``policy``, keyed by the rule's 0-based index."""
    detectors: dict[int, PiiDetector] = {}
    problems = []
    for i, rule in enumerate(policy.rules):
        if isinstance(rule, ComplianceRule):
            pack = PACKS[rule.framework]
            if pack.entities:
                detectors[i] = PiiDetector(pack.entities)
            continue
        if not isinstance(rule, PiiRule):
            continue
        if rule.style == "hash" and hash_key() is None:
            problems.append(Problem(policy.file, rule.line, f"style 'hash' needs a key: set "
                                    f"{KEY_ENV} or {KEY_FILE_ENV}", policy.name, rule.index,
                                    rule.type))  # fmt: skip
            continue
        kwargs = {"allow": rule.allow, "min_score": rule.min_score}
        if rule.regions is not None:
            kwargs["regions"] = rule.regions
        if rule.entities is not None:
            detectors[i] = PiiDetector(rule.entities, **kwargs)  # type: ignore[arg-type]
        else:
            detectors[i] = PiiDetector(**kwargs)  # type: ignore[arg-type]
    if problems:
        raise PolicyError(problems)
    return detectors


class JoinedText(JoinedParts):
    """The parts' canonical text for the detectors: a join group back to back (the provider
    concatenates it), other parts apart by a newline; matches map back to the original parts."""

    def __init__(self, parts: Sequence[TextPart]) -> None:
        super().__init__([p.text for p in parts], [getattr(p, "group", -1) for p in parts], "\n")


def scan_pii(es: EffectiveSet, direction: str, parts: Sequence[TextPart], out: Findings) -> None:
    """Run every applying ``pii`` rule of ``direction`` over ``parts``."""
    rules = [e for e in es.rules_of("pii") if e.rule.direction in (direction, "both")]  # type: ignore[attr-defined]
    # Compliance packs mask their data types in both directions (policy/compliance.py).
    rules += [e for e in es.rules_of("compliance") if e.rule.index - 1 in e.policy.pii]
    if not rules or not parts:
        return
    joined = JoinedText(parts)
    where = "prompt" if direction == "request" else "response"
    key: bytes | None = None
    for e in rules:
        rule = _as_pii(e.rule)
        mode = _mode(e)
        matches = e.policy.pii[e.rule.index - 1].find(joined.text)
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
        if rule.style == "hash" and key is None:
            key = hash_key()
        for m in matches:
            # The mask is made from the canonical value (a fullwidth U+FF20 is read as "@", so
            # a partial mask keeps "@example.org"; two spellings of one address get one
            # pseudonym). It replaces the original span where the value starts; the rest of a
            # value that runs into the next parts of its group is cut from them.
            mask = replacement(m.entity, joined.text[m.start : m.end], rule.style, key)
            for n, (i, s, end) in enumerate(joined.pieces(m.start, m.end)):
                out.edits.setdefault(i, []).append((s, end, mask if n == 0 else ""))
            out.redactions[m.entity] = out.redactions.get(m.entity, 0) + 1


def _as_pii(rule: object) -> PiiRule:
    """A compliance pack behaves as a placeholder-masking pii rule over its data types."""
    if isinstance(rule, ComplianceRule):
        entities = PACKS[rule.framework].entities
        return PiiRule(id=rule.id, index=rule.index, line=rule.line, final=rule.final,
                       entities=entities, direction="both")  # fmt: skip
    assert isinstance(rule, PiiRule)
    return rule


def _mode(e: EffectiveRule) -> str:
    """Shadow when the policy is in log mode, or the compliance rule itself says ``mode: log``."""
    if e.policy.policy.mode == "log" or getattr(e.rule, "mode", "enforce") == "log":
        return "log"
    return "enforce"
