"""``prompt_injection``: prompt injection and jailbreaks (OWASP LLM01), in the prompt's parts
(tool results and documents included) and, with ``direction`` response or both, in the answer.

Its check is the semantic pass: each part's sentences are embedded once and given to the
injection detector and to the semantic topics of ``content_filter`` rules. A rule with
``action: log``, or any rule of a ``mode: log`` policy, records the would-be decision (with its
score) in shadow mode: audited, not enforced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from ...detect.characters import read_tags
from ...detect.joined import JoinedParts
from ...detect.reading import reading_text
from ...detect.semantic import (
    SENSITIVITY,
    Embedder,
    EmbedderError,
    InjectionDetector,
    TopicClassifier,
)
from ...detect.semantic.injection import InjectionFinding
from ...detect.semantic.text import Sentences, Span, sentence_spans
from .. import fields as f
from ..compiler import EffectiveRule, EffectiveSet
from ..decision import RequestContext
from ..findings import Findings, TextPart
from ..model import Policy, Rule, Secrets
from ..semantic import build_error, groups, models, where
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
            return models(policy, self, secrets).injection()
        except EmbedderError as exc:
            raise build_error(policy, self, exc) from exc

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
    # The parts' reading forms (detect/reading: look-alikes and zero-width tricks undone, words
    # of other scripts kept readable), computed once per check for both classifiers.
    canon = JoinedParts([p.text for p in parts], (), "\n", reading=True)
    texts = canon.forms
    # Each part's sentences are cut once for both classifiers, and embedded once per model.
    cut: list[list[Span] | None] = [None] * len(parts)
    sentences: dict[tuple[str, int], Sentences] = {}  # (model name, part) -> its sentences

    def spans_of(i: int) -> list[Span]:
        s = cut[i]
        if s is None:
            s = cut[i] = sentence_spans(texts[i])
        return s

    def of(embedder: Embedder, i: int) -> Sentences:
        # Embedded with a topic rule's model (static or multilingual: a rule's ``model``).
        s = sentences.get((embedder.name, i))
        if s is None:
            spans = spans_of(i)
            vectors = embedder.embed_spans(texts[i], spans)
            s = sentences[embedder.name, i] = Sentences(texts[i], spans, vectors)
        return s

    if injection:
        _injection(injection, direction, parts, texts, spans_of, out)
    for e in topical:
        assert isinstance(e.built, TopicClassifier)
        scan_topics(e, direction, canon, partial(of, e.built.embedder), out)


def _injection(rules: list[EffectiveRule], direction: str, parts: Sequence[TextPart],
               texts: Sequence[str], spans_of: Callable[[int], list[Span]],
               out: Findings) -> None:  # fmt: skip
    found_by = rules[0].built  # one detector per process: every rule's is this one
    assert isinstance(found_by, InjectionDetector)
    best = None
    for first, end in groups(parts):
        part = parts[first]
        if end - first == 1:
            if not texts[first].strip():
                continue
            found = found_by.score(texts[first], spans=partial(spans_of, first))
        else:  # text the provider joins: an instruction split between two blocks is one
            found = found_by.score("".join(texts[first:end]))
        # Tag characters, which the reading form removes, read as the ASCII they mirror: what
        # the model reads of an instruction smuggled in them.
        smuggled = read_tags("".join(p.text for p in parts[first:end]))
        if smuggled is not None:
            hidden = found_by.score(reading_text(smuggled))
            if hidden.score > found.score:
                found = InjectionFinding(hidden.score, "encoding", f"tag characters+{hidden.via}")
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
