"""Response accounting off the answer path (serve --response-accounting observe), end to end:
a client, a real Envoy running the shipped template (two ext_proc filters), the real sidecar,
a mock provider.

The budget is settled with the usage the observe filter read, for buffered and streamed
answers; the inline filter is not asked for the response at all; an output guardrail still
rewrites the answer inline; and when no observe stream reports (Envoy without the observe
filter), the reservation is charged at its estimate once the timeout passes, audited.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy_extproc.enforce import limits
from policy_extproc.llm.request import parse_request
from policy_extproc.llm.response import Usage
from policy_extproc.mockprovider import MockProvider
from policy_extproc.policy.context import build_context
from policy_extproc.state.base import BudgetSpec
from tests.e2e.conftest import EnvoyFactory
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import EnvoyPorts, EnvoyProcess, http_request, render_config
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
POLICIES = """
- policy_name: acme_budget
  org: acme
  rules:
    - type: cost_budget
      id: daily
      per: user
      limit_usd: 10.0
    - type: content_filter
      id: no_forbidden
      keywords: [forbidden]
      action: block
- policy_name: guarded_team
  org: acme
  team: guarded
  rules:
    - type: content_filter
      id: no_secret_out
      patterns: ["launch code \\\\d+"]
      action: redact
      direction: response
"""
_OBSERVE_BLOCK = re.compile(r"^[ \t]*# BEGIN observe\n.*?^[ \t]*# END observe\n", re.M | re.S)


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def user(name: str, team: str = "ml") -> dict[str, str]:
    return {"x-org-id": "acme", "x-team-id": team, "x-user-id": name}


def poll(check: Any, what: str, limit_s: float = 15.0) -> Any:
    """Wait for something the sidecar does off the response path; fail, not hang."""
    deadline = time.monotonic() + limit_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return found


def records(sc: RunningSidecar, request_id: str, phase: str) -> list[dict[str, Any]]:
    return [r.to_dict() for r in sc.records(request_id) if r.phase == phase]


def spent(sc: RunningSidecar, body: dict[str, Any], headers: dict[str, str]) -> float:
    """What the user's daily budget holds, read back with a zero probe."""
    side = sc.sidecar
    sc.settle()
    ctx = build_context(
        headers, parse_request(CHAT, json.dumps(body).encode()), catalog=side.catalog
    )
    es = side.store.current.resolve(ctx.org, ctx.team, ctx.environment)
    (b,) = limits.plan(es, ctx, side.catalog, limits.Settings(), time.time()).budgets
    probe = BudgetSpec(b.key, b.limit_usd, 0.0, b.expires_at, enforce=False)
    adm = sc.loop.run(side.engine.state.admit("acme", "probe", budgets=[probe]))
    sc.loop.run(side.engine.state.release("acme", "probe"))
    return adm.budgets[0].spent_before_usd


def estimate(sc: RunningSidecar, body: dict[str, Any]) -> float:
    req = parse_request(CHAT, json.dumps(body).encode())
    return limits.estimate(req, sc.sidecar.catalog, limits.Settings()).usd


def cost_of(sc: RunningSidecar, usage: dict[str, int]) -> float:
    cost = sc.sidecar.catalog.cost(MODEL, Usage(usage["input_tokens"], usage["output_tokens"]))
    assert cost is not None and cost > 0
    return cost


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    with running_sidecar(
        POLICIES,
        tmp_path_factory.mktemp("observe"),
        admin_listen=None,
        response_accounting="observe",
        observe_timeout_s=0.4,
    ) as sc:
        yield sc


@pytest.fixture(scope="module")
def envoy(envoy_factory: EnvoyFactory, sidecar: RunningSidecar) -> EnvoyProcess:
    return envoy_factory(sidecar.port)


@pytest.fixture
def phases(sidecar: RunningSidecar) -> Iterator[list[str]]:
    """The phases of the inline filter's messages during the test (the servicer's hook)."""
    seen: list[str] = []
    servicer = sidecar.sidecar.processor
    before = servicer.on_phase
    servicer.on_phase = lambda phase, _s: seen.append(phase)
    try:
        yield seen
    finally:
        servicer.on_phase = before


def test_a_buffered_answer_is_settled_with_its_real_usage_off_the_answer_path(
    envoy: EnvoyProcess, mock_provider: MockProvider, sidecar: RunningSidecar, phases: list[str]
) -> None:
    body = chat("tell me about budgets", max_tokens=800)
    who = user("obs-buffered")

    resp = http_request(envoy.url, CHAT, body, headers=who)

    assert resp.status == 200, resp.body
    assert resp.headers["x-policy-decision"] == "allow"  # from the route, not a response phase
    # The inline filter decided the request and was never asked for the answer.
    assert phases == ["request_headers", "request_body"]
    request_id = resp.headers["x-request-id"]
    (record,) = poll(lambda: records(sidecar, request_id, "response"), "the response record")
    assert sidecar.sidecar.engine.observer.streams >= 1
    reported = resp.json()["usage"]
    assert record["usage"] == {
        "input_tokens": reported["prompt_tokens"],
        "output_tokens": reported["completion_tokens"],
    }
    cost = cost_of(sidecar, record["usage"])
    assert record["cost_usd"] == pytest.approx(cost)
    assert record["error_code"] is None
    assert record["user"] == "obs-buffered" and record["decision"] == "allow"
    # The budget holds the real cost, not the estimate reserved at admission (far above it:
    # 800 output tokens estimated, a few answered).
    assert estimate(sidecar, body) > 2 * cost
    assert spent(sidecar, body, who) == pytest.approx(cost, abs=1e-6)


def test_a_streamed_answer_is_settled_with_the_usage_of_its_last_chunk(
    envoy: EnvoyProcess, mock_provider: MockProvider, sidecar: RunningSidecar, phases: list[str]
) -> None:
    body = chat("stream me an answer", stream=True)
    who = user("obs-stream")

    resp = http_request(envoy.url, CHAT, body, headers=who)

    assert resp.status == 200, resp.body
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert phases == ["request_headers", "request_body"]
    # Usage was asked for; only an inline filter could take its chunk out again, so the
    # client gets it (the documented cost of observe mode).
    assert mock_provider.stats()["last_body"]["stream_options"] == {"include_usage": True}
    frames = [json.loads(d) for _, d in resp.sse() if d != "[DONE]"]
    (reported,) = [f["usage"] for f in frames if f.get("choices") == [] and f.get("usage")]
    request_id = resp.headers["x-request-id"]
    (record,) = poll(lambda: records(sidecar, request_id, "response"), "the response record")
    assert record["usage"] == {
        "input_tokens": reported["prompt_tokens"],
        "output_tokens": reported["completion_tokens"],
    }
    cost = cost_of(sidecar, record["usage"])
    assert spent(sidecar, body, who) == pytest.approx(cost, abs=1e-6)


def test_an_output_guardrail_still_rewrites_the_answer_inline(
    envoy: EnvoyProcess, mock_provider: MockProvider, sidecar: RunningSidecar, phases: list[str]
) -> None:
    body = chat("repeat: the launch code 12345 is secret")
    who = user("obs-guarded", team="guarded")

    resp = http_request(envoy.url, CHAT, body, headers=who)

    assert resp.status == 200, resp.body
    text = resp.json()["choices"][0]["message"]["content"]
    assert "12345" not in text  # the mock echoes the prompt: the guardrail took it out
    assert "launch code 12345" in mock_provider.stats()["last_body"]["messages"][0]["content"]
    # Inline: the response phases were asked for, and no observe stream is involved.
    assert phases[:3] == ["request_headers", "request_body", "response_headers"]
    assert "response_body" in phases
    request_id = resp.headers["x-request-id"]
    (record,) = poll(lambda: records(sidecar, request_id, "response"), "the response record")
    assert record["usage"] is not None
    assert spent(sidecar, body, who) == pytest.approx(cost_of(sidecar, record["usage"]), abs=1e-6)


def test_when_no_observe_stream_reports_the_reservation_expires_at_its_estimate(
    envoy_factory: EnvoyFactory,
    mock_providers: dict[str, MockProvider],
    mock_provider: MockProvider,
    sidecar: RunningSidecar,
    tmp_path: Path,
) -> None:
    # The same Envoy without the observe filter: the answer is never reported.
    ports = EnvoyPorts(
        extproc=sidecar.port,
        openai=mock_providers["openai"].port,
        azure=mock_providers["azure-openai"].port,
        anthropic=mock_providers["anthropic"].port,
        listen=0,
        admin=0,
    )
    text = _OBSERVE_BLOCK.sub("", render_config(ports))
    assert "observability_mode: true" not in text
    lost = EnvoyProcess(ports, config_text=text, workdir=tmp_path).start()
    try:
        body = chat("nobody will report this answer", max_tokens=300)
        who = user("obs-lost")
        resp = http_request(lost.url, CHAT, body, headers=who)
        assert resp.status == 200, resp.body
    finally:
        lost.stop()
    request_id = resp.headers["x-request-id"]
    # Until the timeout, the estimate is reserved; then it is settled at it, and audited.
    (record,) = poll(lambda: records(sidecar, request_id, "response"), "the unobserved record")
    assert record["error_code"] == "response_unobserved"
    assert record["usage"] is None
    guess = estimate(sidecar, body)
    assert record["cost_usd"] == pytest.approx(guess)
    assert spent(sidecar, body, who) == pytest.approx(guess, abs=1e-6)
    # Settled once: the reservation is gone, and a late sweep finds nothing more.
    assert sidecar.loop.run(sidecar.sidecar.engine.observer.sweep()) == 0
    assert not sidecar.loop.run(sidecar.sidecar.engine.state.release("acme", request_id))


def test_with_redis_another_replica_settles_what_one_reserved(
    envoy_factory: EnvoyFactory,
    mock_providers: dict[str, MockProvider],
    mock_provider: MockProvider,
    tmp_path: Path,
) -> None:
    """The observe filter pointed at a second sidecar sharing the first one's Redis: the
    reservation made by one replica is found and settled by the other."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        shared = {
            "admin_listen": None,
            "response_accounting": "observe",
            "redis": server.url,
        }
        inline = stack.enter_context(running_sidecar(POLICIES, tmp_path / "a", **shared))
        other = stack.enter_context(running_sidecar(POLICIES, tmp_path / "b", **shared))
        ports = EnvoyPorts(
            extproc=inline.port,
            openai=mock_providers["openai"].port,
            azure=mock_providers["azure-openai"].port,
            anthropic=mock_providers["anthropic"].port,
            listen=0,
            admin=0,
        )
        config = yaml.safe_load(render_config(ports))
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        (observe_filter,) = [
            f for f in hcm["typed_config"]["http_filters"] if f["name"] == "policy_extproc.observe"
        ]
        grpc = observe_filter["typed_config"]["extension_config"]["typed_config"]["grpc_service"]
        grpc["envoy_grpc"]["cluster_name"] = "policy_extproc_b"
        clusters = config["static_resources"]["clusters"]
        b = copy.deepcopy(next(c for c in clusters if c["name"] == "policy_extproc"))
        b["name"] = b["load_assignment"]["cluster_name"] = "policy_extproc_b"
        addr = b["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        addr["socket_address"]["port_value"] = other.port
        clusters.append(b)
        envoy = EnvoyProcess(ports, config_text=yaml.safe_dump(config), workdir=tmp_path / "e")
        stack.callback(envoy.stop)
        envoy.start()

        body = chat("settled by the other replica", max_tokens=500)
        who = user("obs-redis")
        resp = http_request(envoy.url, CHAT, body, headers=who)

        assert resp.status == 200, resp.body
        request_id = resp.headers["x-request-id"]
        (record,) = poll(lambda: records(other, request_id, "response"), "the other's record")
        assert records(inline, request_id, "response") == []
        assert records(inline, request_id, "request")[0]["decision"] == "allow"
        cost = cost_of(inline, record["usage"])
        assert estimate(inline, body) > 2 * cost
        assert spent(inline, body, who) == pytest.approx(cost, abs=1e-6)
        # Taken by the other: the first one's sweep, past its deadline, finds nothing.
        far = time.monotonic() + 1e6
        assert inline.loop.run(inline.sidecar.engine.observer.sweep(now=far)) == 0


def test_a_refused_request_opens_no_observe_stream(
    envoy: EnvoyProcess, mock_provider: MockProvider, sidecar: RunningSidecar
) -> None:
    observer = sidecar.sidecar.engine.observer
    before = observer.streams

    resp = http_request(envoy.url, CHAT, chat("this is forbidden"), headers=user("obs-refused"))

    assert resp.status == 403, resp.body
    # Envoy's local reply runs back through the filter chain, observe filter included: the
    # matcher skips it there too (nothing marked in the metadata), so no stream is opened.
    ok = http_request(envoy.url, CHAT, chat("and this is fine"), headers=user("obs-refused"))
    assert ok.status == 200
    poll(lambda: records(sidecar, ok.headers["x-request-id"], "response"), "the allowed record")
    assert observer.streams == before + 1  # the allowed one's only
