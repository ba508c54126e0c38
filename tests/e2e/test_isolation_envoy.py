"""Envoy's message timeout against the sidecar's work, through a real Envoy.

The shipped configuration is rendered with a tiny ``message_timeout`` (0.1 s), the sidecar told
the same. A large body goes to a worker and the sidecar asks Envoy for more time
(``override_message_timeout``, within ``max_message_timeout``): the request is decided and goes
on. Decided on the event loop instead (workers off, no extension), the same work outlasts the
timeout: the client gets Envoy's error, the provider never sees the request, and the audit
record for that request id says Envoy gave up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from policy_extproc.mockprovider import MockProvider
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import EnvoyPorts, EnvoyProcess, http_request, render_config

pytestmark = pytest.mark.e2e

POLICY = """
policy_name: everyone
rules:
  - {type: pii, id: contacts, entities: [EMAIL]}
"""
HEADERS = {"x-org-id": "acme", "x-user-id": "u1"}
SHIPPED_TIMEOUT = "message_timeout: 0.5s"


def envoy_for(
    sidecar: RunningSidecar, providers: dict[str, MockProvider], workdir: Path
) -> EnvoyProcess:
    ports = EnvoyPorts(
        extproc=sidecar.port,
        openai=providers["openai"].port,
        azure=providers["azure-openai"].port,
        anthropic=providers["anthropic"].port,
        listen=0,
        admin=0,
    )
    text = render_config(ports)
    assert SHIPPED_TIMEOUT in text  # the shipped value, replaced below
    return EnvoyProcess(
        ports, config_text=text.replace(SHIPPED_TIMEOUT, "message_timeout: 0.1s"), workdir=workdir
    )


@pytest.fixture
def provider(mock_provider: MockProvider) -> MockProvider:
    return mock_provider


def emails(n: int) -> dict[str, object]:
    text = " ".join(f"user{i}@example.com" for i in range(n))
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


@pytest.fixture
def in_loop(tmp_path: Path) -> Iterator[RunningSidecar]:
    with running_sidecar(POLICY, tmp_path / "loop", offload_workers=0, message_timeout_s=0.1) as s:
        yield s


@pytest.fixture
def offloading(tmp_path: Path) -> Iterator[RunningSidecar]:
    with running_sidecar(POLICY, tmp_path / "work", message_timeout_s=0.1) as s:
        yield s


def test_envoy_gives_up_and_the_audit_says_so(
    in_loop: RunningSidecar,
    mock_providers: dict[str, MockProvider],
    provider: MockProvider,
    tmp_path: Path,
) -> None:
    with envoy_for(in_loop, mock_providers, tmp_path / "envoy") as envoy:
        resp = http_request(envoy.url, "/v1/chat/completions", emails(20_000), headers=HEADERS)
        assert resp.status >= 500  # Envoy's own answer to its timeout
        rid = resp.headers["x-request-id"]
        in_loop.settle()

        def record() -> object:
            return in_loop.records(rid) or None

        [rec] = envoy.poll("the request's audit record", record, 30)  # type: ignore[misc]
        assert rec.outcome == "envoy_gave_up"
        assert rec.error_code == "envoy_gave_up"
        assert rec.decision == "block"
        assert provider.stats()["total"] == 0  # it never reached the provider
        # The sidecar and Envoy go on: a small request is decided and forwarded.
        ok = http_request(envoy.url, "/v1/chat/completions", emails(1), headers=HEADERS)
        assert ok.status == 200
        assert "[EMAIL]" in ok.json()["choices"][0]["message"]["content"]


def test_a_large_body_gets_the_time_it_asks_for(
    offloading: RunningSidecar,
    mock_providers: dict[str, MockProvider],
    provider: MockProvider,
    tmp_path: Path,
) -> None:
    with envoy_for(offloading, mock_providers, tmp_path / "envoy") as envoy:
        # 3,000 addresses: 60 KB, a worker's (over --offload-bytes), seconds within the bound.
        resp = http_request(envoy.url, "/v1/chat/completions", emails(3_000), headers=HEADERS)
        assert resp.status == 200, resp.body[:300]
        assert resp.headers["x-policy-decision"] == "modify"
        sent = provider.stats()["last_body"]["messages"][0]["content"]
        assert "@" not in sent and sent.count("[EMAIL]") == 3_000
        [rec] = offloading.records(resp.headers["x-request-id"])[:1]
        assert rec.decision == "modify" and rec.outcome is None
        assert envoy.counter("http.llm_ingress.ext_proc.override_message_timeout_received") == 1
