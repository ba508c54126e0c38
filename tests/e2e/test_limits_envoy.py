"""Rate limits and budgets end to end: a client, a real Envoy, the real sidecar, a mock provider.

The sidecar runs in process on a background loop (so the test can read its audit records and
state); Envoy and the mock provider are the fixtures of tests/e2e/conftest.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from policy_extproc.audit.sink import RecordingSink
from policy_extproc.enforce import limits
from policy_extproc.llm.request import parse_request
from policy_extproc.llm.response import Usage
from policy_extproc.mockprovider import MockProvider
from policy_extproc.mockprovider.apis import chat_completions
from policy_extproc.policy.context import build_context
from policy_extproc.server import ServerConfig, Sidecar
from policy_extproc.state.base import BudgetSpec
from tests.e2e.conftest import EnvoyFactory
from tests.envoy_harness import BackgroundLoop, EnvoyProcess, http_request

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
POLICIES = """
- policy_name: acme_limits
  org: acme
  rules:
    - type: rate_limit
      id: per_user
      per: user
      requests: 3
      window: minute
    - type: cost_budget
      id: daily
      per: user
      limit_usd: 10.0
      period: day
"""


@dataclass
class RunningSidecar:
    sidecar: Sidecar
    sink: RecordingSink
    loop: BackgroundLoop

    def records(self, request_id: str, phase: str = "request") -> list[dict[str, Any]]:
        found = [r.to_dict() for r in list(self.sink.records)]
        return [r for r in found if r["request_id"] == request_id and r["phase"] == phase]

    def spent(self, body: dict[str, Any], headers: dict[str, str]) -> float:
        """What the request's budget has spent, read back from the state with a zero probe."""
        sc = self.sidecar
        self.loop.run(sc.engine.drain())  # settlements run off the response path
        ctx = build_context(
            headers, parse_request(CHAT, json.dumps(body).encode()), catalog=sc.catalog
        )
        es = sc.store.current.resolve(ctx.org, ctx.team, ctx.environment)
        (b,) = limits.plan(es, ctx, sc.catalog, limits.Settings(), time.time()).budgets
        probe = BudgetSpec(b.key, b.limit_usd, 0.0, b.expires_at, enforce=False)
        adm = self.loop.run(sc.engine.state.admit("acme", "probe", budgets=[probe]))
        self.loop.run(sc.engine.state.release("acme", "probe"))
        return adm.budgets[0].spent_before_usd


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    """The real sidecar (in-memory state) on a free port, in a background loop."""
    policy_dir: Path = tmp_path_factory.mktemp("policies")
    (policy_dir / "limits.yaml").write_text(POLICIES)
    sink = RecordingSink()
    config = ServerConfig(
        policies=(str(policy_dir),),
        listen="127.0.0.1:0",
        audit_log=None,
        grace_s=2.0,
        admin_listen=None,
    )
    running = Sidecar(config, sinks=[sink])
    loop = BackgroundLoop()
    try:
        loop.run(running.start())
        yield RunningSidecar(running, sink, loop)
    finally:
        loop.run(running.stop())
        loop.close()


@pytest.fixture(scope="module")
def envoy(envoy_factory: EnvoyFactory, sidecar: RunningSidecar) -> EnvoyProcess:
    return envoy_factory(sidecar.sidecar.port)


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def user(name: str) -> dict[str, str]:
    return {"x-org-id": "acme", "x-user-id": name}


def poll(check: Any, what: str, limit_s: float = 10.0) -> None:
    """Wait for something the sidecar does off the response path; fail, not hang."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_over_the_rate_limit_a_client_gets_a_429_with_the_ratelimit_headers(
    envoy: EnvoyProcess, mock_provider: MockProvider, sidecar: RunningSidecar
) -> None:
    for i in range(3):
        ok = http_request(envoy.url, CHAT, chat(f"hello {i}"), headers=user("rl-client"))
        assert ok.status == 200, ok.body
        assert ok.headers["x-policy-decision"] == "allow"

    resp = http_request(envoy.url, CHAT, chat("one too many"), headers=user("rl-client"))

    assert resp.status == 429
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-policy-decision"] == "throttle"
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["x-ratelimit-limit"] == "3"
    assert resp.headers["x-ratelimit-remaining"] == "0"
    assert int(resp.headers["x-ratelimit-reset"]) >= 1
    body = resp.json()
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["type"] == "policy_violation"
    assert (body["decision"], body["policy"], body["rule"]) == (
        "throttle",
        "acme_limits",
        "per_user",
    )
    assert body["request_id"] == resp.headers["x-request-id"]
    assert mock_provider.stats()["total"] == 3  # the fourth never reached the provider
    (record,) = sidecar.records(resp.headers["x-request-id"])
    assert record["decision"] == "throttle"


def _frames(sse: Any) -> list[dict[str, Any]]:
    """The JSON payloads of a mock provider's SSE frames."""
    data = [raw.removeprefix(b"data: ").strip() for raw in sse]
    return [json.loads(d) for d in data if d != b"[DONE]"]


def test_a_streamed_chat_under_a_budget_asks_for_usage_and_is_charged_its_cost(
    envoy: EnvoyProcess, mock_provider: MockProvider, sidecar: RunningSidecar
) -> None:
    body = chat("stream me a short answer", stream=True)  # no stream_options: the sidecar adds it

    resp = http_request(envoy.url, CHAT, body, headers=user("stream-client"))

    assert resp.status == 200, resp.body
    assert resp.headers["content-type"].startswith("text/event-stream")
    received = mock_provider.stats()["last_body"]
    assert received["stream_options"] == {"include_usage": True}
    assert received["messages"] == body["messages"]
    events = [data for _, data in resp.sse()]
    assert events[-1] == "[DONE]"
    # The client did not ask for usage: the usage-only chunk the sidecar asked for is taken
    # out of its stream (every chunk it gets has a choice), ...
    assert all(json.loads(data)["choices"] for data in events[:-1])
    # ... and the budget is charged what the provider reported in that chunk.
    (reported,) = [
        frame["usage"]
        for frame in _frames(chat_completions(received))  # the mock's answer to what it got
        if frame.get("choices") == []
    ]

    request_id = resp.headers["x-request-id"]
    poll(lambda: sidecar.records(request_id, "response"), "the response's audit record")
    (record,) = sidecar.records(request_id, "response")
    tokens = record["usage"]
    assert tokens == {
        "input_tokens": reported["prompt_tokens"],
        "output_tokens": reported["completion_tokens"],
    }
    cost = sidecar.sidecar.catalog.cost(
        MODEL, Usage(tokens["input_tokens"], tokens["output_tokens"])
    )
    assert cost is not None and cost > 0
    assert record["cost_usd"] == pytest.approx(cost)

    # The budget holds the real cost, not the estimate reserved at admission.
    assert sidecar.spent(body, user("stream-client")) == pytest.approx(cost, abs=1e-6)
