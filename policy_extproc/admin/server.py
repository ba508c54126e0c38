"""The admin gRPC server: PolicyAdmin (token-guarded) and reflection, on a listener of its own.

Apart from the ext_proc listener so that it can be bound elsewhere (loopback by default) and
so that an admin client never competes with Envoy's streams for the same server's limits.
"""

from __future__ import annotations

import logging

import grpc
from grpc_reflection.v1alpha import reflection

from .._proto import admin_pb2_grpc
from ..tls import CertificateReloader, TlsFiles, server_credentials
from .auth import SERVICE, Identities, TokenAuth, check_listen
from .service import PolicyAdmin

log = logging.getLogger(__name__)


class AdminServer:
    """Serves ``service`` on ``listen``; ``start`` refuses a non-loopback listener without token."""

    def __init__(
        self,
        service: PolicyAdmin,
        listen: str,
        token: Identities | str | None,
        *,
        tls: TlsFiles | None = None,
    ) -> None:
        self.service = service
        self.listen = listen
        # A bare string is the single admin token (POLICY_EXTPROC_ADMIN_TOKEN).
        self.token = Identities.single(token) if isinstance(token, str) and token else token or None
        self.tls = tls  # None: plaintext; with client_ca: mTLS
        self.reloader: CertificateReloader | None = None
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        check_listen(self.listen, self.token)  # AdminError, before anything is bound
        credentials = None
        if self.tls is not None:  # TlsError, before anything is bound
            credentials, self.reloader = server_credentials(self.tls)
        interceptors = [TokenAuth(self.token)] if self.token else []
        # Not SO_REUSEPORT (grpcio's default on Linux): a second sidecar on the same admin port
        # would take a share of the admin calls (an approval, a policy push going to whichever
        # process the kernel picks) instead of failing to start.
        server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        admin_pb2_grpc.add_PolicyAdminServicer_to_server(self.service, server)
        reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)
        try:
            if credentials is not None:
                self.port = server.add_secure_port(self.listen, credentials)
            else:
                self.port = server.add_insecure_port(self.listen)
        except RuntimeError:  # grpcio raises "Failed to bind" rather than returning 0
            self.port = 0
        if self.port == 0:
            raise OSError(
                f"cannot listen on {self.listen} (admin API): address in use or not available"
            )
        await server.start()
        self._server = server
        host = self.listen.rsplit(":", 1)[0]
        guard = f"{len(self.token)} bearer tokens" if self.token else "loopback only, no token"
        if self.tls is not None:
            guard += ", mTLS" if self.tls.client_ca else ", TLS"
        log.info("admin API on %s:%d (%s)", host, self.port, guard)

    async def stop(self, grace_s: float = 1.0) -> None:
        """End live decision streams (they never end on their own), then stop the server."""
        self.service.live.close()
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
