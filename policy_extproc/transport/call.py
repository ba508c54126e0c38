"""One gRPC call on one HTTP/2 stream: the servicer's side of it (read, write, metadata).

A ``Call`` is what the servicers get as their context: ``read()`` returns the next request
message or ``grpc.aio.EOF``, ``write()`` sends one response message (waiting for Envoy's flow
control windows when they are shut), ``invocation_metadata()`` the request's headers, and
``abort()`` ends the call with a status. The connection feeds it (``feed``, ``end``) and
resets it; a reset cancels the handler task, as grpc.aio does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.message import DecodeError

from . import frames, grpcwire
from .limits import Guard


class Link(Protocol):
    """What a call uses of its connection (connection.H2Connection)."""

    loop: asyncio.AbstractEventLoop
    blocked: set[Call]  # calls whose writes wait for a window
    peer_max_frame: int
    send_window: int  # the connection's, for what we send
    guard: Guard  # its abuse limits: the DATA we send earns the peer WINDOW_UPDATEs

    def send(self, chunk: bytes) -> None:
        """Queue bytes for the socket."""

    async def drained(self) -> None:
        """Return once the socket's buffer is below its high-water mark."""


class Call:
    """The state of one stream: what came in, what may go out, and the handler's task."""

    __slots__ = (
        "_error",
        "_inbox",
        "_waiter",
        "closed",
        "conn",
        "deadline",
        "deadline_hit",
        "headers_sent",
        "id",
        "metadata",
        "path",
        "reader",
        "recv_unacked",
        "remote_ended",
        "request_type",
        "send_window",
        "started",
        "task",
    )

    def __init__(
        self,
        conn: Link,
        stream_id: int,
        path: str,
        metadata: list[tuple[str, str]],
        request_type: Any,
        limit: int,
        send_window: int,
    ) -> None:
        self.conn = conn
        self.id = stream_id
        self.path = path
        self.metadata = metadata
        self.request_type = request_type
        self.reader = grpcwire.MessageReader(limit)
        self.send_window = send_window
        self.recv_unacked = 0  # DATA bytes received since our last WINDOW_UPDATE for it
        self.task: asyncio.Task[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.deadline_hit = False
        self.headers_sent = False
        self.remote_ended = False  # Envoy sent END_STREAM: no more messages
        self.closed = False  # we ended it (trailers) or it was reset
        self.started = False  # its handler ran (a reset before is a rapid reset's)
        self._inbox: deque[bytes] = deque()
        self._error: grpcwire.MessageError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # The connection's side.

    def feed(self, chunk: bytes) -> None:
        """DATA bytes of this stream (padding removed)."""
        if self._error is not None:
            return
        try:
            self._inbox.extend(self.reader.feed(chunk))
        except grpcwire.MessageError as exc:
            self._error = exc
        self._wake()

    def end(self) -> None:
        """Envoy half-closed the stream: after what is queued, read() returns EOF."""
        self.remote_ended = True
        if self.reader.pending and self._error is None:
            self._error = grpcwire.MessageError(grpcwire.INTERNAL, "stream ended inside a message")
        self._wake()

    def reset(self) -> None:
        """RST_STREAM from Envoy, or the connection went: cancel the handler."""
        self.closed = True
        if self.deadline is not None:
            self.deadline.cancel()
        if self.task is not None:
            self.task.cancel()
        self._wake()

    def expire(self) -> None:
        """grpc-timeout passed: cancel the handler; the call ends DEADLINE_EXCEEDED."""
        self.deadline_hit = True
        if self.task is not None:
            self.task.cancel()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def window_opened(self) -> None:
        """A WINDOW_UPDATE (or SETTINGS) made room: a write waiting for it goes on."""
        self._wake()

    # The servicer's side (a grpc.aio.ServicerContext subset).

    async def read(self) -> Any:
        """The next request message, or grpc.aio.EOF once Envoy half-closed the stream."""
        while True:
            if self._inbox:
                raw = self._inbox.popleft()
                try:
                    return self.request_type.FromString(raw)
                except DecodeError:
                    raise grpcwire.MessageError(
                        grpcwire.INTERNAL, "Exception deserializing request!"
                    ) from None
            if self._error is not None:
                raise self._error
            if self.remote_ended or self.closed:
                return grpc.aio.EOF
            self._waiter = self.conn.loop.create_future()
            await self._waiter

    async def write(self, message: Any) -> None:
        """Send one response message, within Envoy's flow control windows."""
        payload = grpcwire.encode(message.SerializeToString())
        conn = self.conn
        head = b""
        if not self.headers_sent:
            self.headers_sent = True
            head = frames.headers(
                self.id, grpcwire.RESPONSE_HEADERS, conn.peer_max_frame, end_stream=False
            )
        at = 0
        while at < len(payload) and not self.closed:
            n = min(len(payload) - at, self.send_window, conn.send_window)
            if n <= 0:
                if head:
                    conn.send(head)
                    head = b""
                conn.blocked.add(self)
                self._waiter = conn.loop.create_future()
                await self._waiter
                continue
            chunk = payload if n == len(payload) else payload[at : at + n]
            self.send_window -= n
            conn.send_window -= n
            conn.send(head + frames.data(self.id, chunk, conn.peer_max_frame))
            # Each DATA frame may be answered by a stream and a connection WINDOW_UPDATE.
            conn.guard.credit += 2 * -(-n // conn.peer_max_frame)
            head = b""
            at += n
        if head and not self.closed:
            conn.send(head)
        await conn.drained()  # Envoy not reading: wait below the transport's high-water mark

    def invocation_metadata(self) -> Sequence[tuple[str, str]]:
        """The request's headers, pseudo-headers (``:path`` ...) left out."""
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        """End the call with ``code`` (what grpc_health's servicer calls for an unknown name)."""
        raise grpcwire.MessageError(code.value[0], details)

    def time_remaining(self) -> float | None:
        """Seconds to the grpc-timeout deadline, None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline.when() - self.conn.loop.time())
