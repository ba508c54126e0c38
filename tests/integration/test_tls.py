"""TLS and mTLS on the ext_proc listener and the admin API, with certificates made per test.

Clients here are real gRPC channels (and the admin CLI in its own process); rotation is tested by
replacing the files under a running sidecar and opening a new connection.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from policy_extproc.errors import TlsError
from policy_extproc.server import ServerConfig, Sidecar
from policy_extproc.tls import TlsFiles, channel_credentials
from tests.integration.helpers import write_policies
from tests.tls_certs import CertificateAuthority

POLICIES = """
- policy_name: acme_base
  org: acme
  rules:
    - type: content_filter
      id: secrets
      keywords: [confidential]
      action: block
"""


# The grpc.aio listener, and serve --transport h2 (ssl.SSLContext, ALPN h2): the same TLS.
TRANSPORTS = pytest.mark.parametrize("transport", ["grpc", "h2"])


def files(folder: Path, *, mtls: bool = False) -> TlsFiles:
    return TlsFiles(
        str(folder / "tls.crt"), str(folder / "tls.key"), str(folder / "ca.crt") if mtls else None
    )


async def health(port: int, credentials: grpc.ChannelCredentials | None) -> int:
    """The health status over a new connection; raises grpc.aio.AioRpcError if refused."""
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(resp.status)


def _sidecar(tmp_path: Path, **config: object) -> Sidecar:
    policies = tmp_path / "policies"
    write_policies(policies, POLICIES)
    return Sidecar(
        ServerConfig(  # type: ignore[arg-type]
            policies=(str(policies),), listen="127.0.0.1:0", audit_log=None, **config
        )
    )


@TRANSPORTS
async def test_tls_listener_serves_tls_and_refuses_plaintext(
    tmp_path: Path, transport: str
) -> None:
    ca = CertificateAuthority()
    server = ca.issue(tmp_path / "server", "policy-extproc")
    sidecar = _sidecar(tmp_path, tls=files(server), admin_listen=None, transport=transport)
    await sidecar.start()
    try:
        trusting = channel_credentials(str(server / "ca.crt"))
        assert await health(sidecar.port, trusting) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health(sidecar.port, None)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        stranger = CertificateAuthority("another CA")
        (tmp_path / "other.crt").write_bytes(stranger.pem)
        with pytest.raises(grpc.aio.AioRpcError):
            await health(sidecar.port, channel_credentials(str(tmp_path / "other.crt")))
    finally:
        await sidecar.stop()


@TRANSPORTS
async def test_mtls_wants_a_client_certificate_the_ca_signed(
    tmp_path: Path, transport: str
) -> None:
    ca = CertificateAuthority()
    server = ca.issue(tmp_path / "server", "policy-extproc")
    client = ca.issue(tmp_path / "client", "envoy", client=True)
    outsider = CertificateAuthority("outsider").issue(tmp_path / "outsider", "x", client=True)
    sidecar = _sidecar(
        tmp_path, tls=files(server, mtls=True), admin_listen=None, transport=transport
    )
    await sidecar.start()
    try:
        ca_file = str(server / "ca.crt")
        with pytest.raises(grpc.aio.AioRpcError):
            await health(sidecar.port, channel_credentials(ca_file))
        with pytest.raises(grpc.aio.AioRpcError):
            creds = channel_credentials(
                ca_file, str(outsider / "tls.crt"), str(outsider / "tls.key")
            )
            await health(sidecar.port, creds)
        creds = channel_credentials(ca_file, str(client / "tls.crt"), str(client / "tls.key"))
        assert await health(sidecar.port, creds) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await sidecar.stop()


def _replace(source: Path, target: Path) -> None:
    # As a kubelet updates a Secret volume: new files renamed over the old, never half-written.
    for name in ("tls.crt", "tls.key", "ca.crt"):
        shutil.copy(source / name, target / f".{name}.new")
        os.replace(target / f".{name}.new", target / name)


@TRANSPORTS
async def test_rotated_certificates_are_served_to_new_connections(
    tmp_path: Path, transport: str
) -> None:
    old_ca, new_ca = CertificateAuthority("old CA"), CertificateAuthority("new CA")
    live = old_ca.issue(tmp_path / "live", "policy-extproc")
    new = new_ca.issue(tmp_path / "new", "policy-extproc")
    old_trust = channel_credentials(str(tmp_path / "live" / "ca.crt"))
    shutil.copy(tmp_path / "live" / "ca.crt", tmp_path / "old-ca.crt")
    new_trust = channel_credentials(str(new / "ca.crt"))
    sidecar = _sidecar(tmp_path, tls=files(live), admin_listen=None, transport=transport)
    await sidecar.start()
    try:
        assert await health(sidecar.port, old_trust) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError):
            await health(sidecar.port, new_trust)
        # A broken pair (key of another certificate) is refused: the old pair keeps serving.
        shutil.copy(new / "tls.key", tmp_path / "wrong.key")
        os.replace(tmp_path / "wrong.key", live / "tls.key")
        assert await health(sidecar.port, old_trust) == health_pb2.HealthCheckResponse.SERVING
        assert sidecar.tls is not None and sidecar.tls.reloads == 0
        _replace(new, live)
        assert await health(sidecar.port, new_trust) == health_pb2.HealthCheckResponse.SERVING
        assert sidecar.tls.reloads == 1
        with pytest.raises(grpc.aio.AioRpcError):
            await health(sidecar.port, channel_credentials(str(tmp_path / "old-ca.crt")))
    finally:
        await sidecar.stop()


async def test_unusable_certificate_stops_the_start(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    server = ca.issue(tmp_path / "server", "policy-extproc")
    other = ca.issue(tmp_path / "other", "policy-extproc")
    mismatched = TlsFiles(str(server / "tls.crt"), str(other / "tls.key"))
    with pytest.raises(TlsError):
        await _sidecar(tmp_path, tls=mismatched, admin_listen=None).start()
    # An encrypted key is refused, not a passphrase prompt on a terminal nobody watches.
    key = serialization.load_pem_private_key((server / "tls.key").read_bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "encrypted.key").write_bytes(encrypted)
    locked = TlsFiles(str(server / "tls.crt"), str(tmp_path / "encrypted.key"))
    with pytest.raises(TlsError, match="encrypted"):
        await _sidecar(tmp_path, tls=locked, admin_listen=None).start()
    missing = TlsFiles(str(tmp_path / "nope.crt"), str(server / "tls.key"))
    with pytest.raises(TlsError, match=r"nope\.crt"):
        await _sidecar(tmp_path, tls=missing, admin_listen=None).start()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "policy_extproc.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


async def test_admin_api_over_mtls_with_the_cli(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    server = ca.issue(tmp_path / "admin", "policy-extproc-admin")
    client = ca.issue(tmp_path / "operator", "operator", client=True)
    sidecar = _sidecar(tmp_path, admin_listen="127.0.0.1:0", admin_tls=files(server, mtls=True))
    await sidecar.start()
    try:
        admin = f"127.0.0.1:{sidecar.admin_port}"
        # The CLI is synchronous: run it off the loop the sidecar serves on.
        plain = await asyncio.to_thread(_cli, "policies", "list", "--admin", admin)
        assert plain.returncode == 1
        assert "cannot reach the admin API" in plain.stderr
        no_cert = await asyncio.to_thread(
            _cli, "policies", "list", "--admin", admin, "--tls-ca", str(server / "ca.crt")
        )
        assert no_cert.returncode == 1
        env = {
            "POLICY_EXTPROC_ADMIN_TLS_CA": str(server / "ca.crt"),
            "POLICY_EXTPROC_ADMIN_CLIENT_CERT": str(client / "tls.crt"),
            "POLICY_EXTPROC_ADMIN_CLIENT_KEY": str(client / "tls.key"),
        }
        ok = await asyncio.to_thread(_cli, "policies", "list", "--admin", admin, env=env)
        assert ok.returncode == 0, ok.stderr
        assert "acme_base" in ok.stdout
        # --tls-server-name: the name checked against the certificate instead of the host.
        for name, code in (("someone-else", 1), ("policy-extproc-admin", 0)):
            named = await asyncio.to_thread(
                _cli, "policies", "list", "--admin", admin, "--tls-server-name", name, env=env
            )
            assert named.returncode == code, named.stderr
    finally:
        await sidecar.stop()
