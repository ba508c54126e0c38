"""Request context + snapshot -> decision, for the rules decided from the request alone.

Rules that need shared state (rate limits, budgets, approvals, breakers) are checked by the
enforcement layer, whose ``StateOutcome`` ``decide`` takes; everything here is pure.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from ..detect.joined import JoinedParts
from ..detect.patterns import Hit, PatternSet, merge_spans
from ..llm import model_names
from .compiler import EffectiveRule, EffectiveSet, Snapshot
from .decision import NO_STATE, Decision, Fired, JsonPath, RequestContext, StateOutcome, combine
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


def _check_models(es: EffectiveSet, ctx: RequestContext, out: Findings) -> None:
    """Allow and deny lists against the model the request is judged as (``ctx.model``).

    That name is canonical and, for an Azure deployment, the deployment's model (context.py);
    deny lists also see the model's other spellings, allow lists only the canonical name.
    """
    req = ctx.request
    deployment = req.deployment if req is not None else None
    model = ctx.model
    if not model and req is not None:  # a context built by hand, without a catalog
        model = model_names.canonical(deployment if deployment is not None else req.model)
    key = (model, deployment, ctx.roles)
    cached = es.model_cache.get(key)
    if cached is None:
        shown = _shown(model)
        if deployment is not None:
            shown = f"{shown} (deployment {_shown(deployment)})"
        fired: list[tuple[EffectiveRule, str, str]] = []
        for e in es.rules_of("model_access"):
            rule: ModelAccessRule = e.rule  # type: ignore[assignment]
            roles = e.policy.roles.get(rule.index - 1)
            if roles is not None and not ctx.roles.intersection(roles):
                continue
            if rule.deny_models and es.matches_model(rule.deny_models, model, any_spelling=True):
                fired.append((e, "block", f"model {shown} is denied"))
            elif rule.models is not None and rule.action == "block":
                if not model:
                    fired.append((e, "block", "the request names no model"))
                elif not es.matches_model(rule.models, model):
                    allowed = ", ".join(rule.models)
                    why = f"model {shown} is not allowed (allowed: {allowed})"
                    fired.append((e, "block", why))
        cached = tuple(fired)
        if len(es.model_cache) >= _MODEL_CACHE_LIMIT:
            es.model_cache.clear()
        es.model_cache[key] = cached
    # EffectiveSet.model_cache holds what this function put there.
    for e, action, reason in cast("tuple[tuple[EffectiveRule, str, str], ...]", cached):
        out.fire(e, action, reason)


# -- content filters --------------------------------------------------------------------------


def groups_of(parts: Sequence[TextPart]) -> list[int]:
    """Each part's join group (``PromptPart.group``; a part without one stands alone)."""
    return [getattr(p, "group", -1) for p in parts]


class ScanText:
    """The parts' canonical text in one UTF-8 buffer, so each pattern database scans once.

    Matching is on the canonical form (``detect/canonical.py``: NFKC, no zero-width characters,
    look-alikes folded) and every hit is mapped back to the original text of its part(s). Parts
    of one join group are back to back (the provider concatenates them); other parts are kept
    apart by NUL, which no keyword, phrase (``\\s+``) or word character matches and which the
    canonical form never holds, so a hit does not run from one into the next; a pattern that
    does match NUL (``.``, ``[^x]``) and crosses is caught by ``scan``, which then scans the
    joined runs one by one.
    """

    __slots__ = ("apart", "ascii", "bstarts", "data", "encoded", "joined", "marks")

    MARK_BYTES = 512  # a non-ASCII run's byte -> character checkpoints, this far apart

    def __init__(self, parts: Sequence[TextPart]) -> None:
        texts = [p.text for p in parts]
        self.joined = joined = JoinedParts(texts, groups_of(parts), "\0")
        runs = list(joined.runs)
        # Joined, "a" + "confidential" reads "aconfidential": whole words would miss a keyword
        # standing at the edge of a part. So when parts are joined, each part is scanned on its
        # own too (after the joined runs): a match in either view counts (fail closed).
        self.apart: JoinedParts | None = None
        if len(runs) < len(texts):
            self.apart = JoinedParts(texts, [-1] * len(texts), "\0")
            runs += self.apart.runs
        # A JSON body may hold lone surrogates ("\ud800"), which UTF-8 cannot encode: each
        # becomes "?", one byte for one character, so offsets still map back to the text.
        self.encoded = [r.encode("utf-8", "replace") for r in runs]
        self.ascii = [len(b) == len(r) for b, r in zip(self.encoded, runs, strict=True)]
        bstarts, pos = [], 0
        for b in self.encoded:
            bstarts.append(pos)
            pos += len(b) + 1
        self.bstarts = bstarts
        self.data = b"\0".join(self.encoded)
        # Per non-ASCII run, built when a hit in it is first located: (byte, chars before it)
        # checkpoints, so mapping a hit decodes at most MARK_BYTES, not the run up to it (a
        # text with many hits was quadratic).
        self.marks: dict[int, tuple[list[int], list[int]]] = {}

    def _chars(self, k: int, b: int) -> int:
        """The characters of run ``k`` before its byte offset ``b``."""
        raw = self.encoded[k]
        marks = self.marks.get(k)
        if marks is None:
            at, chars = [0], [0]
            pos, count = 0, 0
            while pos + self.MARK_BYTES < len(raw):
                nxt = pos + self.MARK_BYTES
                while raw[nxt] & 0xC0 == 0x80:  # a continuation byte: back to its lead byte
                    nxt -= 1
                count += len(raw[pos:nxt].decode(errors="ignore"))
                pos = nxt
                at.append(pos)
                chars.append(count)
            marks = self.marks[k] = (at, chars)
        at, chars = marks
        i = bisect_right(at, b) - 1
        return chars[i] + len(raw[at[i] : b].decode(errors="ignore"))

    def _crosses(self, hit: Hit) -> bool:
        k = bisect_right(self.bstarts, hit.start) - 1
        return hit.end > self.bstarts[k] + len(self.encoded[k])

    def scan(self, patterns: PatternSet) -> list[Hit]:
        """Every hit of ``patterns``, each inside one joined run, as byte spans of ``data``."""
        hits = patterns.scan(self.data, canonical=True)
        if len(self.encoded) > 1 and any(self._crosses(h) for h in hits):
            hits = []
            for base, raw in zip(self.bstarts, self.encoded, strict=True):
                hits.extend(
                    Hit(h.tag, base + h.start, base + h.end)
                    for h in patterns.scan(raw, canonical=True)
                )
        return hits

    def locate(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(part index, start, end) in str offsets of the original parts, for a byte span of
        ``data``: one piece per part the span covers (a match may run over a join)."""
        k = bisect_right(self.bstarts, start) - 1
        base = self.bstarts[k]
        raw = self.encoded[k]
        s, e = start - base, min(end - base, len(raw))
        if not self.ascii[k]:
            s, e = self._chars(k, s), self._chars(k, e)
        view, n = self.joined, len(self.joined.runs)
        if k >= n:
            assert self.apart is not None
            view, k = self.apart, k - n
        offset = view.segments[k][0]
        return view.pieces(offset + s, offset + e)


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
    _check_models(es, ctx, out)
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


def decide(
    es: EffectiveSet, ctx: RequestContext, out: Findings, state: StateOutcome = NO_STATE
) -> Decision:
    """The decision for ``out``'s firings and the stateful checks' ``state``, with the prompt
    rewrites they ask for."""
    parts = ctx.request.parts if ctx.request is not None else ()
    return combine(
        out.fired,
        compliance=es.compliance,
        redactions=dict(out.redactions),
        new_texts=out.new_texts(parts) if out.edits else {},
        state=state,
    )


def evaluate(snapshot: Snapshot, ctx: RequestContext) -> Decision:
    """The decision of the request-only rules for ``ctx`` under ``snapshot``."""
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    return decide(es, ctx, check_request(es, ctx))
