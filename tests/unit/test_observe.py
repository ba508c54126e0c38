"""Response accounting by the observe filter (enforce/observe.py), driven with decoded events:
the inline stream's replies, the pending response it leaves in the state, the observe stream
that settles it, and the sweep that charges an unobserved one at its estimate.

The engine runs on an in-memory state; the Redis side of the pending responses is in
tests/integration/test_state_redis.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from policy_extproc.audit.record import AuditRecord
from policy_extproc.audit.sink import RecordingSink
from policy_extproc.enforce import limits, observe
from policy_extproc.enforce.driver import ExtProcStream
from policy_extproc.enforce.engine import Engine, EngineConfig
from policy_extproc.enforce.envoy_replies import Continue
from policy_extproc.enforce.observe import ObserveStream, Pending
from policy_extproc.enforce.translate import Event
from policy_extproc.errors import StateError
from policy_extproc.llm.request import parse_request
from policy_extproc.llm.response import Usage
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.policy.loader import load_sources
from policy_extproc.sources.catalog import load_catalog
from policy_extproc.sources.store import PolicyStore
from policy_extproc.state.base import BudgetSpec

CATALOG = load_catalog()  # the packaged catalog, read once as the server's edge does

POLICIES = """
- policy_name: acme_budget
  org: acme
  rules:
    - type: cost_budget
      id: daily
      per: user
      limit_usd: 10.0
- policy_name: guarded
  org: acme
  team: guarded
  rules:
    - type: content_filter
      id: out
      keywords: [secret]
      action: redact
      direction: response
- policy_name: globex_plain
  org: globex
  rules:
    - type: content_filter
      id: words
      keywords: [confidential]
"""
CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
FAR = 1e12  # a monotonic time past every deadline


def make_engine(sink: RecordingSink, **config: Any) -> Engine:
    snapshot = Snapshot(load_sources([("policies.yaml", POLICIES)]))
    settings = {"response_accounting": "observe", **config}
    return Engine(PolicyStore(snapshot=snapshot), sink, EngineConfig(**settings), catalog=CATALOG)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def engine(sink: RecordingSink) -> Engine:
    return make_engine(sink)


def chat(text: str = "hello", **extra: Any) -> bytes:
    return json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}
    ).encode()


def headers(body: bytes, rid: str, *, org: str = "acme", team: str = "ml") -> Event:
    h = {
        ":method": "POST",
        ":path": CHAT,
        "x-request-id": rid,
        "x-org-id": org,
        "x-team-id": team,
        "x-user-id": "alice",
        "content-length": str(len(body)),
    }
    return Event("request_headers", h, b"", False)


async def decide(engine: Engine, body: bytes, rid: str, **who: str) -> tuple[Continue, Continue]:
    """The inline stream's replies to the request headers and body; follow-ups done."""
    s = ExtProcStream(engine)
    first = await s.handle(headers(body, rid, **who))
    second = await s.handle(Event("request_body", {}, body, True))
    s.close()
    await engine.drain()
    assert isinstance(first, Continue) and isinstance(second, Continue)
    return first, second


def answer(usage: tuple[int, int] = (12, 7)) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
        }
    ).encode()


async def observe_answer(
    engine: Engine, own: dict[str, Any], body: bytes, *, status: int = 200
) -> ObserveStream:
    s = engine.observer.stream()
    resp = {":status": str(status), "content-type": "application/json"}
    assert await s.feed(Event("response_headers", resp, b"", False), own)
    assert not await s.feed(Event("response_body", {}, body, True), own)
    return s


async def spent(engine: Engine, body: bytes) -> float:
    hdrs = {"x-org-id": "acme", "x-team-id": "ml", "x-user-id": "alice"}
    ctx = build_context(hdrs, parse_request(CHAT, body), catalog=engine.catalog)
    es = engine.store.current.resolve(ctx.org, ctx.team, ctx.environment)
    (b,) = limits.plan(es, ctx, engine.catalog, limits.Settings(), time.time()).budgets
    probe = BudgetSpec(b.key, b.limit_usd, 0.0, b.expires_at, enforce=False)
    adm = await engine.state.admit("acme", "probe", budgets=[probe])
    await engine.state.release("acme", "probe")
    return adm.budgets[0].spent_before_usd


def responses(sink: RecordingSink, rid: str) -> list[AuditRecord]:
    return [r for r in sink.records if r.request_id == rid and r.phase == "response"]


async def test_a_budget_only_scope_skips_the_answer_and_marks_the_request(engine: Engine) -> None:
    first, second = await decide(engine, chat(), "r1")

    assert first.skip_response  # the inline filter is not asked for the answer
    assert second.metadata["observe"] is True  # what the observe filter's matcher selects on
    assert second.metadata["org"] == "acme" and second.metadata["request_id"] == "r1"
    assert second.metadata["api"] == "openai.chat"
    kept = await engine.state.pending_get("acme", "r1")
    assert kept is not None
    pending = Pending.decode(kept)
    assert pending.model == MODEL and len(pending.budget_keys) == 1
    assert pending.record.phase == "response" and pending.record.user == "alice"


@pytest.mark.parametrize(
    ("who", "skipped"),
    [({"team": "guarded"}, False), ({"org": "globex"}, True)],
    ids=["output guardrail: inline", "no budget: no answer needed"],
)
async def test_only_an_answer_needed_for_usage_alone_goes_to_the_observe_filter(
    engine: Engine, who: dict[str, str], skipped: bool
) -> None:
    first, second = await decide(engine, chat(), "r2", **who)

    assert first.skip_response is skipped
    assert "observe" not in second.metadata and "org" not in second.metadata
    assert await engine.state.pending_get(who.get("org", "acme"), "r2") is None


async def test_inline_accounting_reads_the_answer_inline(sink: RecordingSink) -> None:
    engine = make_engine(sink, response_accounting="inline")
    first, second = await decide(engine, chat(), "r3")

    assert not first.skip_response
    assert "observe" not in second.metadata
    assert await engine.state.pending_get("acme", "r3") is None


async def test_the_observe_stream_settles_the_budget_with_the_real_usage(
    engine: Engine, sink: RecordingSink
) -> None:
    body = chat(max_tokens=900)
    _, second = await decide(engine, body, "r4")
    estimate = await spent(engine, body)

    await observe_answer(engine, dict(second.metadata), answer((12, 7)))

    cost = engine.catalog.cost(MODEL, Usage(12, 7))
    assert cost is not None and 0 < cost < estimate
    assert await spent(engine, body) == pytest.approx(cost, abs=1e-6)
    (record,) = responses(sink, "r4")
    assert record.usage is not None and (record.usage.input_tokens, record.usage.output_tokens) == (
        12,
        7,
    )
    assert record.cost_usd == pytest.approx(cost)
    assert record.response_id == "chatcmpl-1" and record.error_code is None
    # Taken: a late sweep finds nothing to charge again.
    assert await engine.observer.sweep(now=FAR) == 0
    assert await engine.state.pending_get("acme", "r4") is None


async def test_a_streamed_answer_is_settled_with_the_usage_of_its_last_chunk(
    engine: Engine, sink: RecordingSink
) -> None:
    body = chat(stream=True)
    _, second = await decide(engine, body, "r5")
    # Asked for its usage; the chunk is not taken out again (no inline filter on the answer).
    asked = json.loads(second.body or b"{}")
    assert asked["stream_options"] == {"include_usage": True}
    s = engine.observer.stream()
    sse = {":status": "200", "content-type": "text/event-stream"}
    own = dict(second.metadata)
    assert await s.feed(Event("response_headers", sse, b"", False), own)
    chunk = {"id": "c1", "model": MODEL, "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    usage = {"prompt_tokens": 5, "completion_tokens": 3}
    last = {"id": "c1", "model": MODEL, "choices": [], "usage": usage}
    frames = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(last)}\n\n".encode()
    assert await s.feed(Event("response_body", {}, frames, False), own)
    assert not await s.feed(Event("response_body", {}, b"data: [DONE]\n\n", True), own)

    (record,) = responses(sink, "r5")
    assert record.usage is not None and record.usage.input_tokens == 5
    cost = engine.catalog.cost(MODEL, Usage(5, 3))
    assert await spent(engine, body) == pytest.approx(cost, abs=1e-6)


async def test_a_failed_answer_gives_the_reservation_back(
    engine: Engine, sink: RecordingSink
) -> None:
    body = chat()
    _, second = await decide(engine, body, "r6")
    assert await spent(engine, body) > 0

    await observe_answer(engine, dict(second.metadata), b'{"error": {}}', status=503)

    assert await spent(engine, body) == 0
    assert responses(sink, "r6") == []


async def test_an_answer_no_observe_stream_reports_is_charged_at_its_estimate(
    engine: Engine, sink: RecordingSink
) -> None:
    body = chat(max_tokens=300)
    await decide(engine, body, "r7")
    estimate = await spent(engine, body)

    assert await engine.observer.sweep() == 0  # not due yet
    assert await engine.observer.sweep(now=FAR) == 1
    assert engine.observer.unobserved == 1  # counted (policy_extproc_responses_unobserved)

    (record,) = responses(sink, "r7")
    assert record.error_code == observe.UNOBSERVED
    assert record.usage is None and record.cost_usd == pytest.approx(estimate, abs=1e-6)
    assert await spent(engine, body) == pytest.approx(estimate, abs=1e-6)
    assert not await engine.state.release("acme", "r7")  # settled: nothing reserved is left


async def test_an_observe_stream_after_the_sweep_charges_nothing_more(
    engine: Engine, sink: RecordingSink
) -> None:
    body = chat()
    _, second = await decide(engine, body, "r8")
    estimate = await spent(engine, body)
    assert await engine.observer.sweep(now=FAR) == 1

    await observe_answer(engine, dict(second.metadata), answer())

    assert await spent(engine, body) == pytest.approx(estimate, abs=1e-6)
    assert [r.error_code for r in responses(sink, "r8")] == [observe.UNOBSERVED]


@pytest.mark.parametrize(
    "own",
    [
        None,
        {},
        {"org": "acme", "request_id": "x", "api": "openai.chat"},
        {"observe": True, "org": "acme", "request_id": "x"},
        {"observe": True, "org": "acme", "request_id": "x", "api": "?"},
    ],
    ids=["no metadata", "empty", "not marked", "no api", "unknown api"],
)
async def test_an_observe_stream_without_our_key_is_closed_at_once(
    engine: Engine, own: dict[str, Any] | None
) -> None:
    s = engine.observer.stream()
    resp = {":status": "200", "content-type": "application/json"}
    assert not await s.feed(Event("response_headers", resp, b"", False), own)


def test_observe_accounting_is_a_choice_of_two() -> None:
    with pytest.raises(ValueError, match=r"inline.*observe"):
        EngineConfig(response_accounting="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="observe_timeout_s"):
        EngineConfig(observe_timeout_s=0)


async def test_an_unreadable_pending_response_is_logged_and_the_sweep_goes_on(
    engine: Engine, sink: RecordingSink
) -> None:
    await decide(engine, chat(), "r9")
    await decide(engine, chat(), "r10")
    await engine.state.pending_put("acme", "r9", "not json", ttl_s=60)

    assert await engine.observer.sweep(now=FAR) == 1  # r10 still charged, r9 skipped

    assert [r.request_id for r in sink.records if r.phase == "response"] == ["r10"]


def test_our_metadata_is_read_from_the_forwarded_namespace() -> None:
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
    from google.protobuf import struct_pb2

    from policy_extproc.enforce import translate

    msg = ep.ProcessingRequest(observability_mode=True)
    msg.response_headers.SetInParent()
    assert translate.own_metadata(msg) is None
    ours = struct_pb2.Struct()
    ours.update({"observe": True, "org": "acme", "request_id": "r", "api": "openai.chat", "x": 1})
    msg.metadata_context.filter_metadata[translate.NAMESPACE].CopyFrom(ours)
    assert translate.own_metadata(msg) == {
        "observe": True,
        "org": "acme",
        "request_id": "r",
        "api": "openai.chat",
    }


def test_the_observe_timeout_stays_under_the_reservation_ttl() -> None:
    EngineConfig(response_accounting="observe", observe_timeout_s=479)
    with pytest.raises(ValueError, match="reservation ttl"):  # the sweep may come too late
        EngineConfig(response_accounting="observe", observe_timeout_s=480)
    EngineConfig(observe_timeout_s=480)  # inline: no observe stream, no sweep to wait for


async def test_a_pending_response_outlives_a_late_sweep(engine: Engine) -> None:
    """Kept twice the timeout and a minute: a sweep a quarter of the timeout late (its period
    with any number of workers) still finds it."""
    await decide(engine, chat(), "r11")
    ((_, until),) = [v for k, v in engine.state._pending.items() if k[1] == "r11"]  # type: ignore[attr-defined]
    assert until - time.time() > engine.config.observe_timeout_s * 1.25


class FlakyPending:
    """Wraps a state: ``pending_take`` raises StateError while ``down``, or ``reconcile`` does
    while ``reconcile_down``."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.down, self.reconcile_down = inner, False, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def pending_take(self, org: str, request_id: str) -> str | None:
        if self.down:
            raise StateError("redis went away")
        result: str | None = await self.inner.pending_take(org, request_id)
        return result

    async def reconcile(self, *args: Any, **kwargs: Any) -> bool:
        if self.reconcile_down:
            raise StateError("redis went away")
        result: bool = await self.inner.reconcile(*args, **kwargs)
        return result


async def test_a_sweep_while_the_state_is_down_keeps_what_is_due_for_the_next(
    engine: Engine, sink: RecordingSink
) -> None:
    await decide(engine, chat(), "r12")
    await decide(engine, chat(), "r13")
    flaky = FlakyPending(engine.state)
    engine.state = flaky  # type: ignore[assignment]
    flaky.down = True
    assert await engine.observer.sweep(now=FAR) == 0  # nothing lost, nothing settled
    flaky.down = False
    assert await engine.observer.sweep(now=FAR) == 2
    assert [r.request_id for r in sink.records if r.phase == "response"] == ["r12", "r13"]


async def test_a_taken_pending_response_is_audited_even_when_charging_it_fails(
    engine: Engine, sink: RecordingSink
) -> None:
    await decide(engine, chat(), "r14")
    flaky = FlakyPending(engine.state)
    engine.state = flaky  # type: ignore[assignment]
    flaky.reconcile_down = True
    assert await engine.observer.sweep(now=FAR) == 1
    (record,) = [r for r in sink.records if r.phase == "response" and r.request_id == "r14"]
    assert record.error_code == observe.UNOBSERVED and record.cost_usd is None
