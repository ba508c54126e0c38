"""``serve --transport h2`` behind a real Envoy: what leans on HTTP/2 itself.

Large bodies both ways (Envoy's DATA against the windows we give back in WINDOW_UPDATEs, our
rewritten body against Envoy's windows and SETTINGS_MAX_FRAME_SIZE), many requests on Envoy's
one connection, and a client that leaves while the provider is still answering (Envoy's
RST_STREAM cancels that stream only). Redaction, refusals and streamed answers run on both
transports in test_output_guardrails.py, mTLS in test_tls_envoy.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from policy_extproc.listeners import H2Listener
from policy_extproc.mockprovider import MockProvider
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import BODY_LIMIT, EnvoyProcess, http_request

pytestmark = pytest.mark.e2e

POLICY = """
policy_name: acme_base
org: acme
rules:
  - {type: content_filter, id: secrets, keywords: [confidential], action: block}
  - {type: content_filter, id: codenames, keywords: [project-aurora], action: redact}
"""
HEADERS = {"x-org-id": "acme", "x-user-id": "u1"}
CHAT = "/v1/chat/completions"


def chat(text: str) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    with running_sidecar(POLICY, tmp_path_factory.mktemp("h2"), transport="h2") as running:
        assert isinstance(running.sidecar._server, H2Listener)
        yield running


@pytest.fixture(scope="module")
def proxy(envoy_factory, lean: RunningSidecar) -> EnvoyProcess:  # type: ignore[no-untyped-def]
    return envoy_factory(lean.port)


def test_allowed_and_blocked_requests(proxy: EnvoyProcess, mock_provider: MockProvider) -> None:
    ok = http_request(proxy.url, CHAT, chat("hello"), headers=HEADERS)
    assert ok.status == 200 and ok.headers["x-policy-decision"] == "allow"
    blocked = http_request(proxy.url, CHAT, chat("this is confidential"), headers=HEADERS)
    assert blocked.status == 403
    assert blocked.json()["rule"] == "secrets"
    assert mock_provider.stats()["total"] == 1


def test_bodies_near_the_limit_keep_flowing_past_our_receive_window(
    proxy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    # Five bodies of nearly 4 MiB on Envoy's one connection: more than the 16 MiB window we
    # offer, so they pass only if our WINDOW_UPDATEs give it back.
    text = "a" * (BODY_LIMIT - 64 * 1024)
    for i in range(5):
        resp = http_request(
            proxy.url, "/v1/embeddings", {"model": "e", "input": text}, headers=HEADERS
        )
        assert resp.status == 200, (i, resp.body[:300])
    assert mock_provider.stats()["last_body"]["input"] == text


def test_a_rewritten_body_near_the_limit_comes_back_whole(
    proxy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    # Our answer carries the whole rewritten body: cut to Envoy's frame size, within its windows.
    filler = "word " * ((BODY_LIMIT - 128 * 1024) // 10)
    resp = http_request(proxy.url, CHAT, chat(f"{filler} project-aurora {filler}"), headers=HEADERS)
    assert resp.status == 200, resp.body[:300]
    sent = mock_provider.stats()["last_body"]["messages"][0]["content"]
    assert sent == f"{filler} [REDACTED:codenames] {filler}"


def test_concurrent_requests_share_the_connection_without_mixing(proxy: EnvoyProcess) -> None:
    def one(i: int) -> tuple[int, str]:
        resp = http_request(proxy.url, CHAT, chat(f"hello {i}"), headers=HEADERS)
        return resp.status, resp.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(40)))
    assert results == [(200, f"echo: hello {i}") for i in range(40)]


def _wait(predicate, what: str, limit_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s  # a safety net, not an assertion about speed
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_client_that_leaves_resets_its_stream_only(
    proxy: EnvoyProcess, lean: RunningSidecar, mock_provider: MockProvider
) -> None:
    processor = lean.sidecar.processor
    assert processor is not None
    mock_provider.configure(latency_ms=60_000)  # the answer never comes while we watch
    try:
        host, port = proxy.url.split("://", 1)[1].split(":")
        body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
        head = (
            f"POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"x-org-id: acme\r\nx-request-id: r-gone\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection((host, int(port))) as client:
            client.sendall(head.encode() + body)
            _wait(lambda: mock_provider.stats()["total"] == 1, "the provider to get the request")
            assert processor.open_streams == 1  # waiting for the response headers
        # The client is gone: Envoy resets the ext_proc stream, and the sidecar's task ends.
        _wait(lambda: processor.open_streams == 0, "the reset stream to close")
    finally:
        mock_provider.configure(latency_ms=0)
    assert [r.decision for r in lean.records("r-gone")] == ["allow"]
    ok = http_request(proxy.url, CHAT, chat("still here"), headers=HEADERS)
    assert ok.status == 200
