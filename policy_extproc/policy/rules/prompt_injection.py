"""``prompt_injection``: prompt injection and jailbreaks (OWASP LLM01), in the prompt's parts
(tool results and documents included) and, with ``direction`` response or both, in the answer.

Its check is the semantic pass: each part's sentences are embedded once and given to the
injection detector and to the semantic topics of ``content_filter`` rules. A rule with
``action: log``, or any rule of a ``mode: log`` policy, records the would-be decision (with its
score) in shadow mode: audited, not enforced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ...detect.joined import JoinedParts
from ...detect.semantic import SENSITIVITY, EmbedderError, InjectionDetector, load_embedder
from ...detect.semantic.text import Sentences, embed_sentences
from ...errors import PolicyError, Problem
from .. import fields as f
from ..compiler import EffectiveRule, EffectiveSet
from ..decision import RequestContext
from ..findings import Findings, TextPart
from ..model import Policy, Rule, Secrets
from ..semantic import detector, groups, where
from .content_filter import ContentFilterRule, scan_topics
from .kind import DIRECTION, Field, RuleKind


@dataclass(frozen=True, slots=True)
class PromptInjectionRule(Rule):
    action: Literal["block", "log"] = "block"
    sensitivity: Literal["low", "medium", "high"] = "medium"
    direction: Literal["request", "response", "both"] = "request"

    type = "prompt_injection"

    def build(self, policy: Policy, secrets: Secrets) -> InjectionDetector:
        try:
            return detector()
        except EmbedderError as exc:
            raise PolicyError([Problem(policy.file, self.line, f"semantic guards: {exc}",
                                       policy.name, self.index, self.type)]) from exc  # fmt: skip

    def by_meaning(self, direction: str) -> bool:
        return self.direction in (direction, "both")

    @property
    def reads_response(self) -> bool:
        return self.direction != "request"


def scan_semantic(
    es: EffectiveSet, direction: str, parts: Sequence[TextPart], out: Findings
) -> None:
    """Run the applying prompt_injection rules and semantic topics of ``direction``."""
    rules = es.semantic[direction]
    if not rules or not parts:
        return
    injection = [e for e in rules if isinstance(e.rule, PromptInjectionRule)]
    topical = [e for e in rules if isinstance(e.rule, ContentFilterRule)]
    # The canonical forms the content filters computed for these parts (computed once per
    # request: detect/joined remembers the last parts' forms).
    canon = JoinedParts([p.text for p in parts], (), "\n")
    texts = canon.forms
    sentences: list[Sentences | None] = [None] * len(parts)

    def of(i: int) -> Sentences:
        # Embedded with the topics' model (loaded only for a policy with semantic topics).
        s = sentences[i]
        if s is None:
            s = sentences[i] = embed_sentences(load_embedder(), texts[i])
        return s

    if injection:
        _injection(injection, direction, parts, texts, out)
    for e in topical:
        scan_topics(e, direction, canon, of, out)


def _injection(rules: list[EffectiveRule], direction: str, parts: Sequence[TextPart],
               texts: Sequence[str], out: Findings) -> None:  # fmt: skip
    found_by = detector()
    best = None
    for first, end in groups(parts):
        part = parts[first]
        if end - first == 1:
            if not texts[first].strip():
                continue
            found = found_by.score(texts[first])
        else:  # text the provider joins: an instruction split between two blocks is one
            found = found_by.score("".join(texts[first:end]))
        if best is None or found.score > best[0].score:
            best = (found, part)
    if best is None:
        return
    found, part = best
    for e in rules:
        rule = e.rule
        assert isinstance(rule, PromptInjectionRule)
        if found.score < SENSITIVITY[rule.sensitivity]:
            continue
        reason = (f"prompt injection suspected in {where(part, direction)}: {found.family} "
                  f"(score {found.score:.2f}, {found.via}, sensitivity {rule.sensitivity}) "
                  f"of rule '{rule.id}'")  # fmt: skip
        out.fire(e, "block", reason, "log" if rule.action == "log" else None)


def _request(es: EffectiveSet, ctx: RequestContext, out: Findings) -> None:
    if ctx.request is not None:
        scan_semantic(es, "request", ctx.request.parts, out)


def _response(es: EffectiveSet, parts: Sequence[TextPart], out: Findings) -> None:
    scan_semantic(es, "response", parts, out)


KIND = RuleKind(
    PromptInjectionRule,
    {
        "action": Field(f.one_of("block", "log")),
        "sensitivity": Field(f.one_of("low", "medium", "high")),
        "direction": Field(DIRECTION),
    },
    check_request=_request,
    check_response=_response,
)
