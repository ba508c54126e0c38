"""Who may call the admin API: a bearer token, or, without one, only this host (loopback).

The admin API changes the policies every request is judged by and grants approvals, so an
admin listener reachable from the network without a token is refused at start-up. Reflection
stays open: it describes the API, it changes nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ..errors import AdminError

SERVICE = "policy_extproc.v1.PolicyAdmin"
TOKEN_ENV = "POLICY_EXTPROC_ADMIN_TOKEN"


def is_loopback(listen: str) -> bool:
    """Whether ``HOST:PORT`` (or ``[v6]:PORT``) names a loopback address only."""
    host = listen.rsplit(":", 1)[0].strip("[]") if ":" in listen else listen
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost could resolve to anything


def check_listen(listen: str, token: str | None) -> None:
    """Refuse a non-loopback admin listener without a token (AdminError, the message says why)."""
    if not token and not is_loopback(listen):
        raise AdminError(
            f"refusing to serve the admin API on {listen} without a token: it can change "
            f"policies and grant approvals. Set {TOKEN_ENV}, or listen on loopback "
            "(--admin-listen 127.0.0.1:50052)"
        )


def _authorized(metadata: Any, token: str) -> bool:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, given = value.partition(" ")
            # Constant time: the comparison must not tell an attacker how much was right.
            return scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode()
            )
    return False


class TokenAuth(grpc.aio.ServerInterceptor):
    """Refuses PolicyAdmin calls without ``authorization: Bearer <token>`` (UNAUTHENTICATED)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(f"/{SERVICE}/"):
            return handler
        if _authorized(details.invocation_metadata, self._token):
            return handler
        return _refusal(handler)


_MESSAGE = f"missing or wrong bearer token (authorization: Bearer ${TOKEN_ENV})"


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    # A handler of the same shape as the refused one, so the client reads a clean status.
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)
        yield None  # unreachable: makes this an async generator, as stream handlers are

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary, **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary, **codec)
    return grpc.stream_stream_rpc_method_handler(stream, **codec)
