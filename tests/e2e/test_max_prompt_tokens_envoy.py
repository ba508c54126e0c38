"""``max_prompt_tokens`` end to end: a client, a real Envoy, the real sidecar, a mock provider.

A prompt over the limit never reaches the provider: 403 for ``block``, 429 for ``throttle``; a
short one goes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policy_extproc.audit.sink import RecordingSink
from policy_extproc.mockprovider import MockProvider
from policy_extproc.server import ServerConfig, Sidecar
from tests.e2e.conftest import EnvoyFactory
from tests.envoy_harness import BackgroundLoop, EnvoyProcess, http_request

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
POLICIES = """
- policy_name: sizes
  org: acme
  rules:
    - {type: max_prompt_tokens, id: mini-size, max_tokens: 200, models: [gpt-4o-mini]}
    - {type: max_prompt_tokens, id: big-size, max_tokens: 200, models: [gpt-4o],
       action: throttle}
"""
LONG = "tell me about the moon " * 100  # about 575 estimated tokens
HEADERS = {"x-org-id": "acme", "x-user-id": "u"}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    """The real sidecar on a free port, in a background loop."""
    policy_dir: Path = tmp_path_factory.mktemp("policies")
    (policy_dir / "sizes.yaml").write_text(POLICIES)
    config = ServerConfig(
        policies=(str(policy_dir),),
        listen="127.0.0.1:0",
        audit_log=None,
        grace_s=2.0,
        admin_listen=None,
    )
    running = Sidecar(config, sinks=[RecordingSink()])
    loop = BackgroundLoop()
    try:
        loop.run(running.start())
        yield running
    finally:
        loop.run(running.stop())
        loop.close()


@pytest.fixture(scope="module")
def envoy(envoy_factory: EnvoyFactory, sidecar: Sidecar) -> EnvoyProcess:
    return envoy_factory(sidecar.port)


def chat(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def test_a_long_prompt_is_blocked_before_the_provider(
    envoy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    resp = http_request(envoy.url, CHAT, chat("gpt-4o-mini", LONG), headers=HEADERS)
    assert resp.status == 403, resp.body
    assert resp.headers["x-policy-decision"] == "block"
    body = resp.json()
    assert (body["rule"], body["error"]["code"]) == ("mini-size", "blocked")
    assert "moon" not in body["reason"]
    assert mock_provider.stats()["total"] == 0  # it never left Envoy


def test_a_long_prompt_is_throttled_when_the_rule_says_so(
    envoy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    resp = http_request(envoy.url, CHAT, chat("gpt-4o", LONG), headers=HEADERS)
    assert resp.status == 429, resp.body
    assert resp.headers["x-policy-decision"] == "throttle"
    assert resp.json()["error"]["code"] == "rate_limited"
    assert mock_provider.stats()["total"] == 0


def test_a_short_prompt_goes_through(envoy: EnvoyProcess, mock_provider: MockProvider) -> None:
    resp = http_request(envoy.url, CHAT, chat("gpt-4o-mini", "hello"), headers=HEADERS)
    assert resp.status == 200, resp.body
    assert resp.headers["x-policy-decision"] == "allow"
    assert mock_provider.stats()["total"] == 1
