"""Provider failover through a real Envoy: provider A starts failing, traffic moves to B after
no more than the breaker's threshold of requests reached A, A recovers, traffic moves back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from policy_extproc.mockprovider import MockProvider
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import EnvoyProcess, Response, http_request

THRESHOLD = 3
COOLDOWN_S = 1.0
POLICY = f"""
policy_name: resilience
org: acme
rules:
  - type: failover
    provider: openai
    fallbacks: [azure-openai]
    failure_threshold: {THRESHOLD}
    window: 30s
    cooldown: {COOLDOWN_S}s
"""
HEADERS = {"x-org-id": "acme", "x-user-id": "u1"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    with running_sidecar(POLICY, tmp_path_factory.mktemp("failover")) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(envoy_factory, sidecar: RunningSidecar) -> EnvoyProcess:  # type: ignore[no-untyped-def]
    return envoy_factory(sidecar.port)


def test_traffic_moves_away_and_back(
    proxy: EnvoyProcess, sidecar: RunningSidecar, mock_providers: dict[str, MockProvider]
) -> None:
    def send() -> Response:
        return http_request(proxy.url, "/v1/chat/completions", BODY, headers=HEADERS)

    a, b = mock_providers["openai"], mock_providers["azure-openai"]
    for p in (a, b):
        p.reset()
    assert send().headers["x-mock-provider"] == "openai"

    a.configure(fail_rate=1.0)  # A starts failing
    served_by = []
    for _ in range(THRESHOLD + 5):
        resp = send()
        served_by.append(resp.headers.get("x-mock-provider"))
        sidecar.settle()  # the breaker is fed off the response path
    failures_at_a = a.stats()["total"] - 1
    assert failures_at_a <= THRESHOLD, served_by
    assert served_by[-5:] == ["azure-openai"] * 5
    # Every record names where its request went: openai until the breaker opened, then B.
    requests = [r for r in sidecar.sink.records if r.phase == "request"]
    rerouted = [r for r in requests if any(f.action == "reroute" for f in r.fired)]
    assert rerouted and all(r.provider == "azure-openai" for r in rerouted)
    assert {r.provider for r in requests if r not in rerouted} == {"openai"}

    a.configure(fail_rate=0.0)  # A recovers; after the cooldown a probe goes back to A
    time.sleep(COOLDOWN_S + 0.2)
    assert send().headers["x-mock-provider"] == "openai"
    sidecar.settle()
    assert [send().headers["x-mock-provider"] for _ in range(3)] == ["openai"] * 3
