"""``pii`` rules: a detector per rule built at load time, and their effect on one request.

A ``mask`` rule replaces each value in place (placeholder, partial, or keyed pseudonym); a
``block`` rule refuses the request. Only entity types and counts leave this module: the values
themselves never reach a reason, an audit record or a log line.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..detect.masking import replacement
from ..detect.pii import PiiDetector
from ..errors import PolicyError, Problem
from .model import PiiRule, Policy

if TYPE_CHECKING:
    from .compiler import EffectiveSet
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
        if not isinstance(rule, PiiRule):
            continue
        if rule.style == "hash" and hash_key() is None:
            problems.append(Problem(policy.file, rule.line, f"style 'hash' needs a key: set "
                                    f"{KEY_ENV} or {KEY_FILE_ENV}", policy.name, rule.index,
                                    rule.type))  # fmt: skip
            continue
        kwargs = {"allow": rule.allow, "min_score": rule.min_score}
        if rule.entities is not None:
            detectors[i] = PiiDetector(rule.entities, **kwargs)  # type: ignore[arg-type]
        else:
            detectors[i] = PiiDetector(**kwargs)  # type: ignore[arg-type]
    if problems:
        raise PolicyError(problems)
    return detectors


class JoinedText:
    """Parts joined with newlines, with the str offset where each part starts."""

    __slots__ = ("starts", "text")

    def __init__(self, parts: Sequence[TextPart]) -> None:
        starts, pos = [], 0
        for p in parts:
            starts.append(pos)
            pos += len(p.text) + 1
        self.starts = starts
        self.text = "\n".join(p.text for p in parts)

    def locate(self, start: int, end: int) -> tuple[int, int, int]:
        i = bisect_right(self.starts, start) - 1
        base = self.starts[i]
        return i, start - base, end - base


def scan_pii(es: EffectiveSet, direction: str, parts: Sequence[TextPart], out: Findings) -> None:
    """Run every applying ``pii`` rule of ``direction`` over ``parts``."""
    rules = [e for e in es.rules_of("pii") if e.rule.direction in (direction, "both")]  # type: ignore[attr-defined]
    if not rules or not parts:
        return
    joined = JoinedText(parts)
    where = "prompt" if direction == "request" else "response"
    key: bytes | None = None
    for e in rules:
        rule: PiiRule = e.rule  # type: ignore[assignment]
        matches = e.policy.pii[e.rule.index - 1].find(joined.text)
        if not matches:
            continue
        counts: dict[str, int] = {}
        for m in matches:
            counts[m.entity] = counts.get(m.entity, 0) + 1
        summary = ", ".join(f"{n} {entity}" for entity, n in counts.items())
        if rule.action == "block":
            out.fire(e, "block", f"{where} contains personal data ({summary})")
            continue
        out.fire(e, "modify", f"masked {summary} in the {where}")
        if e.policy.policy.mode != "enforce":
            continue  # shadow: say what would be masked, change nothing
        if rule.style == "hash" and key is None:
            key = hash_key()
        for m in matches:
            i, s, end = joined.locate(m.start, m.end)
            text = parts[i].text
            end = min(end, len(text))
            out.edits.setdefault(i, []).append(
                (s, end, replacement(m.entity, text[s:end], rule.style, key))
            )
            out.redactions[m.entity] = out.redactions.get(m.entity, 0) + 1
