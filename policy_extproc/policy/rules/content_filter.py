"""``content_filter``: keywords, regular expressions and named topics, in requests or answers.

Keywords, patterns and phrase topics join the policy's one pattern database per direction
(``pattern_specs``, compiled by ``policy.compiler``); topics with ``match: semantic`` build a
classifier (``build``) that the semantic pass runs (``rules.prompt_injection``), so that each
sentence is embedded once per model for all classifiers; ``model`` picks the topics' model
(``static``, the default, or ``multilingual``: ``detect.semantic.MODELS``). Reasons name
keywords and patterns by position, never by their text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from ...detect.joined import JoinedParts
from ...detect.patterns import merge_spans
from ...detect.semantic import MODELS, EmbedderError, TopicClassifier, TopicSpec
from ...detect.semantic.text import Sentences
from .. import fields as f
from ..compiler import EffectiveRule, EffectiveSet
from ..decision import RequestContext
from ..findings import Findings, TextPart
from ..model import PatternSpec, Policy, Rule, Secrets, SemanticTopic
from ..scan import ScanText
from ..semantic import build_error, models
from .kind import DIRECTION, Field, RuleKind


@dataclass(frozen=True, slots=True)
class ContentFilterRule(Rule):
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    topics: Mapping[str, tuple[str, ...] | SemanticTopic] = field(default_factory=dict)
    action: Literal["block", "redact"] = "block"
    direction: Literal["request", "response", "both"] = "request"
    case_sensitive: bool = False
    whole_words: bool = True
    model: Literal["static", "multilingual"] = "static"  # its semantic topics' (MODELS)

    type = "content_filter"

    def reads(self, direction: str) -> bool:
        return self.direction in (direction, "both")

    def pattern_specs(self, direction: str) -> Iterator[PatternSpec]:
        if not self.reads(direction):
            return
        # Labels name keywords and patterns by position, never by their text: for a keyword,
        # the text is what was matched, and reasons go into audit records and spans.
        cs, ww = self.case_sensitive, self.whole_words
        for n, kw in enumerate(self.keywords, 1):
            yield PatternSpec(kw, "literal", cs, ww, f"keyword #{n}")
        for n, rx in enumerate(self.patterns, 1):
            yield PatternSpec(rx, "regex", cs, False, f"pattern #{n}")
        for topic, phrases in self.topics.items():
            for phrase in phrases:  # a semantic topic has none (model.SemanticTopic)
                # A literal: the engine matches its spaces against any run of white space.
                yield PatternSpec(phrase, "literal", cs, ww, f"topic {topic!r}")

    @property
    def semantic_topics(self) -> list[TopicSpec]:
        return [TopicSpec(name, t.examples, t.threshold) for name, t in self.topics.items()
                if isinstance(t, SemanticTopic)]  # fmt: skip

    def build(self, policy: Policy, secrets: Secrets) -> TopicClassifier | None:
        """The classifier of its semantic topics, if it has any."""
        specs = self.semantic_topics
        if not specs:
            return None
        try:
            given = models(policy, self, secrets)
            return TopicClassifier(given.embedder(MODELS[self.model]), specs,
                                   one_blas_thread=given.one_blas_thread())  # fmt: skip
        except EmbedderError as exc:
            raise build_error(policy, self, exc) from exc

    def by_meaning(self, direction: str) -> bool:
        return self.reads(direction) and bool(self.semantic_topics)

    @property
    def reads_response(self) -> bool:
        return self.direction != "request"


def _check(r: ContentFilterRule) -> str | None:
    if not (r.keywords or r.patterns or r.topics):
        return "needs at least one of 'keywords', 'patterns' or 'topics'"
    if r.model != "static" and not r.semantic_topics:
        return f"'model: {r.model}' applies to topics with match: semantic, and it has none"
    return None


def scan_content(
    es: EffectiveSet, direction: str, parts: Sequence[TextPart], out: Findings
) -> None:
    """Run every applying content_filter rule of ``direction`` over ``parts``."""
    policies = es.content[direction]
    if not policies or not parts:
        return
    text = ScanText(parts)
    labels: dict[tuple[int, int], list[str]] = {}
    spans: dict[str, list[tuple[int, int]]] = {}  # rule id -> byte spans to redact
    for cp in policies:
        patterns = cp.request_patterns if direction == "request" else cp.response_patterns
        targets = cp.request_targets if direction == "request" else cp.response_targets
        assert patterns is not None
        for hit in text.scan(patterns):
            t = targets[hit.tag]
            key = (cp.index, t.rule_index)
            if key not in es.active:
                continue  # overridden by a more specific policy
            rule = cp.policy.rules[t.rule_index]
            assert isinstance(rule, ContentFilterRule)
            seen = labels.setdefault(key, [])
            if t.label not in seen:
                seen.append(t.label)
            # A log-mode policy records what it would redact (in ``fired``) and rewrites nothing.
            if rule.action == "redact" and cp.policy.mode == "enforce":
                spans.setdefault(rule.id, []).append((hit.start, hit.end))
    if not labels:
        return
    # A regex reports every end of a match (\d+ on "123": 0-1, 0-2, 0-3) and patterns of one
    # rule may overlap: redact (and count) each merged span once. Active rule ids are unique.
    for rule_id, found_spans in spans.items():
        repl = f"[REDACTED:{rule_id}]"
        # The same match seen in the joined and in the apart view is one redaction.
        located = dict.fromkeys(tuple(text.locate(*span)) for span in merge_spans(found_spans))
        for pieces in located:
            # The replacement goes where the match starts; the rest of a match that runs into
            # the next parts of its group is cut from them.
            for n, (i, start, end) in enumerate(pieces):
                out.edits.setdefault(i, []).append((start, end, repl if n == 0 else ""))
        out.redactions[rule_id] = out.redactions.get(rule_id, 0) + len(located)
    where = "prompt" if direction == "request" else "response"
    # In the order of the rules in force; by the rules that matched, not all (thousands) of them.
    for key in sorted(labels, key=es.position.__getitem__):
        found = labels[key]
        e = es.rules[es.position[key]]
        filtered = e.rule
        assert isinstance(filtered, ContentFilterRule)
        action = "block" if filtered.action == "block" else "modify"
        verb = "matches" if action == "block" else "redacted"
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        out.fire(e, action, f"{where} {verb} {', '.join(found[:3])}{more} of rule '{e.rule.id}'")


def scan_topics(e: EffectiveRule, direction: str, canon: JoinedParts,
                of: Callable[[int], Sentences], out: Findings) -> None:  # fmt: skip
    """A rule's semantic topics over the parts' canonical forms (``canon``; ``of``: a part's
    sentences, embedded once per part), each part's verdict remembered by its text."""
    rule, clf = e.rule, e.built
    assert isinstance(rule, ContentFilterRule) and isinstance(clf, TopicClassifier)
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


def _request(es: EffectiveSet, ctx: RequestContext, out: Findings) -> None:
    if ctx.request is not None:
        scan_content(es, "request", ctx.request.parts, out)


def _response(es: EffectiveSet, parts: Sequence[TextPart], out: Findings) -> None:
    scan_content(es, "response", parts, out)


KIND = RuleKind(
    ContentFilterRule,
    {
        "keywords": Field(f.string_list()),
        "patterns": Field(f.string_list(f.regex)),
        "topics": Field(f.topics),
        "action": Field(f.one_of("block", "redact")),
        "direction": Field(DIRECTION),
        "case_sensitive": Field(f.boolean),
        "whole_words": Field(f.boolean),
        # One model for all the rule's semantic topics: they are each other's neighbours.
        "model": Field(f.one_of(*MODELS)),
    },
    check=_check,
    check_request=_request,
    check_response=_response,
)
