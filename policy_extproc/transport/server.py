"""The lean gRPC server: routes by path, one task per call, graceful stop.

    server = H2Server({"/pkg.Service/Method": Route(RequestType, handler)}, max_message=...)
    port = await server.start("127.0.0.1", 0)
    ...
    await server.stop(grace=5.0)

A handler is ``async def handler(call: Call) -> None``, or made from a unary, a server-streaming
or a bidirectional-streaming method of a grpc.aio servicer with ``unary`` / ``server_stream`` /
``bidi_stream``. A path with no route is answered UNIMPLEMENTED; a handler raising ends its call
UNKNOWN, never the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from . import grpcwire
from .call import Call
from .connection import RECV_WINDOW, H2Connection
from .limits import Limits

log = logging.getLogger(__name__)

Handler = Callable[[Call], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """What serves one path: the request message class and the handler."""

    request_type: Any
    handler: Handler


async def _first(call: Call) -> Any:
    request = await call.read()
    if request is grpc.aio.EOF:
        raise grpcwire.MessageError(grpcwire.INTERNAL, "no request message")
    return request


def unary(method: Callable[[Any, Call], Awaitable[Any]]) -> Handler:
    """A handler for a unary method ``method(request, context) -> response``."""

    async def handler(call: Call) -> None:
        response = await method(await _first(call), call)
        await call.write(response)

    return handler


def server_stream(method: Callable[[Any, Call], Awaitable[None]]) -> Handler:
    """A handler for a server-streaming method that writes with ``context.write``."""

    async def handler(call: Call) -> None:
        await method(await _first(call), call)

    return handler


def bidi_stream(method: Callable[[AsyncIterator[Any], Call], AsyncIterator[Any]]) -> Handler:
    """A handler for a bidirectional method ``method(request_iterator, context)`` that yields its
    responses (as grpc.aio's reflection servicer does)."""

    async def handler(call: Call) -> None:
        async def requests() -> AsyncIterator[Any]:
            while (request := await call.read()) is not grpc.aio.EOF:
                yield request

        async for response in method(requests(), call):
            await call.write(response)

    return handler


class H2Server:
    """gRPC over HTTP/2 on an asyncio server socket (h2c, or TLS with ALPN h2)."""

    def __init__(
        self,
        routes: dict[str, Route],
        *,
        max_message: int,
        ssl_context: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.routes = routes
        self.limits = limits or Limits()
        self.settings_frame = self.limits.settings_frame(RECV_WINDOW)
        self.violations: dict[str, int] = {}  # limit name -> times a peer went past it
        self.max_message = max_message
        self.ssl_context = ssl_context
        self.connections: set[H2Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); returns the bound port. OSError if it cannot."""
        loop = asyncio.get_running_loop()
        # SO_REUSEPORT as grpc.aio binds: ``serve --workers N`` shares one port.
        self._server = await loop.create_server(
            lambda: H2Connection(self), host or None, port, ssl=self.ssl_context, reuse_port=True
        )
        return int(self._server.sockets[0].getsockname()[1])

    def start_call(
        self, conn: H2Connection, sid: int, fields: list[tuple[str, str]], *, end_stream: bool
    ) -> None:
        """A new stream's headers are in: route it and start its task."""
        path = method = content_type = ""
        timeout = None
        metadata = []
        for name, value in fields:
            if name[0] == ":":
                if name == ":path":
                    path = value
                elif name == ":method":
                    method = value
            elif name == "content-type":
                content_type = value
            elif name == "grpc-timeout":
                timeout = grpcwire.parse_timeout(value)
            elif name != "te":
                metadata.append((name, value))
        route = self.routes.get(path)
        call = Call(conn, sid, path, metadata, route and route.request_type, 0, conn.peer_window)
        conn.calls[sid] = call
        if end_stream:
            call.remote_ended = True
        if method != "POST" or not content_type.startswith("application/grpc"):
            conn.finish(call, grpcwire.INTERNAL, f"not a gRPC request: {method} {content_type}")
            return
        if route is None:
            conn.finish(call, grpcwire.UNIMPLEMENTED, f"Method not found: {path}")
            return
        call.reader = grpcwire.MessageReader(self.max_message)
        if timeout is not None:
            call.deadline = conn.loop.call_later(timeout, call.expire)
        task = conn.loop.create_task(self._run(conn, call, route.handler))
        call.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, conn: H2Connection, call: Call, handler: Handler) -> None:
        call.started = True
        try:
            await handler(call)
        except asyncio.CancelledError:
            if call.deadline_hit:
                conn.finish(call, grpcwire.DEADLINE_EXCEEDED, "Deadline Exceeded")
            else:  # reset by Envoy (nothing to send), or cancelled by stop()
                conn.cancel(call)
            return
        except grpcwire.MessageError as exc:
            conn.finish(call, exc.status, str(exc))
        except Exception:
            log.exception("gRPC handler of %s failed", call.path)
            conn.finish(call, grpcwire.UNKNOWN, "Unexpected error")
        else:
            conn.finish(call, grpcwire.OK)

    async def stop(self, grace: float | None) -> None:
        """GOAWAY to every connection, let open calls end within ``grace`` seconds, cancel the
        rest, close."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self.connections):
            conn.go_away()
        pending = set(self.tasks)
        if pending and grace:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in list(self.connections):
            if conn.transport is not None:
                conn._flush()
                conn.transport.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
