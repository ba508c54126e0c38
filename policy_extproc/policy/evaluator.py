"""Request context + snapshot -> decision, for the rules decided from the request alone.

Rules that need shared state (rate limits, budgets, approvals, breakers) are decided by the
enforcement layer, which adds its firings and calls ``combine`` again; everything here is pure.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from ..detect.patterns import Hit, PatternSet, merge_spans
from .compiler import EffectiveRule, EffectiveSet, Snapshot
from .decision import Decision, Fired, JsonPath, RequestContext, combine
from .model import ContentFilterRule, ModelAccessRule
from .privacy import scan_pii
from .semantic import scan_semantic

_MODEL_CACHE_LIMIT = 4096  # model names come from clients: bound what is remembered


class TextPart(Protocol):
    """A piece of prompt or output text and where it sits in the body (llm.request.PromptPart)."""

    @property
    def path(self) -> JsonPath: ...

    @property
    def text(self) -> str: ...


@dataclass(slots=True)
class Findings:
    """What the rules found in one request or response, accumulated during evaluation."""

    fired: list[Fired] = field(default_factory=list)
    # per part index: (start, end, replacement) in str offsets
    edits: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    redactions: dict[str, int] = field(default_factory=dict)

    def fire(self, e: EffectiveRule, action: str, reason: str, mode: str | None = None) -> None:
        """Record a firing; its mode is the policy's unless the rule says (compliance log)."""
        m = mode or e.policy.policy.mode
        self.fired.append(Fired(e.policy_name, e.rule.id, e.rule.type, action, reason, m))  # type: ignore[arg-type]

    def new_texts(self, parts: Sequence[TextPart]) -> dict[JsonPath, str]:
        """The rewritten text of every part that has edits (overlaps resolved, first wins)."""
        out: dict[JsonPath, str] = {}
        for i, edits in self.edits.items():
            text = parts[i].text
            pieces, pos = [], 0
            for start, end, repl in sorted(edits):
                if start < pos:  # overlaps one already replaced
                    if end > pos:
                        pos = end
                    continue
                pieces.append(text[pos:start])
                pieces.append(repl)
                pos = end
            pieces.append(text[pos:])
            out[parts[i].path] = "".join(pieces)
        return out


# -- model access ---------------------------------------------------------------------------


def _shown(model: str) -> str:
    """A client's model name as reasons quote it: bounded, whatever the client sent."""
    return repr(model if len(model) <= 80 else model[:77] + "...")


def _check_models(es: EffectiveSet, ctx: RequestContext, model: str, out: Findings) -> None:
    key = (model, ctx.roles)
    cached = es.model_cache.get(key)
    if cached is None:
        fired: list[tuple[EffectiveRule, str, str]] = []
        for e in es.rules_of("model_access"):
            rule: ModelAccessRule = e.rule  # type: ignore[assignment]
            if rule.roles is not None and not ctx.roles.intersection(rule.roles):
                continue
            if rule.deny_models and es.glob(rule.deny_models).fullmatch(model):
                fired.append((e, "block", f"model {_shown(model)} is denied"))
            elif rule.models is not None and rule.action == "block":
                if not model:
                    fired.append((e, "block", "the request names no model"))
                elif not es.glob(rule.models).fullmatch(model):
                    allowed = ", ".join(rule.models)
                    why = f"model {_shown(model)} is not allowed (allowed: {allowed})"
                    fired.append((e, "block", why))
        cached = tuple(fired)
        if len(es.model_cache) >= _MODEL_CACHE_LIMIT:
            es.model_cache.clear()
        es.model_cache[key] = cached
    # EffectiveSet.model_cache holds what this function put there.
    for e, action, reason in cast("tuple[tuple[EffectiveRule, str, str], ...]", cached):
        out.fire(e, action, reason)


# -- content filters --------------------------------------------------------------------------


class ScanText:
    """Parts joined into one UTF-8 buffer, so each pattern database scans once per request.

    The parts are joined with NUL, which no keyword, phrase (``\\s+``) or word character
    matches, so a hit does not run from one part into the next; a pattern that does match NUL
    (``.``, ``[^x]``) and crosses is caught by ``scan``, which then scans the parts one by one.
    """

    __slots__ = ("ascii", "data", "encoded", "parts", "starts")

    def __init__(self, parts: Sequence[TextPart]) -> None:
        self.parts = parts
        # A JSON body may hold lone surrogates ("\ud800"), which UTF-8 cannot encode: each
        # becomes "?", one byte for one character, so offsets still map back to the text.
        self.encoded = [p.text.encode("utf-8", "replace") for p in parts]
        self.ascii = [len(b) == len(p.text) for b, p in zip(self.encoded, parts, strict=True)]
        starts, pos = [], 0
        for b in self.encoded:
            starts.append(pos)
            pos += len(b) + 1
        self.starts = starts
        self.data = b"\0".join(self.encoded)

    def _crosses(self, hit: Hit) -> bool:
        i = bisect_right(self.starts, hit.start) - 1
        return hit.end > self.starts[i] + len(self.encoded[i])

    def scan(self, patterns: PatternSet) -> list[Hit]:
        """Every hit of ``patterns``, each inside one part, as byte spans of ``data``."""
        hits = patterns.scan(self.data)
        if len(self.encoded) > 1 and any(self._crosses(h) for h in hits):
            hits = []
            for base, raw in zip(self.starts, self.encoded, strict=True):
                hits.extend(Hit(h.tag, base + h.start, base + h.end) for h in patterns.scan(raw))
        return hits

    def locate(self, start: int, end: int) -> tuple[int, int, int]:
        """(part index, start, end) in str offsets of the part, for a byte span of ``data``."""
        i = bisect_right(self.starts, start) - 1
        base = self.starts[i]
        raw = self.encoded[i]
        s, e = start - base, min(end - base, len(raw))
        if not self.ascii[i]:
            s, e = len(raw[:s].decode(errors="ignore")), len(raw[:e].decode(errors="ignore"))
        return i, s, e


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
            rule: ContentFilterRule = cp.policy.rules[t.rule_index]  # type: ignore[assignment]
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
        merged = merge_spans(found_spans)
        repl = f"[REDACTED:{rule_id}]"
        for span_start, span_end in merged:
            i, start, end = text.locate(span_start, span_end)
            out.edits.setdefault(i, []).append((start, end, repl))
        out.redactions[rule_id] = out.redactions.get(rule_id, 0) + len(merged)
    where = "prompt" if direction == "request" else "response"
    # In the order of the rules in force; by the rules that matched, not all (thousands) of them.
    for key in sorted(labels, key=es.position.__getitem__):
        found = labels[key]
        e = es.rules[es.position[key]]
        rule = e.rule  # type: ignore[assignment]
        action = "block" if rule.action == "block" else "modify"
        verb = "matches" if action == "block" else "redacted"
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        out.fire(e, action, f"{where} {verb} {', '.join(found[:3])}{more} of rule '{e.rule.id}'")


# -- the request --------------------------------------------------------------------------------


def check_request(es: EffectiveSet, ctx: RequestContext) -> Findings:
    """Firings and rewrites of the rules decided from the request alone."""
    out = Findings()
    req = ctx.request
    if req is None:
        return out
    _check_models(es, ctx, req.model, out)
    scan_content(es, "request", req.parts, out)
    scan_pii(es, "request", req.parts, out)
    scan_semantic(es, "request", req.parts, out)
    return out


def check_response(es: EffectiveSet, parts: Sequence[TextPart]) -> Findings:
    """Firings and rewrites of the output guardrails (direction response or both)."""
    out = Findings()
    scan_content(es, "response", parts, out)
    scan_pii(es, "response", parts, out)
    scan_semantic(es, "response", parts, out)
    return out


def decide(es: EffectiveSet, ctx: RequestContext, out: Findings, **extra: object) -> Decision:
    """The decision for ``out``'s firings, with the prompt rewrites they ask for."""
    parts = ctx.request.parts if ctx.request is not None else ()
    return combine(
        out.fired,
        compliance=es.compliance,
        redactions=dict(out.redactions),
        new_texts=out.new_texts(parts) if out.edits else {},
        **extra,
    )


def evaluate(snapshot: Snapshot, ctx: RequestContext) -> Decision:
    """The decision of the request-only rules for ``ctx`` under ``snapshot``."""
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    return decide(es, ctx, check_request(es, ctx))
