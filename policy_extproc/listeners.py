"""The ext_proc / ext_authz / health listener, on grpc.aio or on the lean h2 transport.

``serve --transport grpc`` (the default) serves the servicers with grpc.aio; ``--transport h2``
with policy_extproc/transport/, which costs a fraction of grpcio's CPU per message. Both serve
the same servicer objects: the ext_proc stream (``ExternalProcessor.Process``), ext_authz
``Check``, gRPC health ``Check`` / ``Watch`` (from the one ``HealthServicer`` the sidecar keeps
its statuses in), and gRPC reflection (grpcio-reflection's servicer) for grpcurl.
"""

from __future__ import annotations

import logging
from typing import Protocol

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2

from .enforce.servicer import Authorization, ExternalProcessor
from .tls import CertificateReloader, TlsFiles, server_credentials
from .transport.limits import Limits

log = logging.getLogger(__name__)

EXT_PROC = external_processor_pb2.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name
EXT_AUTHZ = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
TRANSPORTS = ("grpc", "h2")
# What reflection lists, on either transport.
SERVICES = (EXT_PROC, EXT_AUTHZ, HEALTH, reflection.SERVICE_NAME)


class Listener(Protocol):
    """A started server of the servicers: ``start`` binds (OSError if it cannot), ``stop``
    lets open streams end within ``grace`` seconds and cuts the rest."""

    reloader: CertificateReloader | None

    async def start(self) -> int:
        """Listen; the bound port."""

    async def stop(self, grace: float | None) -> None:
        """Stop accepting, drain, close."""


class GrpcListener:
    """grpc.aio: the servicers, health and reflection, on ``listen``."""

    def __init__(
        self,
        listen: str,
        processor: ExternalProcessor,
        authorization: Authorization,
        health: HealthServicer,
        *,
        max_message: int,
        tls: TlsFiles | None,
    ) -> None:
        # TlsError: an unusable certificate, before anything opens.
        self.credentials: grpc.ServerCredentials | None = None
        self.reloader: CertificateReloader | None = None
        if tls is not None:
            self.credentials, self.reloader = server_credentials(tls)
        self.listen = listen
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
            ]
        )
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(processor, self.server)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authorization, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(health, self.server)
        reflection.enable_server_reflection(SERVICES, self.server)

    async def start(self) -> int:
        try:
            if self.credentials is not None:
                port = self.server.add_secure_port(self.listen, self.credentials)
            else:
                port = self.server.add_insecure_port(self.listen)
        except RuntimeError:  # grpcio raises "Failed to bind" rather than returning 0
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {self.listen}: address in use or not available")
        await self.server.start()
        return port

    async def stop(self, grace: float | None) -> None:
        await self.server.stop(grace)


class H2Listener:
    """The lean HTTP/2 transport: the same servicers, routed by path."""

    def __init__(
        self,
        listen: str,
        processor: ExternalProcessor,
        authorization: Authorization,
        health: HealthServicer,
        *,
        max_message: int,
        tls: TlsFiles | None,
        limits: Limits | None = None,
    ) -> None:
        from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
        from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest

        from .transport import Call, H2Server, Route, bidi_stream, server_stream, unary

        ssl_context = None
        self.reloader: CertificateReloader | None = None
        if tls is not None:
            from .tls import server_ssl_context

            ssl_context, self.reloader = server_ssl_context(tls, alpn=("h2",))

        async def process(call: Call) -> None:
            await processor.Process(None, call)

        health_request = health_pb2.HealthCheckRequest
        routes = {
            f"/{EXT_PROC}/Process": Route(ProcessingRequest, process),
            f"/{EXT_AUTHZ}/Check": Route(CheckRequest, unary(authorization.Check)),
            f"/{HEALTH}/Check": Route(health_request, unary(health.Check)),
            f"/{HEALTH}/Watch": Route(health_request, server_stream(health.Watch)),
            f"/{reflection.SERVICE_NAME}/ServerReflectionInfo": Route(
                reflection_pb2.ServerReflectionRequest,
                bidi_stream(reflection.aio.ReflectionServicer(SERVICES).ServerReflectionInfo),
            ),
        }
        self.host, self.port = split_listen(listen)
        self.listen = listen
        self.server = H2Server(
            routes, max_message=max_message, ssl_context=ssl_context, limits=limits
        )
        # Limit name -> times a peer went past it, all connections (the metrics read it).
        self.violations = self.server.violations

    async def start(self) -> int:
        try:
            return await self.server.start(self.host, self.port)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.listen}: {exc.strerror or exc}") from None

    async def stop(self, grace: float | None) -> None:
        await self.server.stop(grace)


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (``[::]:50051`` for IPv6) as (host, port); OSError when it is not that (as
    grpc.aio's bind fails on it)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise OSError(f"cannot listen on {listen}: not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def make_listener(
    transport: str,
    listen: str,
    processor: ExternalProcessor,
    authorization: Authorization,
    health: HealthServicer,
    *,
    max_message: int,
    tls: TlsFiles | None,
    h2_limits: Limits | None = None,
) -> Listener:
    """The listener of ``transport`` ("grpc" or "h2") for these servicers; ``h2_limits`` are
    the h2 transport's abuse limits (grpc.aio keeps its own)."""
    if transport == "h2":
        args = (listen, processor, authorization, health)
        return H2Listener(*args, max_message=max_message, tls=tls, limits=h2_limits)
    return GrpcListener(listen, processor, authorization, health, max_message=max_message, tls=tls)
