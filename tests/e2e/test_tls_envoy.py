"""Through a real Envoy: mTLS between Envoy and the sidecar, and the 503 JSON replies when the
sidecar is unreachable, refuses Envoy's certificate, or does not answer in time.

The certificates are made per module (tests/tls_certs.py); Envoy runs envoy/envoy.yaml.tmpl with
its "# BEGIN tls" lines switched on (envoy_harness.render_config(tls=...)), and the Kubernetes
configuration's TLS lines are checked by `envoy --mode validate` the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from policy_extproc.mockprovider import MockProvider
from policy_extproc.tls import TlsFiles
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import (
    ENVOY_DIR,
    BackgroundLoop,
    EnvoyPorts,
    EnvoyProcess,
    enable_tls,
    free_port,
    http_request,
    validate_config,
)
from tests.tls_certs import CertificateAuthority

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
POLICIES = """
- policy_name: acme_base
  org: acme
  rules:
    - type: content_filter
      id: secrets
      keywords: [confidential]
      action: block
"""


def chat(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("certs")
    ca = CertificateAuthority()
    return {
        "sidecar": ca.issue(root / "sidecar", "policy-extproc"),
        "envoy": ca.issue(root / "envoy", "envoy", client=True),
        "stranger": CertificateAuthority("stranger").issue(root / "stranger", "x", client=True),
    }


@pytest.fixture(scope="module", params=["grpc", "h2"])
def sidecar(
    certs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """The mTLS sidecar on each transport (h2: ssl.SSLContext with ALPN h2)."""
    folder = certs["sidecar"]
    tls = TlsFiles(str(folder / "tls.crt"), str(folder / "tls.key"), str(folder / "ca.crt"))
    workdir = tmp_path_factory.mktemp("sidecar")
    with running_sidecar(
        POLICIES, workdir, tls=tls, admin_listen=None, transport=request.param
    ) as running:
        yield running


def _envoy(
    tmp_path: Path, providers: dict[str, MockProvider], extproc: int, tls: Path | None
) -> EnvoyProcess:
    ports = EnvoyPorts(
        extproc=extproc,
        openai=providers["openai"].port,
        azure=providers["azure-openai"].port,
        anthropic=providers["anthropic"].port,
        listen=0,
        admin=0,
    )
    return EnvoyProcess(ports, tls=tls, workdir=tmp_path / "envoy").start()


def test_envoy_reaches_the_sidecar_over_mtls(
    sidecar: RunningSidecar,
    certs: dict[str, Path],
    mock_providers: dict[str, MockProvider],
    mock_provider: MockProvider,
    tmp_path: Path,
) -> None:
    envoy = _envoy(tmp_path, mock_providers, sidecar.port, certs["envoy"])
    try:
        ok = http_request(envoy.url, CHAT, chat("hello"), headers={"x-org-id": "acme"})
        assert ok.status == 200, ok.body
        assert ok.headers["x-policy-decision"] == "allow"
        blocked = http_request(envoy.url, CHAT, chat("confidential"), headers={"x-org-id": "acme"})
        assert blocked.status == 403
        assert blocked.json()["error"]["code"]
        assert mock_provider.stats()["total"] == 1
        assert sidecar.records(ok.headers["x-request-id"])[0].decision == "allow"
    finally:
        envoy.stop()


def test_certificates_of_another_ca_get_a_json_503(
    sidecar: RunningSidecar,
    certs: dict[str, Path],
    mock_providers: dict[str, MockProvider],
    mock_provider: MockProvider,
    tmp_path: Path,
) -> None:
    envoy = _envoy(tmp_path, mock_providers, sidecar.port, certs["stranger"])
    try:
        resp = http_request(envoy.url, CHAT, chat("hello"), headers={"x-org-id": "acme"})
        assert resp.status == 503
        assert resp.json()["error"]["code"] == "policy_unavailable"
        assert resp.json()["request_id"] == resp.headers["x-request-id"]
        assert mock_provider.stats()["total"] == 0
    finally:
        envoy.stop()


def test_sidecar_down_gets_a_json_503(
    mock_providers: dict[str, MockProvider], mock_provider: MockProvider, tmp_path: Path
) -> None:
    envoy = _envoy(tmp_path, mock_providers, free_port(), None)
    try:
        resp = http_request(envoy.url, CHAT, chat("nobody checks me"))
        assert resp.status == 503
        body = resp.json()
        assert body["error"] == {
            "type": "server_error",
            "code": "policy_unavailable",
            "message": "the policy check is unavailable; the request was not sent",
        }
        assert body["request_id"] == resp.headers["x-request-id"]
        assert resp.headers["content-type"] == "application/json"
        assert mock_provider.stats()["total"] == 0
    finally:
        envoy.stop()


class _Silent(pb_grpc.ExternalProcessorServicer):
    """Takes the stream and never answers: Envoy's message_timeout is what ends it."""

    def __init__(self) -> None:
        self.released = asyncio.Event()

    async def Process(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for _ in request_iterator:
            await self.released.wait()
        return
        yield  # pragma: no cover


def test_sidecar_timeout_gets_a_json_503(
    mock_providers: dict[str, MockProvider], mock_provider: MockProvider, tmp_path: Path
) -> None:
    loop = BackgroundLoop()
    silent = _Silent()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        pb_grpc.add_ExternalProcessorServicer_to_server(silent, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run(start())
    envoy = _envoy(tmp_path, mock_providers, port, None)
    try:
        resp = http_request(envoy.url, CHAT, chat("slow"))
        assert resp.status == 503
        assert resp.json()["error"]["code"] == "policy_timeout"
        assert mock_provider.stats()["total"] == 0
    finally:
        envoy.stop()
        loop.loop.call_soon_threadsafe(silent.released.set)
        loop.run(server.stop(grace=None))
        loop.close()


@pytest.mark.parametrize("name", ["envoy.yaml", "envoy-jwt.yaml", "envoy-k8s.yaml"])
def test_the_tls_variant_of_every_config_validates(
    name: str, certs: dict[str, Path], tmp_path: Path
) -> None:
    text = (ENVOY_DIR / name).read_text()
    tls = enable_tls(text, certs["envoy"])
    assert tls != text and "transport_socket:" in tls
    (tmp_path / name).write_text(tls)
    ok, output = validate_config(tmp_path / name)
    assert ok, output
