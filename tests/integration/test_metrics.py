"""The metrics endpoint of a running sidecar: requests over real gRPC, scraped over real HTTP.

Each test starts an in-process ``Sidecar`` with ``metrics_listen`` on port 0, plays Envoy's side
of a few ext_proc streams, and reads ``/metrics`` back with urllib, as Prometheus would.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from policy_extproc.cli import main
from policy_extproc.metrics import Metrics
from policy_extproc.server import ServerConfig, Sidecar
from tests.integration.helpers import (
    Exchange,
    Running,
    chat_body,
    full_exchange,
    full_request,
    immediate_json,
    request_headers,
    run_exchange,
    running_sidecar,
    wait_for,
    write_policies,
)
from tests.otlp_receiver import OtlpReceiver
from tests.redis_server import RedisServer

POLICIES = """
- policy_name: acme_base
  org: acme
  rules:
    - type: content_filter
      id: secrets
      keywords: [confidential]
      action: block
    - type: content_filter
      id: codenames
      keywords: [project-aurora]
      action: redact
    - type: content_filter
      id: leaks
      keywords: [bluebird]
      action: redact
      direction: response
    - type: pii
      id: contacts
      entities: [EMAIL]
"""

RATE_LIMITED = """
- policy_name: acme_limits
  org: acme
  rules:
    - type: rate_limit
      id: per_user
      per: user
      window: minute
      requests: 1000
      on_error: {on_error}
"""

USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def answer(text: str = "Paris.") -> bytes:
    """A buffered chat completion with usage, as OpenAI answers."""
    return json.dumps(
        {
            "id": "c-1",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": USAGE,
        }
    ).encode()


DECISIONS = "policy_extproc_decisions_total"
FIRINGS = "policy_extproc_rule_firings_total"
REDACTIONS = "policy_extproc_redactions_total"
ALLOWED = {"action": "allow", "policy": "", "rule": "", "mode": "enforce"}


def decided(action: str, rule: str) -> dict[str, str]:
    """Labels of a decision by a rule of acme_base."""
    return {"action": action, "policy": "acme_base", "rule": rule, "mode": "enforce"}


def fired(rule: str, action: str = "modify") -> dict[str, str]:
    """Labels of a firing of a rule of acme_base."""
    return {"policy": "acme_base", "rule": rule, "action": action}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of /metrics, by name and label set."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def start(stack: AsyncExitStack, where: Path, policies: str, **config: Any) -> Running:
    config.setdefault("admin_listen", None)  # its default port is fixed: tests would collide
    config.setdefault("watch_interval_s", 0.05)
    return await stack.enter_async_context(
        running_sidecar(where, policies, metrics_listen="127.0.0.1:0", **config)
    )


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


@pytest.fixture
async def server(stack: AsyncExitStack, tmp_path: Path) -> Running:
    return await start(stack, tmp_path, POLICIES)


# -- decisions -----------------------------------------------------------------------------------


async def test_allow_block_and_redact_are_counted(server: Running) -> None:
    stub, port = server.stub, server.sidecar.metrics_port
    assert port != 0
    allow = full_exchange(chat_body("Capital of France?"), response=answer(), request_id="allow")
    await run_exchange(stub, allow)
    blocked = await run_exchange(stub, full_request(chat_body("confidential"), request_id="block"))
    assert blocked[-1].immediate_response.status.code == 403
    await run_exchange(stub, full_request(chat_body("about project-aurora"), request_id="redact"))
    pii = chat_body("mail a@b.example or c@d.example")
    await run_exchange(stub, full_request(pii, request_id="pii"))
    await run_exchange(stub, full_request(b"{not json", request_id="bad"))
    decisions = {(r.request_id, r.phase): r.decision for r in server.sink.records}
    assert decisions[("redact", "request")] == "modify"

    m = scrape(port)
    assert sample(m, DECISIONS, **ALLOWED) == 1
    assert sample(m, DECISIONS, **decided("block", "secrets")) == 1
    assert sample(m, DECISIONS, **decided("modify", "codenames")) == 1
    assert sample(m, "policy_extproc_errors_total", code="malformed_body") == 1
    assert sample(m, "policy_extproc_decision_latency_seconds_count") == 5
    assert sample(m, FIRINGS, **fired("secrets", "block")) == 1
    assert sample(m, FIRINGS, **fired("codenames")) == 1
    assert sample(m, FIRINGS, **fired("contacts")) == 1
    # Redactions by type: a content filter's rule id, or the PII entity.
    assert sample(m, REDACTIONS, type="codenames") == 1
    assert sample(m, REDACTIONS, type="EMAIL") == 2
    assert sample(m, "policy_extproc_tokens_total", direction="input", model="gpt-4o-mini") == 12
    assert sample(m, "policy_extproc_tokens_total", direction="output", model="gpt-4o-mini") == 5
    cost = sample(m, "policy_extproc_cost_usd_total", model="gpt-4o-mini")
    assert cost is not None and cost > 0
    assert sample(m, "policy_extproc_state_errors_total", on_error="closed") == 0
    assert sample(m, "policy_extproc_state_errors_total", on_error="open") == 0


async def test_a_redacted_request_and_its_answer_count_the_redaction_once(server: Running) -> None:
    exchange = full_exchange(chat_body("about project-aurora"), response=answer(), request_id="r")
    await run_exchange(server.stub, exchange)
    phases = [r.phase for r in server.sink.records]
    assert phases == ["request", "response"]  # the response record repeats the request's
    m = scrape(server.sidecar.metrics_port)
    assert sample(m, REDACTIONS, type="codenames") == 1
    assert sample(m, FIRINGS, **fired("codenames")) == 1
    assert sample(m, "policy_extproc_decision_latency_seconds_count") == 1


async def test_an_output_guardrail_firing_is_counted(server: Running) -> None:
    leak = answer("the bluebird flies")
    await run_exchange(
        server.stub, full_exchange(chat_body("News?"), response=leak, request_id="o")
    )
    (response,) = [r for r in server.sink.records if r.phase == "response"]
    assert [f.rule for f in response.fired] == ["leaks"]
    m = scrape(server.sidecar.metrics_port)
    assert sample(m, FIRINGS, **fired("leaks")) == 1
    assert sample(m, REDACTIONS, type="leaks") == 1
    # The request itself was allowed; the answer's rewrite is no second request decision.
    assert sample(m, DECISIONS, **ALLOWED) == 1
    assert sample(m, "policy_extproc_decision_latency_seconds_count") == 1


# -- what is read at scrape time -----------------------------------------------------------------


async def test_healthz_answers(server: Running) -> None:
    url = f"http://127.0.0.1:{server.sidecar.metrics_port}/healthz"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert (resp.status, resp.read()) == (200, b"ok\n")


async def test_the_policy_set_in_force_and_its_reloads(server: Running) -> None:
    port = server.sidecar.metrics_port
    first = server.sidecar.store.current.version
    m = scrape(port)
    assert sample(m, "policy_extproc_policy_info", version=first) == 1
    assert sample(m, "policy_extproc_policies") == 1
    assert sample(m, "policy_extproc_policy_rules") == 4
    assert sample(m, "policy_extproc_policy_reload_failing") == 0
    assert sample(m, "policy_extproc_policy_reload_failures_total") == 0
    loaded = sample(m, "policy_extproc_policy_loaded_timestamp_seconds")
    assert loaded == server.sidecar.store.loaded_at

    write_policies(server.policy_dir, POLICIES.replace("[confidential]", "[confidential, x]"))
    await wait_for(lambda: server.sidecar.store.current.version != first, "the reload")
    second = server.sidecar.store.current.version
    m = scrape(port)
    assert sample(m, "policy_extproc_policy_info", version=second) == 1
    assert sample(m, "policy_extproc_policy_info", version=first) is None

    write_policies(server.policy_dir, "policy_name: [broken\n")
    await wait_for(lambda: server.sidecar.store.last_error is not None, "the refused reload")
    m = scrape(port)
    assert sample(m, "policy_extproc_policy_reload_failing") == 1
    assert sample(m, "policy_extproc_policy_reload_failures_total") >= 1
    assert sample(m, "policy_extproc_policy_info", version=second) == 1  # still serving it


async def test_the_process_collectors_are_served(server: Running) -> None:
    m = scrape(server.sidecar.metrics_port)
    names = {name for name, _ in m}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total",
            "process_open_fds", "python_gc_collections_total"} <= names  # fmt: skip
    assert any(name == "python_info" for name, _ in m)


async def test_open_streams_are_read_at_scrape_time(server: Running) -> None:
    port = server.sidecar.metrics_port
    assert sample(scrape(port), "policy_extproc_open_streams") == 0
    body = chat_body("Capital of France?")
    ex = Exchange(server.stub)
    await ex.send(request_headers(body=body, request_id="open"))
    assert sample(scrape(port), "policy_extproc_open_streams") == 1
    assert await ex.close() == grpc.StatusCode.OK
    await wait_for(
        lambda: server.sidecar.processor is not None and server.sidecar.processor.open_streams == 0,
        "the stream to close",
    )
    assert sample(scrape(port), "policy_extproc_open_streams") == 0


async def test_observe_accounting_is_counted_at_scrape_time(server: Running) -> None:
    port = server.sidecar.metrics_port
    observer = server.sidecar.engine.observer
    m = scrape(port)
    assert sample(m, "policy_extproc_observe_streams_total") == observer.streams
    assert sample(m, "policy_extproc_responses_unobserved_total") == observer.unobserved
    observer.stream()  # an observe stream opened by Envoy
    observer.unobserved += 1  # as the sweep counts an answer it charged at its estimate
    m = scrape(port)
    assert sample(m, "policy_extproc_observe_streams_total") == observer.streams >= 1
    assert sample(m, "policy_extproc_responses_unobserved_total") == observer.unobserved >= 1


async def test_alert_and_audit_span_queues_are_reported(
    stack: AsyncExitStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # ms; the SDK's default batches for 5 s
    receiver = stack.enter_context(OtlpReceiver())
    server = await start(stack, tmp_path, POLICIES, otlp_endpoint=receiver.endpoint)
    port = server.sidecar.metrics_port
    m = scrape(port)
    assert sample(m, "policy_extproc_alert_queue_depth") == 0
    for name in ("sent", "failed", "dropped"):
        assert sample(m, f"policy_extproc_alerts_{name}_total") == 0
    assert sample(m, "policy_extproc_audit_span_backlog") == 0

    for i in range(3):
        await run_exchange(server.stub, full_request(chat_body("hello"), request_id=f"s-{i}"))
    spans = "policy_extproc_audit_spans_total"
    m = scrape(port)
    assert sample(m, spans, outcome="queued") == 3
    assert sample(m, spans, outcome="not_created") == 0

    def exported() -> bool:
        return sample(scrape(port), spans, outcome="exported") == 3

    await wait_for(exported, "the spans to be exported")
    m = scrape(port)
    assert sample(m, "policy_extproc_audit_span_backlog") == 0
    assert sample(m, spans, outcome="export_failed") == 0


# -- Redis failures ------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("on_error", ["closed", "open"])
async def test_a_dead_redis_shows_in_the_state_error_counter(
    stack: AsyncExitStack, tmp_path: Path, own_redis: RedisServer, on_error: str
) -> None:
    server = await start(
        stack, tmp_path, RATE_LIMITED.format(on_error=on_error), redis=own_redis.url
    )
    port = server.sidecar.metrics_port
    headers = {"x-user-id": "alice"}
    ok = await run_exchange(
        server.stub, full_request(chat_body("hi"), request_id="before", headers=headers)
    )
    assert ok[-1].WhichOneof("response") == "request_body"
    m = scrape(port)
    assert sample(m, "policy_extproc_state_errors_total", on_error=on_error) == 0

    await asyncio.to_thread(own_redis.kill)
    after = await run_exchange(
        server.stub, full_request(chat_body("hi"), request_id="after", headers=headers)
    )
    m = scrape(port)
    assert sample(m, "policy_extproc_state_errors_total", on_error=on_error) == 1
    other = "open" if on_error == "closed" else "closed"
    assert sample(m, "policy_extproc_state_errors_total", on_error=other) == 0
    if on_error == "closed":
        assert immediate_json(after[-1])["error"]["code"] == "state_unavailable"
        assert sample(m, "policy_extproc_errors_total", code="state_unavailable") == 1
    else:
        assert after[-1].WhichOneof("response") == "request_body"
        assert sample(m, "policy_extproc_degraded_total", kind="state_unavailable:open") == 1
        assert sample(m, DECISIONS, **ALLOWED) == 2


REDIS_LATENCY = "policy_extproc_redis_latency_seconds"


@pytest.mark.redis
async def test_every_redis_call_is_timed_by_operation_and_outcome(
    stack: AsyncExitStack, tmp_path: Path, own_redis: RedisServer
) -> None:
    server = await start(stack, tmp_path, RATE_LIMITED.format(on_error="open"), redis=own_redis.url)
    port = server.sidecar.metrics_port
    headers = {"x-user-id": "alice"}

    async def one(request_id: str) -> None:
        await run_exchange(
            server.stub, full_request(chat_body("hi"), request_id=request_id, headers=headers)
        )

    def count(operation: str, outcome: str) -> float:
        labels = {"operation": operation, "outcome": outcome}
        return sample(scrape(port), f"{REDIS_LATENCY}_count", **labels) or 0

    await one("ok-1")
    assert count("admit", "ok") == 1
    # The buckets hold it: an admit on a local Redis is under the 100 ms timeout.
    assert sample(scrape(port), f"{REDIS_LATENCY}_bucket", operation="admit", outcome="ok",
                  le="0.1") == 1  # fmt: skip
    assert count("admit", "timeout") == count("admit", "error") == 0

    await asyncio.to_thread(own_redis.pause)  # connected, and nothing answers
    try:
        await one("paused")
    finally:
        await asyncio.to_thread(own_redis.resume)
    assert count("admit", "timeout") == 1

    await asyncio.to_thread(own_redis.kill)  # nothing listens: refused at once
    await one("dead")
    assert count("admit", "error") + count("admit", "timeout") == 2
    assert count("admit", "ok") == 1


def test_redis_latency_labels_stay_bounded() -> None:
    metrics = Metrics("127.0.0.1:0")
    for i in range(50):
        metrics.sink.redis(f"made-up-{i}", f"odd-{i}", 0.001)
    metrics.sink.redis("admit", "ok", 0.001)
    labels = {
        (s.labels["operation"], s.labels["outcome"])
        for family in metrics.registry.collect()
        if family.name == REDIS_LATENCY
        for s in family.samples
    }
    assert labels == {("other", "other"), ("admit", "ok")}


# -- start-up failures ---------------------------------------------------------------------------


def test_a_bad_metrics_address_fails_before_anything_starts(tmp_path: Path) -> None:
    config = ServerConfig(policies=(str(tmp_path),), audit_log=None, metrics_listen="9090")
    with pytest.raises(ValueError, match="metrics listen address must be HOST:PORT"):
        Sidecar(config)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


async def test_a_metrics_port_in_use_stops_the_sidecar_it_started(
    tmp_path: Path, taken_port: int
) -> None:
    write_policies(tmp_path / "policies", POLICIES)
    sidecar = Sidecar(
        ServerConfig(
            policies=(str(tmp_path / "policies"),),
            listen="127.0.0.1:0",
            audit_log=None,
            admin_listen=None,
            metrics_listen=f"127.0.0.1:{taken_port}",
        )
    )
    with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{taken_port}"):
        await sidecar.start()
    # The gRPC listener it had opened is closed again.
    assert sidecar.port != 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", sidecar.port))


def test_cli_refuses_a_bad_metrics_address(tmp_path: Path) -> None:
    write_policies(tmp_path, POLICIES)
    result = CliRunner().invoke(
        main, ["serve", "--policies", str(tmp_path), "--metrics-listen", "localhost"]
    )
    assert result.exit_code == 2, result.output
    assert "--metrics-listen" in result.output
    assert "metrics listen address must be HOST:PORT, not 'localhost'" in result.output


@pytest.mark.parametrize("value", ["off", "none", ""])
def test_cli_metrics_off(value: str) -> None:
    from policy_extproc.cli.options import parse_listen_address

    assert parse_listen_address(value) is None


def test_cli_reports_a_metrics_port_in_use(tmp_path: Path, taken_port: int) -> None:
    write_policies(tmp_path / "policies", POLICIES)
    argv = [
        "serve",
        "--policies", str(tmp_path / "policies"),
        "--listen", "127.0.0.1:0",
        "--audit-log", str(tmp_path / "audit.jsonl"),
        "--admin-listen", "off",
        "--metrics-listen", f"127.0.0.1:{taken_port}",
    ]  # fmt: skip
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1, result.output
    assert f"cannot start: cannot serve metrics on 127.0.0.1:{taken_port}" in result.output


async def test_budget_thresholds_and_refusals_are_counted(
    stack: AsyncExitStack, tmp_path: Path
) -> None:
    from tests.integration.test_limits_sidecar import chat, cost_budget, room_for, send

    server = await start(stack, tmp_path, cost_budget(room_for(2.5)))
    answers = [await send(server.stub, chat(), f"k-{i}") for i in range(3)]
    assert [a.refused for a in answers] == [False, False, True]
    m = scrape(server.sidecar.metrics_port)
    name = "policy_extproc_budget_alerts_total"
    by = {"policy": "acme_budget", "rule": "daily"}
    assert sample(m, name, **by, threshold="50%") == 1
    assert sample(m, name, **by, threshold="80%") == 1
    assert sample(m, name, **by, threshold="blocked") == 1


async def test_phase_latency_is_observed_per_message(server: Running) -> None:
    await run_exchange(server.stub, full_request(chat_body("hello"), request_id="p-1"))
    m = scrape(server.sidecar.metrics_port)
    for phase in ("request_headers", "request_body"):
        count = sample(m, "policy_extproc_phase_seconds_count", phase=phase)
        assert count is not None and count >= 1, phase
