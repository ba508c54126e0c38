"""Through a real Envoy: certificates rotated on disk reach new connections without a restart.

Envoy's TLS block to the sidecar (envoy/envoy.yaml.tmpl, "# BEGIN tls") reads its client
certificate and its CA through file-based SDS (envoy/sds/*.yaml) and watches the certificate
folder. The folder here is laid out as the kubelet lays out a mounted Secret: the files are
links into ``..data``, a link to a timestamped folder that is replaced by one rename when the
Secret changes. The processor is a TLS gRPC server that requires a client certificate and
records the one each connection presents; Envoy opens one connection per ext_proc stream
(``max_requests_per_connection: 1``, this test's only change to the config), so each request
shows the certificate a new connection gets.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from policy_extproc.mockprovider import MockProvider
from tests.envoy_harness import (
    BackgroundLoop,
    EnvoyPorts,
    EnvoyProcess,
    PassThroughProcessor,
    http_request,
    render_config,
)
from tests.envoy_harness import pb_grpc as ext_proc_grpc
from tests.tls_certs import CertificateAuthority

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
FILES = ("tls.crt", "tls.key", "ca.crt")


class SecretFolder:
    """A folder laid out as a mounted Kubernetes Secret, updated as the kubelet updates one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version = 0
        path.mkdir(parents=True)

    def publish(self, source: Path) -> None:
        """Make the files of ``source`` the Secret's: a new ..<version> folder, then one rename
        of the ..data link onto it (atomic: a reader sees the old files or the new ones)."""
        self.version += 1
        target = self.path / f"..{self.version}"
        target.mkdir()
        for name in FILES:
            (target / name).write_bytes((source / name).read_bytes())
        link = self.path / "..data_tmp"
        link.symlink_to(target.name)
        os.replace(link, self.path / "..data")
        for name in FILES:
            if not (self.path / name).is_symlink():
                (self.path / name).symlink_to(f"..data/{name}")


class RecordingTls(PassThroughProcessor):
    """The pass-through processor, recording the client certificate of each stream."""

    def __init__(self) -> None:
        super().__init__(record=False)
        self.peer_serials: list[int] = []

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ProcessingResponse]:
        [pem] = context.auth_context()["x509_pem_cert"]
        self.peer_serials.append(x509.load_pem_x509_certificate(pem).serial_number)
        async for response in super().Process(request_iterator, context):
            yield response


def serial(folder: Path, name: str = "tls.crt") -> int:
    return x509.load_pem_x509_certificate((folder / name).read_bytes()).serial_number


@pytest.fixture
def processor(tmp_path: Path) -> Iterator[tuple[RecordingTls, int, CertificateAuthority]]:
    ca = CertificateAuthority("rotation CA")
    server_files = ca.issue(tmp_path / "server", "policy-extproc")
    loop = BackgroundLoop()
    recording = RecordingTls()
    credentials = grpc.ssl_server_credentials(
        [((server_files / "tls.key").read_bytes(), (server_files / "tls.crt").read_bytes())],
        root_certificates=ca.pem,
        require_client_auth=True,
    )

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        ext_proc_grpc.add_ExternalProcessorServicer_to_server(recording, server)
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        return server, port

    server, port = loop.run(start())
    try:
        yield recording, port, ca
    finally:
        loop.run(server.stop(grace=None))
        loop.close()


def _config(providers: dict[str, MockProvider], extproc: int, tls: Path) -> str:
    ports = EnvoyPorts(
        extproc=extproc,
        openai=providers["openai"].port,
        azure=providers["azure-openai"].port,
        anthropic=providers["anthropic"].port,
        listen=0,
        admin=0,
    )
    config = yaml.safe_load(render_config(ports, tls=tls))
    [cluster] = [c for c in config["static_resources"]["clusters"] if c["name"] == "policy_extproc"]
    options = cluster["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    http["common_http_protocol_options"] = {"max_requests_per_connection": 1}
    return str(yaml.safe_dump(config, sort_keys=False))


def _serials_in_use(envoy: EnvoyProcess) -> set[int]:
    """Serial numbers of every certificate Envoy's TLS contexts hold now (admin /certs)."""
    certs = json.loads(envoy.admin_get("/certs"))["certificates"]
    return {
        int(detail["serial_number"], 16)
        for context in certs
        for kind in ("ca_cert", "cert_chain")
        for detail in context.get(kind, ())
    }


def test_rotated_certificates_reach_new_connections_without_a_restart(
    processor: tuple[RecordingTls, int, CertificateAuthority],
    mock_providers: dict[str, MockProvider],
    mock_provider: MockProvider,
    tmp_path: Path,
) -> None:
    recording, port, ca = processor
    first = ca.issue(tmp_path / "first", "envoy", client=True)
    second = ca.issue(tmp_path / "second", "envoy", client=True)
    secret = SecretFolder(tmp_path / "mounted")
    secret.publish(first)

    envoy = EnvoyProcess(
        EnvoyPorts(),
        config_text=_config(mock_providers, port, secret.path),
        workdir=tmp_path / "envoy",
    ).start()
    try:
        pid = envoy.proc.pid if envoy.proc is not None else None
        ok = http_request(envoy.url, CHAT, BODY)
        assert ok.status == 200, ok.body
        assert recording.peer_serials == [serial(first)]

        # The Secret changes: Envoy re-reads it (its /certs say so), a new connection presents
        # the new certificate, and the process is the same one.
        secret.publish(second)

        def rotated() -> bool:
            in_use = _serials_in_use(envoy)
            return serial(second) in in_use and serial(first) not in in_use

        envoy.poll("the new certificate in place of the old", rotated, 30)
        again = http_request(envoy.url, CHAT, BODY)
        assert again.status == 200, again.body
        assert recording.peer_serials == [serial(first), serial(second)]

        # The CA rotates too: a Secret whose ca.crt is another CA's no longer trusts the
        # processor's certificate, so a new connection is refused (fail closed: a JSON 503).
        other = CertificateAuthority("another CA").issue(tmp_path / "third", "envoy", client=True)
        secret.publish(other)
        envoy.poll("the new CA", lambda: serial(other, "ca.crt") in _serials_in_use(envoy), 30)
        refused = http_request(envoy.url, CHAT, BODY)
        assert refused.status == 503
        assert refused.json()["error"]["code"] == "policy_unavailable"
        assert len(recording.peer_serials) == 2  # the handshake failed: no stream reached it
        assert envoy.proc is not None and envoy.proc.pid == pid and envoy.proc.poll() is None
        assert mock_provider.stats()["total"] == 2
    finally:
        envoy.stop()
