"""Rate limits and cost budgets through the sidecar over real gRPC, in memory and on a real Redis.

Envoy is played by a gRPC client (tests/integration/helpers.py). "Replicas" are two in-process
``Sidecar`` instances sharing one redis-server started by a fixture, and, once, two
``policy-extproc serve`` processes. The bar (zero overshoot): in every concurrency test not one
request more than the limit or budget allows is admitted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg

from policy_extproc.enforce import limits
from policy_extproc.enforce.admission import AdmissionSettings
from policy_extproc.llm.request import parse_request
from policy_extproc.llm.response import Usage
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.sources.catalog import load_catalog
from policy_extproc.state.base import BudgetSpec
from tests.envoy_harness import ManagedProcess, free_port
from tests.integration.helpers import (
    CHAT,
    Exchange,
    Running,
    common,
    immediate_json,
    mutation_headers,
    request_body,
    request_headers,
    response_body,
    response_headers,
    run_exchange,
    running_sidecar,
    wait_for,
)
from tests.redis_server import RedisServer
from tests.webhook_receiver import Webhook

MODEL = "gpt-4o-mini"
PROMPT = "Summarise the quarterly report in three bullet points."
MAX_TOKENS = 200
ORG = "acme"
# A safety net for calls that must end (a Redis outage must never hang a stream); never an
# assertion about speed.
NO_HANG_S = 20.0


def chat(text: str = PROMPT, *, max_tokens: int = MAX_TOKENS, stream: bool = False) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def identity(user: str | None = "alice", team: str = "ml") -> dict[str, str]:
    h = {"x-team-id": team}
    if user is not None:
        h["x-user-id"] = user
    return h


def estimate(body: bytes, headers: Mapping[str, str] | None = None) -> limits.Plan:
    """What the engine will reserve for ``body``: the plan of an empty policy set."""
    request = parse_request(CHAT, body)
    ctx = build_context(
        {"x-org-id": ORG, **(headers or identity())}, request, catalog=load_catalog()
    )
    es = Snapshot([]).resolve(ctx.org, ctx.team, ctx.environment)
    return limits.plan(es, ctx, load_catalog(), limits.Settings(), time.time())


def usd(micros: int) -> str:
    """A YAML number for an exact amount of micro-USD."""
    return f"{micros / 1e6:.6f}"


def room_for(n: float, body: bytes = b"") -> str:
    """A budget limit with room for exactly ``int(n)`` requests of ``body`` (estimated)."""
    each = round(estimate(body or chat()).estimated_usd * 1e6)
    return usd(round(n * each))


# -- driving streams ---------------------------------------------------------------------------


@dataclass
class Answer:
    """What the client would see for one request: allowed, or a refusal's status and body."""

    answers: list[ep.ProcessingResponse]

    @property
    def refused(self) -> bool:
        return self.answers[-1].WhichOneof("response") == "immediate_response"

    @property
    def status(self) -> int:
        if not self.refused:
            return 200
        return int(self.answers[-1].immediate_response.status.code)

    @property
    def body(self) -> dict[str, Any]:
        return immediate_json(self.answers[-1])

    @property
    def code(self) -> str | None:
        return self.body["error"]["code"] if self.refused else None

    @property
    def headers(self) -> dict[str, str]:
        return mutation_headers(self.answers[-1].immediate_response.headers)

    @property
    def sent_body(self) -> dict[str, Any] | None:
        """The request body as rewritten for the provider, if it was."""
        mutation = common(self.answers[1]).body_mutation
        return json.loads(mutation.body) if mutation.body else None


async def send(
    stub: epg.ExternalProcessorStub,
    body: bytes,
    rid: str,
    *,
    headers: Mapping[str, str] | None = None,
    response: Sequence[ep.ProcessingRequest] = (),
) -> Answer:
    """One request (headers and buffered body), then ``response`` if it was let through."""
    h = dict(identity() if headers is None else headers)
    messages = [request_headers(body=body, request_id=rid, headers=h), request_body(body)]
    async with asyncio.timeout(NO_HANG_S):
        return Answer(await run_exchange(stub, [*messages, *response]))


def buffered_response(usage: tuple[int, int]) -> list[ep.ProcessingRequest]:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
    }
    return [response_headers(200), response_body(json.dumps(body).encode())]


def sse_response(
    usage: tuple[int, int] | None, text: str = "Three bullets."
) -> list[ep.ProcessingRequest]:
    """An OpenAI chat stream with include_usage: deltas, finish, a usage chunk (none when
    ``usage`` is None: a provider that ignores include_usage), [DONE]."""
    base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": MODEL}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}], "usage": None},
        *(
            {**base, "choices": [{"index": 0, "delta": {"content": w}}], "usage": None}
            for w in text.split(" ")
        ),
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
    ]
    if usage is not None:
        counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        chunks.append({**base, "choices": [], "usage": {**counts, "total_tokens": sum(usage)}})
    frames = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
    # Chunk boundaries that do not follow event boundaries, as a network delivers them.
    raw = b"".join(frames)
    cut = [raw[i : i + 97] for i in range(0, len(raw), 97)]
    return [
        response_headers(200, content_type="text/event-stream"),
        *(response_body(c, end_of_stream=False) for c in cut),
        response_body(b"", end_of_stream=True),
    ]


async def spent_usd(running: Running, body: bytes, headers: Mapping[str, str]) -> float:
    """The amount a budget of the request has spent (reservations included), read from state.

    Asks the state backend with a zero-cost, non-enforced probe on the request's budget key,
    then gives the probe back.
    """
    await running.sidecar.engine.drain()  # settlements run off the response path
    request = parse_request(CHAT, body)
    ctx = build_context({"x-org-id": ORG, **headers}, request, catalog=running.sidecar.catalog)
    es = running.sidecar.store.current.resolve(ctx.org, ctx.team, ctx.environment)
    p = limits.plan(es, ctx, running.sidecar.catalog, limits.Settings(), time.time())
    (b,) = p.budgets
    state = running.sidecar.state
    assert state is not None
    probe = BudgetSpec(b.key, b.limit_usd, 0.0, b.expires_at, enforce=False)
    adm = await state.admit(ORG, "probe", budgets=[probe])
    await state.release(ORG, "probe")
    return adm.budgets[0].spent_before_usd


def records(running: Running, rid: str, phase: str = "request") -> list[dict[str, Any]]:
    return [r for r in running.records_json() if r["request_id"] == rid and r["phase"] == phase]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None (in-memory state) or the URL of the session's Redis, emptied."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


StartSidecar = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_sidecar(tmp_path: Path) -> AsyncIterator[StartSidecar]:
    """start_sidecar(policies, **ServerConfig fields) -> a Running sidecar, stopped after."""
    async with AsyncExitStack() as stack:
        numbers = itertools.count(1)

        async def start(policies: str, **config: Any) -> Running:
            config.setdefault("admin_listen", None)  # replicas would share its default port
            # Up to 200 requests arrive at once: over admission control's default bound (64),
            # some would be shed (503 overloaded) instead of counted against the limit.
            config.setdefault("admission", AdmissionSettings(max_inflight=0))
            where = tmp_path / f"sidecar-{next(numbers)}"
            return await stack.enter_async_context(running_sidecar(where, policies, **config))

        yield start


def rate_limit(
    *, requests: int | None = 50, tokens: int | None = None, on_error: str = "closed"
) -> str:
    fields = "".join(
        f"      {name}: {value}\n"
        for name, value in (("requests", requests), ("tokens", tokens))
        if value is not None
    )
    return f"""
- policy_name: acme_limits
  org: {ORG}
  rules:
    - type: rate_limit
      id: per_user
      per: user
      # A day, not a minute: a per-minute limit of 50 refills one request every 1.2 s, and a
      # burst of 200 on a loaded machine can take longer than that (then 51 is right).
      window: day
      on_error: {on_error}
{fields}"""


def cost_budget(limit_usd: str, *, action: str = "block", on_error: str = "closed") -> str:
    return f"""
- policy_name: acme_budget
  org: {ORG}
  rules:
    - type: cost_budget
      id: daily
      per: user
      limit_usd: {limit_usd}
      period: day
      action: {action}
      alert_at: [0.5, 0.8, 1.0]
      on_error: {on_error}
"""


async def decided(stub: epg.ExternalProcessorStub, body: bytes, rid: str) -> Answer:
    """One request, sent again (as a client would) while it fails closed with a 503.

    A burst of ~100 streams on one replica can push a Redis call past the backend's 100 ms
    bound (pool and event loop saturated on two shared cores): the call fails closed, 503
    state_unavailable. Retrying lets every request end admitted or refused by the limit.
    """
    for attempt in range(50):
        answer = await send(stub, body, rid)
        if answer.code != "state_unavailable":
            return answer
        await asyncio.sleep(0.01 * attempt)
    raise AssertionError(f"{rid}: Redis never answered in time")


def assert_admitted(admitted: int, limit: int, failed_closed: int) -> None:
    """Zero overshoot; and exactly ``limit`` unless calls failed closed.

    A call that timed out after Redis ran the script consumed its unit, yet its request was
    refused with a 503: the limit is then reached with fewer admissions, the safe side, by at
    most the number of such calls (a finding reported on its own; usually there are none).
    """
    assert admitted <= limit
    assert admitted >= limit - failed_closed


async def concurrently(
    stubs: Sequence[epg.ExternalProcessorStub], n: int, body: bytes, prefix: str = "r"
) -> list[Answer]:
    """``n`` requests at once, dealt round-robin over the replicas."""
    calls = [decided(stubs[i % len(stubs)], body, f"{prefix}-{i}") for i in range(n)]
    return list(await asyncio.gather(*calls))


def audited(replicas: Sequence[Running], prefix: str) -> list[str]:
    """Every attempt at the requests named ``prefix``-N: its decision, or its error code."""
    return sorted(
        r["error_code"] or r["decision"]
        for s in replicas
        for r in s.records_json()
        if r["request_id"].startswith(f"{prefix}-")
    )


def replicas_of(backend: str | None) -> int:
    # In-memory state is one process's: only a shared Redis makes replicas share a limit.
    return 2 if backend is not None else 1


# -- rate limits ---------------------------------------------------------------------------------


async def test_200_concurrent_requests_against_a_limit_of_50_admit_exactly_50(
    backend: str | None, start_sidecar: StartSidecar
) -> None:
    # What is proved is the count under concurrency, not the time bounds: 100 streams at once
    # on a replica of a loaded 2-core machine outlast the 100 ms Redis bound (a 503 that may
    # have consumed its unit) and Envoy's 0.5 s message timeout (a late answer refused).
    bounds = {"redis_timeout_s": 30.0, "message_timeout_s": 60.0}
    replicas = [
        await start_sidecar(rate_limit(requests=50), redis=backend, **bounds)
        for _ in range(replicas_of(backend))
    ]
    answers = await concurrently([s.stub for s in replicas], 200, chat())

    attempts = audited(replicas, "r")
    assert attempts.count("state_unavailable") == 0  # each of the 200 counted once
    allowed = [a for a in answers if not a.refused]
    assert len(allowed) == 50
    assert attempts.count("allow") == 50 and len(attempts) == 200
    for a in answers:
        if not a.refused:
            continue
        assert (a.status, a.code) == (429, "rate_limited"), a.body
        h = a.headers
        assert int(h["retry-after"]) >= 1
        assert h["x-ratelimit-limit"] == "50"
        assert h["x-ratelimit-remaining"] == "0"
        assert int(h["x-ratelimit-reset"]) >= 1
        assert h["x-policy-decision"] == "throttle"
        assert a.body["decision"] == "throttle"
        assert (a.body["policy"], a.body["rule"]) == ("acme_limits", "per_user")


async def test_a_token_limit_bites_on_the_request_that_would_exceed_it(
    backend: str | None, start_sidecar: StartSidecar
) -> None:
    body = chat()
    tokens = estimate(body).input_tokens + MAX_TOKENS
    # Room for two requests and most of a third: the third is refused, not the fourth.
    server = await start_sidecar(
        rate_limit(requests=None, tokens=2 * tokens + tokens // 2), redis=backend
    )
    first = await send(server.stub, body, "t-1")
    second = await send(server.stub, body, "t-2")
    third = await send(server.stub, body, "t-3")
    assert not first.refused and not second.refused
    assert (third.status, third.code) == (429, "rate_limited")
    assert third.headers["x-ratelimit-limit"] == str(2 * tokens + tokens // 2)
    # One that fits what is left still passes: the refusal was for that request's size.
    small = await send(server.stub, chat("hi", max_tokens=10), "t-4")
    assert not small.refused

    # A request that needs more than the whole limit can never pass: blocked, not throttled.
    huge = await send(server.stub, chat(max_tokens=10 * tokens), "t-5", headers=identity("bob"))
    assert (huge.status, huge.code) == (403, "blocked")
    assert "more tokens than the limit" in huge.body["reason"]


async def test_missing_identity_where_a_rule_limits_per_user_is_a_400(
    backend: str | None, start_sidecar: StartSidecar
) -> None:
    server = await start_sidecar(rate_limit(), redis=backend)
    a = await send(server.stub, chat(), "anon", headers=identity(user=None))
    assert (a.status, a.code) == (400, "missing_identity")
    assert a.body["error"]["type"] == "invalid_request_error"
    assert "x-user-id" in a.body["reason"]
    (record,) = records(server, "anon")
    assert record["error_code"] == "missing_identity"


# -- budgets ---------------------------------------------------------------------------------------


async def test_a_budget_with_room_for_n_admits_n_of_3n_arriving_together(
    backend: str | None, start_sidecar: StartSidecar
) -> None:
    n = 20
    replicas = [
        await start_sidecar(cost_budget(room_for(n + 0.5)), redis=backend)
        for _ in range(replicas_of(backend))
    ]
    answers = await concurrently([s.stub for s in replicas], 3 * n, chat(), "b")

    attempts = audited(replicas, "b")
    allowed = [a for a in answers if not a.refused]
    assert_admitted(len(allowed), n, attempts.count("state_unavailable"))
    assert attempts.count("allow") == len(allowed)
    for a in answers:
        if a.refused:
            assert (a.status, a.code) == (429, "budget_exceeded"), a.body
            assert int(a.headers["retry-after"]) >= 1
            assert a.headers["x-ratelimit-remaining"] == "0"
    # The budget holds n estimates (reservations), not one more: it is full, never over.
    each = estimate(chat()).estimated_usd
    spent = await spent_usd(replicas[0], chat(), identity())
    assert spent == pytest.approx(n * each, abs=1e-6 * n)


@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
async def test_a_budget_is_charged_the_real_cost_once_the_response_reports_usage(
    backend: str | None, start_sidecar: StartSidecar, streamed: bool
) -> None:
    server = await start_sidecar(cost_budget("10.000000"), redis=backend)
    body = chat(stream=streamed)
    usage = (57, 123)
    real = load_catalog().cost(MODEL, Usage(*usage))
    assert real is not None
    assert real != pytest.approx(estimate(body).estimated_usd)  # reconciling must move it
    response = sse_response(usage) if streamed else buffered_response(usage)

    a = await send(server.stub, body, "rc-1", response=response)

    assert not a.refused
    if streamed:
        # A streamed OpenAI answer reports usage only when asked: the sidecar asks for it.
        assert a.sent_body is not None
        assert a.sent_body["stream_options"] == {"include_usage": True}
        assert a.answers[2].mode_override.response_body_mode == a.answers[2].mode_override.STREAMED
    else:
        assert a.sent_body is None  # nothing to add to a buffered request
    assert await spent_usd(server, body, identity()) == pytest.approx(real, abs=1e-6)
    (record,) = records(server, "rc-1", "response")
    assert record["usage"] == {"input_tokens": 57, "output_tokens": 123}
    assert record["cost_usd"] == pytest.approx(real)

    # A second exchange adds its own real cost, not its estimate.
    await send(server.stub, body, "rc-2", response=response)
    assert await spent_usd(server, body, identity()) == pytest.approx(2 * real, abs=2e-6)


async def test_a_stream_that_reports_no_usage_still_gets_its_response_record(
    start_sidecar: StartSidecar,
) -> None:
    # The provider ignored include_usage: nothing to charge but the estimate, and the record
    # still says what the answer was (its model, id and finish reason, for the trace).
    server = await start_sidecar(cost_budget("10.000000"))
    a = await send(server.stub, chat(stream=True), "nu-1", response=sse_response(None))
    assert not a.refused
    (record,) = records(server, "nu-1", "response")
    assert record["usage"] is None
    assert (record["response_model"], record["response_id"]) == (MODEL, "chatcmpl-2")
    assert record["finish_reasons"] == ["stop"]


async def test_a_provider_error_gives_the_reservation_back(
    backend: str | None, start_sidecar: StartSidecar
) -> None:
    server = await start_sidecar(cost_budget("10.000000"), redis=backend)
    error = b'{"error": {"type": "server_error", "message": "overloaded"}}'
    failed = [response_headers(503), response_body(error)]
    a = await send(server.stub, chat(), "pe-1", response=failed)
    assert not a.refused
    assert await spent_usd(server, chat(), identity()) == 0.0


async def test_a_reservation_whose_response_never_comes_is_released_after_its_ttl(
    backend: str | None, start_sidecar: StartSidecar
) -> None:
    body = chat()
    server = await start_sidecar(cost_budget(room_for(1.5)), redis=backend)
    engine = server.sidecar.engine
    ttl = 60.0
    engine.config = replace(
        engine.config, limits=replace(engine.config.limits, reservation_ttl_s=ttl)
    )
    # Envoy holds the stream open while the provider never answers.
    pending = Exchange(server.stub)
    await pending.send(request_headers(body=body, request_id="ttl-1", headers=identity()))
    assert (await pending.send(request_body(body))).WhichOneof("response") == "request_body"

    held = await send(server.stub, body, "ttl-2")
    assert (held.status, held.code) == (429, "budget_exceeded")

    # The sidecar's periodic sweep, run as it would once the ttl has passed (no real waiting:
    # on a busy machine, a short real ttl could run out before the request above is decided).
    state = server.sidecar.state
    assert state is not None
    assert await state.expire_reservations(now=time.time() + ttl + 1) == 1
    again = await send(server.stub, body, "ttl-3")
    assert not again.refused  # the stale reservation went back

    # The answer arrives after all: charged at its real cost, on top of what is reserved now.
    usage = (40, 60)
    for msg in buffered_response(usage):
        await pending.send(msg)
    await pending.close()
    real = load_catalog().cost(MODEL, Usage(*usage))
    assert real is not None
    expected = real + estimate(body).estimated_usd
    assert await spent_usd(server, body, identity()) == pytest.approx(expected, abs=2e-6)


# -- alerts ----------------------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A webhook receiver whose first POST fails with a 500."""
    hook = Webhook(fail_first=1).start()
    try:
        yield hook
    finally:
        hook.stop()


async def test_a_notify_budget_lets_requests_through_and_alerts_at_50_80_100(
    backend: str | None, start_sidecar: StartSidecar, webhook: Webhook
) -> None:
    server = await start_sidecar(
        cost_budget(room_for(2), action="notify"), redis=backend, alert_webhook=webhook.url
    )
    answers = [await send(server.stub, chat(), f"n-{i}") for i in range(3)]

    assert not any(a.refused for a in answers)  # notify never refuses
    alerts = [records(server, f"n-{i}")[0]["alerts"] for i in range(3)]
    assert [len(a) for a in alerts] == [1, 2, 0]
    assert "50% of" in alerts[0][0]
    assert "80% of" in alerts[1][0] and "100% of" in alerts[1][1]
    third = records(server, "n-2")[0]
    assert third["decision"] == "allow"
    assert {"policy": "acme_budget", "rule": "daily", "action": "notify"} in third["fired"]

    # The webhook answered the first POST with a 500: every alert still arrives, once, in order.
    await wait_for(lambda: len(webhook.received) == 3, "three alerts at the webhook")
    assert webhook.texts() == [*alerts[0], *alerts[1]]
    assert webhook.attempts == 4
    first = webhook.received[0]
    assert (first["org"], first["team"], first["user"]) == (ORG, "ml", "alice")
    assert (first["model"], first["request_id"]) == (MODEL, "n-0")
    notifier = server.sidecar.alerts
    # The receiver keeps a POST before its answer reaches the notifier, which then counts it.
    await wait_for(lambda: notifier.sent == 3, "the third delivery counted")
    assert (notifier.sent, notifier.failed, notifier.dropped) == (3, 0, 0)


async def test_a_block_budget_refuses_with_budget_exceeded_and_alerts(
    backend: str | None, start_sidecar: StartSidecar, webhook: Webhook
) -> None:
    server = await start_sidecar(
        cost_budget(room_for(2.5)), redis=backend, alert_webhook=webhook.url
    )
    answers = [await send(server.stub, chat(), f"k-{i}") for i in range(3)]

    assert [a.status for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.code == "budget_exceeded"
    assert refused.body["error"]["type"] == "policy_violation"
    assert refused.body["decision"] == "throttle"
    assert (refused.body["policy"], refused.body["rule"]) == ("acme_budget", "daily")
    assert "daily budget" in refused.body["reason"]
    assert int(refused.headers["retry-after"]) >= 1
    assert int(refused.headers["x-ratelimit-reset"]) >= 1
    blocked = records(server, "k-2")[0]["alerts"]
    assert len(blocked) == 1 and blocked[0].startswith("blocked by budget acme_budget/daily")
    crossed = records(server, "k-1")[0]["alerts"]  # 40 % -> 80 % of the limit
    assert ["50% of" in crossed[0], "80% of" in crossed[1]] == [True, True]
    await wait_for(lambda: len(webhook.received) == 3, "three alerts at the webhook")
    assert webhook.texts() == [*crossed, *blocked]


async def test_the_seed_max_cost_per_day_is_a_per_user_daily_budget(
    backend: str | None, start_sidecar: StartSidecar
) -> None:
    seed = {
        "policy_name": "dev_team_restrictions",
        "environment": "development",
        "rules": [
            {
                "type": "model_access",
                "models": ["gpt-4o-mini", "claude-3-haiku"],
                "max_cost_per_day": float(room_for(2.5)),
            },
            {"type": "content_filter", "patterns": ["password", "api_key"], "action": "block"},
        ],
    }
    server = await start_sidecar(json.dumps(seed), redis=backend)

    def dev(user: str | None) -> dict[str, str]:
        return {**identity(user), "x-environment": "development"}

    alice = [await send(server.stub, chat(), f"s-{i}", headers=dev("alice")) for i in range(3)]
    assert [a.status for a in alice] == [200, 200, 429]
    assert alice[2].code == "budget_exceeded"
    assert alice[2].body["policy"] == "dev_team_restrictions"
    assert "daily budget" in alice[2].body["reason"]
    assert not (await send(server.stub, chat(), "s-bob", headers=dev("bob"))).refused
    anon = await send(server.stub, chat(), "s-anon", headers=dev(None))
    assert (anon.status, anon.code) == (400, "missing_identity")
    # Outside its environment the policy does not apply: no budget, no identity needed.
    elsewhere = await send(server.stub, chat(), "s-prod", headers=identity(None))
    assert not elsewhere.refused


# -- Redis failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("on_error", ["closed", "open"])
async def test_redis_killed_mid_load_then_restarted(
    own_redis: RedisServer, start_sidecar: StartSidecar, on_error: str
) -> None:
    server = await start_sidecar(
        rate_limit(requests=10_000, on_error=on_error) + cost_budget("100.0", on_error=on_error),
        redis=own_redis.url,
    )
    assert not (await send(server.stub, chat(), "warm")).refused
    killed = asyncio.Event()
    answered = 0

    async def one(i: int, *, after_kill: bool) -> Answer:
        # Half the streams are in flight when Redis dies: headers sent, body not yet.
        nonlocal answered
        body = chat()
        ex = Exchange(server.stub)
        async with asyncio.timeout(NO_HANG_S):
            await ex.send(request_headers(body=body, request_id=f"m-{i}", headers=identity()))
            if after_kill:
                await killed.wait()
            await ex.send(request_body(body))
            code = await ex.close()
        answered += 1
        assert code == grpc.StatusCode.OK  # never a gRPC error: Envoy would answer its own 500
        return Answer(ex.answers)

    tasks = [asyncio.create_task(one(i, after_kill=i % 2 == 1)) for i in range(100)]
    while answered == 0:
        await asyncio.sleep(0.001)
    own_redis.kill()
    killed.set()
    answers = await asyncio.gather(*tasks)

    def failed_as_configured(i: int, a: Answer) -> bool:
        if on_error == "closed":
            return (a.status, a.code) == (503, "state_unavailable")
        (record,) = records(server, f"m-{i}")
        return not a.refused and record["degraded"] == ["state_unavailable:open"]

    def admitted_normally(i: int, a: Answer) -> bool:
        (record,) = records(server, f"m-{i}")
        return not a.refused and record["degraded"] == []

    for i, a in enumerate(answers):
        if i % 2 == 1:  # decided after the kill: without Redis, on_error decides
            assert failed_as_configured(i, a), a.answers[-1]
        else:  # decided before or after the kill
            assert failed_as_configured(i, a) or admitted_normally(i, a), a.answers[-1]
    if on_error == "closed":
        refusal = next(a for a in answers if a.refused)
        assert refusal.body["error"]["type"] == "server_error"
        # The client learns that it may retry; the operator's record says why (no Redis
        # address or error text goes to the client).
        assert "retry later" in refusal.body["reason"]
        assert "127.0.0.1" not in refusal.body["reason"]
        assert records(server, "m-1")[0]["error_code"] == "state_unavailable"
        assert "on_error: closed" in records(server, "m-1")[0]["reason"]
    else:
        assert server.sidecar.engine.degraded_count >= 50

    own_redis.start()  # empty, on the same port
    back = await send(server.stub, chat(), "back")
    assert not back.refused
    assert records(server, "back")[0]["degraded"] == []


# -- two sidecar processes ---------------------------------------------------------------------


def serve_process(policy_dir: Path, redis_url: str, workdir: Path) -> ManagedProcess:
    """``policy-extproc serve --redis URL`` on a free port, started; ready once it says so."""
    cli = Path(sys.executable).with_name("policy-extproc")
    port = free_port()  # the CLI cannot bind port 0 and report it
    argv = [
        str(cli),
        "serve",
        "--policies", str(policy_dir),
        "--listen", f"127.0.0.1:{port}",
        "--redis", redis_url,
        "--audit-log", str(workdir / "audit.jsonl"),
        "--admin-listen", "off",
        # No Envoy here to give up: 200 streams at once on two shared cores can take longer
        # than Envoy's 0.5 s, and a decision refused as envoy_gave_up is not the test's subject.
        "--message-timeout", "10",
        "--max-inflight", "0",  # 100 requests at once each: none shed, all counted
    ]  # fmt: skip
    proc = ManagedProcess(argv, "policy-extproc", workdir=workdir)
    proc.port = port
    proc.spawn()
    proc.poll("serving", lambda: "serving on" in proc.stderr_path.read_text(), 30)
    return proc


@pytest.fixture
def two_serve_processes(tmp_path: Path, redis_url: str) -> Iterator[list[ManagedProcess]]:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "limits.yaml").write_text(rate_limit(requests=50))
    started: list[ManagedProcess] = []
    try:
        for i in range(2):
            started.append(serve_process(policy_dir, redis_url, tmp_path / f"replica-{i}"))
        yield started
    finally:
        for proc in started:
            proc.stop()


async def test_two_serve_processes_sharing_redis_admit_exactly_50_of_200(
    two_serve_processes: list[ManagedProcess],
) -> None:
    async with AsyncExitStack() as stack:
        stubs = []
        for proc in two_serve_processes:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}")
            await stack.enter_async_context(channel)
            stubs.append(epg.ExternalProcessorStub(channel))
        answers = await concurrently(stubs, 200, chat(), "p")

    for a in answers:
        if a.refused:
            assert (a.status, a.code) == (429, "rate_limited"), a.body
            assert a.headers["x-ratelimit-limit"] == "50"
    # Every attempt, from both processes' audit logs.
    attempts = []
    for proc in two_serve_processes:
        lines = (proc.workdir / "audit.jsonl").read_text().splitlines()
        attempts += [r["error_code"] or r["decision"] for r in map(json.loads, lines)]
    admitted = sum(not a.refused for a in answers)
    assert attempts.count("allow") == admitted
    assert_admitted(admitted, 50, attempts.count("state_unavailable"))
