"""Watching a response: how it is read (buffered, streamed, guarded), what the output
guardrails make of it, and the usage it reports. Pure: no state, no audit, no tasks."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import PolicyExtprocError
from ..llm.request import LlmRequest
from ..llm.response import (
    SseParser,
    UsageChunkFilter,
    is_stream,
    parse_response,
    rewrite_response,
)
from ..policy.compiler import EffectiveSet
from ..policy.decision import Decision
from ..policy.evaluator import check_response
from . import guard
from .exchange import ResponseWatch


def start(
    w: ResponseWatch,
    headers: Mapping[str, str],
    request: LlmRequest | None,
    es: EffectiveSet | None,
    *,
    request_id: str,
    hide_usage: bool,
    holdback: int,
) -> None:
    """The response headers arrived: how its body is to be read."""
    status = headers.get(":status", "0")
    w.status = int(status) if status.isdigit() else 0
    w.streaming = is_stream(headers.get("content-type", ""))
    w.guarded = (
        es is not None
        and request is not None
        and 200 <= w.status < 300
        and guard.has_response_rules(es)
    )
    if w.streaming and request is not None:
        if w.guarded:
            assert es is not None
            w.stream_guard = guard.StreamGuard(
                es, request.api, request_id, guard.holdback(es, holdback)
            )
        else:
            w.sse = SseParser(request.api)
        if hide_usage:
            w.usage_filter = UsageChunkFilter(request.api)
            if w.stream_guard is None:
                w.sse = None  # the filter's parser reads the usage: one parse, not two


def feed(
    w: ResponseWatch,
    request: LlmRequest | None,
    es: EffectiveSet | None,
    chunk: bytes,
    end: bool,
) -> tuple[bytes | None, Decision | None]:
    """One piece of the body: the bytes to send instead (None: unchanged) and, for a buffered
    answer a rule refuses, the decision to answer the client with instead."""
    out: bytes | None = None
    refusal = None
    if w.stream_guard is not None:
        out = w.stream_guard.feed(chunk, end)
    elif w.sse is not None:
        w.sse.feed(chunk)
    elif w.usage_filter is not None:
        pass  # streamed, read by the filter below
    else:
        w.chunks.append(chunk)
        if end and w.guarded:
            assert request is not None and es is not None
            out, refusal = _guard_buffered(w, request, es)
    if w.usage_filter is not None:
        # After the guardrails: what they let through, less the chunk we asked for.
        data = out if out is not None else chunk
        filtered = w.usage_filter.feed(data, end)
        out = None if filtered == chunk else filtered
    return out, refusal


def _guard_buffered(
    w: ResponseWatch, request: LlmRequest, es: EffectiveSet
) -> tuple[bytes | None, Decision | None]:
    try:
        resp = parse_response(request.api, b"".join(w.chunks))
    except PolicyExtprocError:
        return None, None  # not the JSON the API promises: nothing we can scan or rewrite
    findings = check_response(es, resp.parts)
    if not findings.fired:
        return None, None
    w.findings = findings
    decision = guard.response_decision(findings, es)
    if decision.action == "block":
        return None, decision
    if findings.edits:
        return rewrite_response(resp, findings.new_texts(resp.parts)), None
    return None, None


def conclude(w: ResponseWatch, request: LlmRequest) -> None:
    """The response is over (or cut): read its usage, its output text counted, the answer's
    model, id and finish reasons, and the stream guard's findings."""
    if w.stream_guard is not None:
        w.usage, w.answer = w.stream_guard.usage, w.stream_guard.parser.info
        w.output_tokens = w.stream_guard.parser.output_tokens
        if w.stream_guard.findings.fired:
            w.findings = w.stream_guard.findings
    elif w.sse is not None:
        w.sse.flush()  # a last event with no blank line after it still counts
        w.usage, w.answer, w.output_tokens = w.sse.usage, w.sse.info, w.sse.output_tokens
    elif w.usage_filter is not None:
        w.usage_filter.feed(b"", True)
        f = w.usage_filter
        w.usage, w.answer, w.output_tokens = f.usage, f.info, f.output_tokens
    elif w.chunks and 200 <= w.status < 300:
        try:
            resp = parse_response(request.api, b"".join(w.chunks))
            w.usage, w.answer, w.output_tokens = resp.usage, resp.info, resp.output_tokens
        except PolicyExtprocError:
            w.usage = None  # not the JSON its API promises: nothing counted either
