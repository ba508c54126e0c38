"""Output guardrails: content_filter and pii rules with ``direction: response`` (or ``both``).

A buffered answer is scanned whole, then rewritten (masks, redactions) or replaced by the policy
error. A streamed answer (SSE) is scanned as it flows: text events are held back only while a
match could still span them -- the last ``holdback`` characters -- so the first tokens reach the
client at once and nothing matching ever passes. Events without text (roles, usage, pings,
``[DONE]``) keep their place in the stream behind any held text.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..detect.canonical import visible_tail
from ..llm.apis import BY_API
from ..llm.apis.wire import Refusal
from ..llm.request import Api
from ..llm.response import SseEvent, SseParser
from ..policy.compiler import EffectiveSet
from ..policy.decision import Decision, Fired, JsonPath, combine
from ..policy.evaluator import Findings, check_response
from ..policy.rules.compliance import ComplianceRule
from ..policy.rules.content_filter import ContentFilterRule
from ..policy.rules.pii import PiiRule, detector_of

# Characters a streamed answer may lag behind the provider: matches up to this long are caught
# across chunk boundaries; longer ones (PEM blocks, 200-character e-mail addresses) only in
# buffered answers. 128 characters is about 30 tokens, well under a second of generation.
DEFAULT_HOLDBACK = 128


def has_response_rules(es: EffectiveSet) -> bool:
    """Whether any output guardrail is in force for this scope."""
    if es.content["response"] or es.semantic_response:
        return True
    if any(e.rule.direction != "request" for e in es.rules_of(PiiRule)):
        return True
    return any(detector_of(e) is not None for e in es.rules_of(ComplianceRule))


def holdback(es: EffectiveSet, cap: int = DEFAULT_HOLDBACK) -> int:
    """How many trailing characters a streamed match could still need, at most ``cap``."""
    need = 64
    for e in es.rules_of(ContentFilterRule):
        rule = e.rule
        if rule.direction == "request":
            continue
        phrases = [*rule.keywords, *(p for ps in rule.topics.values() for p in ps)]
        need = max(need, *(len(p) + 8 for p in phrases)) if phrases else need
        if rule.patterns:
            need = cap  # a regex has no length bound we can read
    for scanner in [*es.rules_of(PiiRule), *es.rules_of(ComplianceRule)]:
        detector = detector_of(scanner)
        if detector is not None:
            need = max(need, detector.max_match_len)
    return min(need, cap)


@dataclass(frozen=True, slots=True)
class _Part:
    path: JsonPath
    text: str


def response_decision(findings: Findings, es: EffectiveSet) -> Decision:
    """The decision on an answer, from its guardrail firings."""
    return combine(findings.fired, compliance=es.compliance, redactions=dict(findings.redactions))


# -- streamed answers ------------------------------------------------------------------------


def _set_delta(api: Api, payload: Any, text: str) -> None:
    set_delta = BY_API[api].set_delta
    assert set_delta is not None  # only events whose delta_text read a text are rewritten
    set_delta(payload, text)


def _encode(api: Api, event: SseEvent, payload: Any) -> bytes:
    return BY_API[api].encode_event(event, payload)


def error_event(api: Api, decision: Decision, request_id: str) -> bytes:
    """The event that ends a stream whose next words a policy refuses, in the API's own shape."""
    refusal = Refusal(decision.code or "blocked", decision.reason, decision.action,
                      decision.policy, decision.rule, request_id)  # fmt: skip
    encode = BY_API[api].refusal_event
    assert encode is not None  # every format that streams text declares its refusal
    return encode(refusal)


@dataclass(slots=True)
class _Held:
    event: SseEvent
    text: str | None
    payload: Any = None  # a changed copy of the event's payload, once its text was rewritten


@dataclass(slots=True)
class StreamGuard:
    """Scans one streamed answer chunk by chunk; ``feed`` returns the bytes to pass on."""

    es: EffectiveSet
    api: Api
    request_id: str
    limit: int = DEFAULT_HOLDBACK
    parser: SseParser = field(init=False)
    held: list[_Held] = field(default_factory=list)
    scan_from: int = 0  # text before this offset of the held text was scanned and rewritten
    findings: Findings = field(default_factory=Findings)
    blocked: Decision | None = None

    def __post_init__(self) -> None:
        self.parser = SseParser(self.api)

    def feed(self, chunk: bytes, end: bool) -> bytes:
        if self.blocked is not None:
            return b""  # the stream was ended by a refusal: nothing more reaches the client
        events = self.parser.feed(chunk)
        if end:
            events += self.parser.flush()
        for ev in events:
            self.held.append(_Held(ev, self.parser.delta_text(ev)))
        self._scan()
        if self.blocked is not None:
            self.held.clear()
            return error_event(self.api, self.blocked, self.request_id)
        return self._release(end)

    @property
    def usage(self) -> Any:
        return self.parser.usage

    def _text(self) -> str:
        return "".join(h.text or "" for h in self.held)

    def _scan(self) -> None:
        window = self._text()[self.scan_from :]
        if not window:
            return
        found = check_response(self.es, [_Part(("stream",), window)])
        known = {(f.policy, f.rule) for f in self.findings.fired}
        for f in found.fired:
            if (f.policy, f.rule) not in known:
                self.findings.fired.append(f)
                known.add((f.policy, f.rule))
            if f.mode == "enforce" and f.action == "block":
                self.blocked = _refusal(f)
        if self.blocked is not None or not found.edits:
            return
        for kind, n in found.redactions.items():
            self.findings.redactions[kind] = self.findings.redactions.get(kind, 0) + n
        self._rewrite([(s + self.scan_from, e + self.scan_from, r)
                       for s, e, r in sorted(found.edits[0])])  # fmt: skip

    def _rewrite(self, edits: Sequence[tuple[int, int, str]]) -> None:
        """Apply edits (sorted offsets in the held text) to the held events.

        A replacement goes into the event where its match starts; the rest of a match that runs
        into later events is cut from them. Text up to the last replacement is not scanned
        again, so a replacement is never itself redacted.
        """
        out_len = 0  # length of the rewritten held text so far
        scan_to = self.scan_from
        pos = 0
        first = 0  # edits before this one end before the current event: done with them
        for h in self.held:
            if h.text is None:
                continue
            start, end = pos, pos + len(h.text)
            pos = end
            pieces: list[str] = []
            cursor = start
            while first < len(edits) and edits[first][1] <= start:
                first += 1
            for k in range(first, len(edits)):
                s, e, repl = edits[k]
                if s >= end:
                    break  # this one and the rest start after this event
                if e <= cursor:
                    continue  # before what is left of this event, or overlapped
                if s > cursor:
                    pieces.append(h.text[cursor - start : s - start])
                if s >= start:
                    pieces.append(repl)
                    scan_to = out_len + sum(map(len, pieces))
                cursor = min(e, end)
            if cursor == start and not pieces:
                out_len += len(h.text)
                continue
            pieces.append(h.text[cursor - start :])
            h.text = "".join(pieces)
            if h.payload is None:
                h.payload = copy.deepcopy(h.event.payload)
            _set_delta(self.api, h.payload, h.text)
            out_len += len(h.text)
        self.scan_from = max(self.scan_from, scan_to)

    def _release(self, end: bool) -> bytes:
        text = self._text()
        # The tail kept back is counted in characters the scan sees: zero-width characters or
        # marks inserted into a word do not push its start out of the window still scanned.
        keep_from = len(text) if end else visible_tail(text, self.limit - 1)
        out: list[bytes] = []
        pos = 0
        released = 0
        for h in self.held:
            n = len(h.text or "")
            if pos + n > keep_from:
                break
            pos += n
            released += 1
            out.append(h.event.raw if h.payload is None else _encode(self.api, h.event, h.payload))
        del self.held[:released]
        self.scan_from = max(0, self.scan_from - pos)
        return b"".join(out)


def _refusal(f: Fired) -> Decision:
    return combine([f])
