"""One settlement rule for both accounting modes (enforce/settle.py ``settlement``): the same
answer charges the same budget the same amount, and is audited the same way, whether the inline
stream read it or the observe stream did.

An answer that reports no usage must not walk around a budget: it is charged its output text
counted (llm/tokens.py), with the prompt as estimated, when it was read to its end, else the
reservation's estimate, and audited as ``usage_not_reported``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.audit.record import AuditRecord
from policy_extproc.audit.sink import RecordingSink
from policy_extproc.enforce import limits
from policy_extproc.enforce.driver import ExtProcStream
from policy_extproc.enforce.engine import Engine
from policy_extproc.enforce.envoy_replies import Continue
from policy_extproc.enforce.settle import NO_USAGE, Seen, Settlement, settlement
from policy_extproc.enforce.translate import Event
from policy_extproc.llm.request import parse_request
from policy_extproc.llm.response import SseParser, Usage
from policy_extproc.llm.tokens import (
    estimate_request_tokens,
    estimate_tokens,
    token_weight,
    tokens_of_weight,
)
from tests.unit.test_observe import (
    CATALOG,
    CHAT,
    MODEL,
    chat,
    headers,
    make_engine,
    responses,
    spent,
)

ANSWER = "Here are three bullet points about the quarterly report, as you asked."
BUFFERED = {":status": "200", "content-type": "application/json"}
SSE = {":status": "200", "content-type": "text/event-stream"}


def price(usage: Usage) -> float:
    return 1000.0 * usage.input_tokens + usage.output_tokens  # tells the two apart


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (Seen(200, Usage(7, 5), 99), Settlement("charge", 7005.0, 12)),
        (Seen(200, None, 5), Settlement("charge", 40005.0, 45, NO_USAGE)),
        (Seen(200, None, 0), Settlement("charge", 40000.0, 40, NO_USAGE)),
        (Seen(200, None, None), Settlement("charge", None, None, NO_USAGE)),
        (Seen(204, None, None), Settlement("charge", None, None, NO_USAGE)),
        (Seen(503, None, None), Settlement("release")),
        (Seen(429, Usage(7, 0), None), Settlement("release")),
        (Seen(302, None, None), Settlement("release")),
        (Seen(0, None, None), Settlement("keep")),
    ],
    ids=[
        "usage reported: the real cost",
        "no usage, read: counted",
        "no usage, empty answer: the prompt still",
        "no usage, not read: the estimate",
        "no usage, other 2xx: the estimate",
        "provider error: given back",
        "provider error with usage: given back",
        "not an answer: given back",
        "no answer at all: kept to its ttl",
    ],
)
def test_the_settlement_rule(seen: Seen, expected: Settlement) -> None:
    assert settlement(seen, input_tokens=40, price=price) == expected


def sse(*payloads: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(p)}\n\n".encode() for p in payloads) + b"data: [DONE]\n\n"


def delta(text: str) -> dict[str, Any]:
    return {"id": "c1", "model": MODEL, "choices": [{"index": 0, "delta": {"content": text}}]}


def buffered(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    return json.dumps(
        {"id": "chatcmpl-1", "model": MODEL, "choices": [{"index": 0, "message": message}]}
    ).encode()


async def exchange(
    mode: str,
    body: bytes,
    rid: str,
    answer_headers: dict[str, str],
    chunks: Sequence[bytes],
    *,
    ended: bool = True,
    **config: Any,
) -> tuple[Engine, RecordingSink]:
    """One request decided, then its answer read by the inline stream or by the observe
    stream, as ``mode`` says; ``ended``: the answer's end came (else the stream was cut)."""
    sink = RecordingSink()
    engine = make_engine(sink, response_accounting=mode, **config)
    s = ExtProcStream(engine)
    await s.handle(headers(body, rid))
    second = await s.handle(Event("request_body", {}, body, True))
    assert isinstance(second, Continue)
    if mode == "observe":
        s.close()
        await engine.drain()
        o = engine.observer.stream()
        own = dict(second.metadata)
        assert await o.feed(Event("response_headers", answer_headers, b"", False), own)
        for i, chunk in enumerate(chunks):
            await o.feed(Event("response_body", {}, chunk, ended and i == len(chunks) - 1), own)
        if not ended:
            o.close()
            await engine.observer.sweep(now=1e12)  # what no observe stream settled
    else:
        await s.handle(Event("response_headers", answer_headers, b"", False))
        for i, chunk in enumerate(chunks):
            await s.handle(Event("response_body", {}, chunk, ended and i == len(chunks) - 1))
        s.close()
    await engine.drain()
    return engine, sink


def counted(body: bytes, text: str) -> float:
    """The cost of an answer of ``text`` to ``body`` that reported no usage."""
    prompt = estimate_request_tokens(parse_request(CHAT, body))
    cost = limits.price(CATALOG, limits.Settings(), MODEL, Usage(prompt, estimate_tokens(text)))
    assert 0 < cost < estimated(body)  # the count, not the estimate (max_tokens 900)
    return cost


def estimated(body: bytes) -> float:
    """The reservation's estimate for ``body``."""
    return limits.estimate(parse_request(CHAT, body), CATALOG, limits.Settings()).usd


def the_record(sink: RecordingSink, rid: str) -> AuditRecord:
    (record,) = responses(sink, rid)
    return record


MODES = pytest.mark.parametrize("mode", ["inline", "observe"])


@MODES
async def test_a_buffered_answer_without_usage_is_charged_its_counted_output(mode: str) -> None:
    body = chat(max_tokens=900)
    engine, sink = await exchange(mode, body, "b1", BUFFERED, [buffered(ANSWER)])

    expected = counted(body, ANSWER)
    assert await spent(engine, body) == pytest.approx(expected, abs=1e-6)
    record = the_record(sink, "b1")
    assert record.error_code == NO_USAGE and record.usage is None
    assert record.cost_usd == pytest.approx(expected)
    assert record.response_id == "chatcmpl-1"


@MODES
async def test_a_streamed_answer_without_usage_is_charged_its_counted_output(mode: str) -> None:
    body = chat(max_tokens=900, stream=True)
    pieces = ["Here are three ", "bullet points about the quarterly", " report, as you asked."]
    frames = sse(*(delta(p) for p in pieces))
    chunks = [frames[:40], frames[40:]]  # an event split across two chunks still counts once
    engine, sink = await exchange(mode, body, "s1", SSE, chunks)

    expected = counted(body, "".join(pieces))
    assert await spent(engine, body) == pytest.approx(expected, abs=1e-6)
    record = the_record(sink, "s1")
    assert record.error_code == NO_USAGE and record.usage is None
    assert record.cost_usd == pytest.approx(expected)


@MODES
async def test_a_stream_cut_short_without_usage_is_charged_its_estimate(mode: str) -> None:
    body = chat(max_tokens=900, stream=True)
    estimate = estimated(body)
    frames = sse(delta("Here are three bullet points"))
    engine, sink = await exchange(mode, body, "c1", SSE, [frames[:30]], ended=False)

    assert await spent(engine, body) == pytest.approx(estimate, abs=1e-6)
    record = the_record(sink, "c1")
    assert record.usage is None and record.cost_usd == pytest.approx(estimate)
    # Inline, the answer was seen to say nothing; observed, no observe stream settled it.
    assert record.error_code == (NO_USAGE if mode == "inline" else "response_unobserved")


@MODES
async def test_a_buffered_answer_that_is_not_json_is_charged_its_estimate(mode: str) -> None:
    body = chat(max_tokens=900)
    engine, sink = await exchange(mode, body, "j1", BUFFERED, [b"<html>not json</html>"])

    estimate = estimated(body)
    assert await spent(engine, body) == pytest.approx(estimate, abs=1e-6)
    record = the_record(sink, "j1")
    assert record.error_code == NO_USAGE and record.cost_usd == pytest.approx(estimate)


@MODES
async def test_a_provider_error_is_not_charged_in_either_mode(mode: str) -> None:
    body = chat()
    error = b'{"error": {"type": "server_error", "message": "overloaded"}}'
    failed = {":status": "503", "content-type": "application/json"}
    engine, sink = await exchange(mode, body, "e1", failed, [error])

    assert await spent(engine, body) == 0
    assert responses(sink, "e1") == []


@MODES
async def test_an_answer_with_usage_is_charged_its_real_cost_in_either_mode(mode: str) -> None:
    body = chat(max_tokens=900)
    answer = json.loads(buffered(ANSWER))
    answer["usage"] = {"prompt_tokens": 12, "completion_tokens": 7}
    engine, sink = await exchange(mode, body, "u1", BUFFERED, [json.dumps(answer).encode()])

    real = engine.catalog.cost(MODEL, Usage(12, 7))
    assert real is not None
    assert await spent(engine, body) == pytest.approx(real, abs=1e-6)
    record = the_record(sink, "u1")
    assert record.error_code is None and record.cost_usd == pytest.approx(real)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=8))
def test_pieces_are_counted_as_their_text_joined(pieces: list[str]) -> None:
    # A streamed answer arrives in deltas: counted piece by piece, it is counted as if whole.
    weight = sum(token_weight(p) for p in pieces)
    assert tokens_of_weight(weight) == estimate_tokens("".join(pieces))


def test_a_stream_parser_counts_the_output_text_of_whole_events() -> None:
    parser = SseParser("openai.chat")
    frames = sse(delta("Hello, "), delta("wörld 你好"), {"choices": []})
    parser.feed(frames[:25])
    assert parser.output_tokens == 0  # no event complete yet
    parser.feed(frames[25:])
    assert parser.output_tokens == estimate_tokens("Hello, wörld 你好")
