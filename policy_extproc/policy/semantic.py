"""``prompt_injection`` rules and semantic topics of ``content_filter``: built at compile time,
applied to one request's parts or one answer.

Compile time loads the shipped model once per process and embeds every semantic topic's
examples once per policy; request time embeds each part's sentences once and gives them to
both classifiers. Reasons name the signal or topic and its score, never the text. A rule with
``action: log``, or any rule of a ``mode: log`` policy, records the would-be decision (with its
score) in shadow mode: audited, not enforced.

Both classifiers read the canonical form of each part (``detect/canonical``: NFKC, ignorables
removed, confusables folded), the same text the other content filters match, so an instruction
spelt with Cyrillic look-alikes or zero-width characters reads as the model reads it; a topic
redaction is mapped back to the original span.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from ..detect.joined import JoinedParts
from ..detect.semantic import (
    SENSITIVITY,
    EmbedderError,
    InjectionDetector,
    TopicClassifier,
    TopicSpec,
    load_embedder,
)
from ..detect.semantic.injection import MODEL as INJECTION_MODEL
from ..detect.semantic.text import Sentences, embed_sentences
from ..errors import PolicyError, Problem
from .model import ContentFilterRule, Policy, PromptInjectionRule, SemanticTopic

if TYPE_CHECKING:
    from .compiler import EffectiveRule, EffectiveSet
    from .evaluator import Findings, TextPart

_DETECTOR: InjectionDetector | None = None
_DETECTOR_LOCK = threading.Lock()


def _detector() -> InjectionDetector:
    """One detector per process: the exemplar library does not depend on the policy."""
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None:
            _DETECTOR = InjectionDetector(load_embedder(INJECTION_MODEL))
        return _DETECTOR


@dataclass(frozen=True, slots=True)
class SemanticRules:
    """A policy's semantic classifiers: the detector if it has a prompt_injection rule, and
    per content_filter rule (0-based index) with semantic topics, its classifier."""

    injection: InjectionDetector | None
    topics: Mapping[int, TopicClassifier]


def build_semantic(policy: Policy) -> SemanticRules | None:
    """The classifiers of ``policy``; None when it has no semantic rule (the common case)."""
    wants_injection = any(isinstance(r, PromptInjectionRule) for r in policy.rules)
    specs: dict[int, list[TopicSpec]] = {}
    for i, rule in enumerate(policy.rules):
        if isinstance(rule, ContentFilterRule):
            for name, topic in rule.topics.items():
                if isinstance(topic, SemanticTopic):
                    specs.setdefault(i, []).append(TopicSpec(name, topic.examples, topic.threshold))
    if not wants_injection and not specs:
        return None
    try:
        detector = _detector() if wants_injection else None
        # Topics' model, loaded only for a policy with semantic topics.
        topics = {i: TopicClassifier(load_embedder(), s) for i, s in specs.items()}
    except EmbedderError as exc:
        rule = next(r for r in policy.rules if isinstance(r, PromptInjectionRule)
                    or (isinstance(r, ContentFilterRule) and r.index - 1 in specs))  # fmt: skip
        raise PolicyError([Problem(policy.file, rule.line, f"semantic guards: {exc}",
                                   policy.name, rule.index, rule.type)]) from exc  # fmt: skip
    return SemanticRules(detector, topics)


def _where(part: TextPart, direction: str) -> str:
    if direction == "response":
        return "the response"
    role = getattr(part, "role", "")
    return "a tool result" if role == "tool" else f"a {role} message" if role else "the prompt"


def scan_semantic(
    es: EffectiveSet, direction: str, parts: Sequence[TextPart], out: Findings
) -> None:
    """Run the applying prompt_injection rules and semantic topics of ``direction``."""
    rules = es.semantic[direction]
    if not rules or not parts:
        return
    injection = [e for e in rules if e.rule.type == "prompt_injection"]
    topical = [e for e in rules if e.rule.type == "content_filter"]
    # The canonical forms the content filters computed for these parts (computed once per
    # request: detect/joined remembers the last parts' forms).
    canon = JoinedParts([p.text for p in parts], (), "\n")
    texts = canon.forms
    sentences: list[Sentences | None] = [None] * len(parts)

    def of(i: int) -> Sentences:
        s = sentences[i]
        if s is None:
            s = sentences[i] = embed_sentences(load_embedder(), texts[i])
        return s

    if injection:
        _injection(injection, direction, parts, texts, of, out)
    for e in topical:
        _topics(e, direction, canon, of, out)


def _groups(parts: Sequence[TextPart]) -> list[tuple[int, int]]:
    """(first, end) index ranges of parts: runs of one ``group`` (llm.request.PromptPart: the
    text blocks of one message), others alone."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(parts):
        group = getattr(parts[i], "group", -1)
        j = i + 1
        while group != -1 and j < len(parts) and getattr(parts[j], "group", -1) == group:
            j += 1
        out.append((i, j))
        i = j
    return out


def _injection(rules: list[EffectiveRule], direction: str, parts: Sequence[TextPart],
               texts: Sequence[str], of: Callable[[int], Sentences],
               out: Findings) -> None:  # fmt: skip
    detector = _detector()
    best = None
    for first, end in _groups(parts):
        part = parts[first]
        if end - first == 1:
            if not texts[first].strip():
                continue
            found = detector.score(texts[first])
        else:  # text the provider joins: an instruction split between two blocks is one
            found = detector.score("".join(texts[first:end]))
        if best is None or found.score > best[0].score:
            best = (found, part)
    if best is None:
        return
    found, part = best
    for e in rules:
        rule: PromptInjectionRule = e.rule  # type: ignore[assignment]
        if found.score < SENSITIVITY[rule.sensitivity]:
            continue
        reason = (f"prompt injection suspected in {_where(part, direction)}: {found.family} "
                  f"(score {found.score:.2f}, {found.via}, sensitivity {rule.sensitivity}) "
                  f"of rule '{rule.id}'")  # fmt: skip
        out.fire(e, "block", reason, "log" if rule.action == "log" else None)


def _topics(e: EffectiveRule, direction: str, canon: JoinedParts,
            of: Callable[[int], Sentences], out: Findings) -> None:  # fmt: skip
    assert e.policy.semantic is not None
    clf = e.policy.semantic.topics[e.rule.index - 1]
    rule: ContentFilterRule = e.rule  # type: ignore[assignment]
    best: dict[int, float] = {}
    redact = rule.action == "redact" and e.policy.policy.mode == "enforce"
    for i, back in enumerate(canon.maps):
        for k, score, (start, end) in clf.hits_in(canon.forms[i], partial(of, i)):
            best[k] = max(score, best.get(k, 0.0))
            if redact:  # the sentence's span in the part as sent (None: the form is the text)
                span = back.span(start, end) if back is not None else (start, end)
                out.edits.setdefault(i, []).append((*span, f"[REDACTED:{rule.id}]"))
                out.redactions[rule.id] = out.redactions.get(rule.id, 0) + 1
    if not best:
        return
    where = "prompt" if direction == "request" else "response"
    named = sorted(best.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"topic {clf.names[k]!r} (score {s:.2f})" for k, s in named[:3])
    more = f" and {len(named) - 3} more" if len(named) > 3 else ""
    action = "block" if rule.action == "block" else "modify"
    verb = "matches" if action == "block" else "redacted"
    out.fire(e, action, f"{where} {verb} {shown}{more} by meaning, of rule '{rule.id}'")
