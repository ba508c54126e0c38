"""One HTTP/2 connection from Envoy: an asyncio Protocol parsing frames as they arrive.

``data_received`` appends to a buffer and handles every whole frame in it (one TCP read often
carries several); what the frames call for (SETTINGS ACK, PING ACK, WINDOW_UPDATE) is written
once at the end. Each request stream becomes a ``Call`` run by a task of its own
(``server.Route``); its replies go out through ``send``, coalesced per loop iteration.

Abuse limits (limits.py): the streams open at once, header blocks, rapid resets, control-frame
floods, replies piling up for a peer that does not read (reading pauses while our transport's
buffer is over its high-water mark), the handshake's time and, if configured, idleness.

Flow control: we offer large windows (``RECV_WINDOW``) and give them back in WINDOW_UPDATEs of
half a window at a time, so a body at the limit never waits for us and a normal request costs
no WINDOW_UPDATE at all; what we send stays within Envoy's windows (``Call.write`` waits).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

from . import frames, grpcwire
from . import limits as lim
from .call import Call
from .frames import ProtocolError, StreamError
from .hpackcache import CachingDecoder
from .inbound import RECV_WINDOW, Inbound


class Acceptor(Protocol):
    """What a connection uses of its server (server.H2Server)."""

    connections: set[H2Connection]
    limits: lim.Limits
    settings_frame: bytes  # our SETTINGS and connection WINDOW_UPDATE (Limits.settings_frame)
    violations: dict[str, int]  # limit name -> times exceeded, for the metrics

    def start_call(
        self, conn: H2Connection, sid: int, fields: list[tuple[str, str]], *, end_stream: bool
    ) -> None:
        """A new stream's headers are in: route it and start its task."""


log = logging.getLogger(__name__)


class H2Connection(Inbound, asyncio.Protocol):
    """The server side of one h2 (h2c or TLS) connection."""

    def __init__(self, server: Acceptor) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.guard = lim.Guard(server.limits, self.loop.time, server.violations)
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, Call] = {}
        self.blocked: set[Call] = set()  # writes waiting for a window
        self.peer_max_frame = frames.DEFAULT_MAX_FRAME
        self.peer_window = frames.DEFAULT_WINDOW  # Envoy's SETTINGS_INITIAL_WINDOW_SIZE
        self.send_window = frames.DEFAULT_WINDOW  # the connection's, for what we send
        self.recv_unacked = 0
        self.last_stream = 0
        self.going_away = False
        self._buf = bytearray()
        self._preface = False
        self._settled = False  # the client's first SETTINGS came: the handshake is over
        self._continuing: tuple[int, int, list[bytes]] | None = None  # stream, flags, fragments
        self._block_size = 0  # of the header block in _continuing
        self._decoder = CachingDecoder(server.limits.max_header_list_size)
        self._out: list[bytes] = []
        self._receiving = False
        self._flush_soon = False
        self._paused: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the handshake's, then the idle one
        self._idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (write, pause_reading...); not always an asyncio.Transport
        # subclass: uvloop's are its own classes.
        self.transport = cast("asyncio.Transport", transport)
        self.server.connections.add(self)
        self.guard.peer = transport.get_extra_info("peername")
        self.transport.write(self.server.settings_frame)
        self._timer = self.loop.call_later(self.limits.handshake_timeout_s, self._handshake_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        for call in list(self.calls.values()):
            call.reset()
        self.calls.clear()
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)

    def pause_writing(self) -> None:
        # The peer does not read what we write: read nothing more of it (what it sends would
        # only queue more replies) until our buffer drains below the low-water mark.
        self._paused = self.loop.create_future()
        self.guard.queued = 0
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self._paused = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        self._receiving = True
        try:
            if not self._preface:
                if len(buf) < len(frames.PREFACE):
                    if not frames.PREFACE.startswith(buf):
                        raise ProtocolError("not an HTTP/2 connection preface")
                    return
                if buf[: len(frames.PREFACE)] != frames.PREFACE:
                    raise ProtocolError("not an HTTP/2 connection preface")
                del buf[: len(frames.PREFACE)]
                self._preface = True
            at, end = 0, len(buf)
            while end - at >= frames.HEADER_LEN:
                length, kind, flags, sid = frames.parse_header(buf, at)
                if length > frames.DEFAULT_MAX_FRAME:  # the SETTINGS_MAX_FRAME_SIZE we offer
                    raise ProtocolError(f"frame of {length} bytes", frames.FRAME_SIZE_ERROR)
                stop = at + frames.HEADER_LEN + length
                if stop > end:
                    break
                payload = bytes(buf[at + frames.HEADER_LEN : stop])
                at = stop
                try:
                    self._frame(kind, flags, sid, payload)
                except StreamError as exc:
                    log.debug("h2 stream %d reset: %s", exc.stream_id, exc)
                    self._reset(exc.stream_id, exc.code)
            del buf[:at]
        except lim.LimitExceeded as exc:
            self.guard.violated(exc.limit, str(exc))
            self.abort(exc.code, str(exc), warn=False)
        except ProtocolError as exc:
            self.abort(exc.code, str(exc))
        finally:
            self._receiving = False
            self._flush()

    # Output

    def send(self, chunk: bytes) -> None:
        """Queue bytes for the transport; written at the end of this loop iteration."""
        self._out.append(chunk)
        if not self._receiving and not self._flush_soon:
            self._flush_soon = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out) if len(self._out) > 1 else self._out[0])
        self._out.clear()

    async def drained(self) -> None:
        """Return once the transport's buffer is below its high-water mark."""
        if self._paused is not None:
            await asyncio.shield(self._paused)

    def abort(self, code: int, message: str, *, warn: bool = True) -> None:
        """A connection error: GOAWAY with ``code``, then close (at once if the peer does not
        read: a close would wait for our buffer to drain)."""
        if warn:
            log.warning("h2 connection error (code %d): %s", code, message)
        self._out.append(frames.goaway(self.last_stream, code, message.encode()[:256]))
        self._flush()
        if self.transport is not None:
            if self._paused is not None:
                self.transport.abort()
            else:
                self.transport.close()

    def go_away(self) -> None:
        """Graceful shutdown: no new streams (GOAWAY NO_ERROR); close once the open ones end."""
        if self.going_away:
            return
        self.going_away = True
        self.send(frames.goaway(self.last_stream, frames.NO_ERROR))
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self.calls:
            return
        if self.limits.idle_timeout_s:
            self._idle_since = self.loop.time()
        if self.going_away and self.transport is not None:
            self._flush()
            self.transport.close()

    # Timers

    def _handshake_expired(self) -> None:
        self._timer = None
        if not self._settled and self.transport is not None and not self.transport.is_closing():
            message = f"no client preface and SETTINGS within {self.limits.handshake_timeout_s:g} s"
            self.guard.violated(lim.HANDSHAKE_TIMEOUT, message)
            self.abort(frames.ENHANCE_YOUR_CALM, message, warn=False)

    def _settle(self) -> None:
        self._settled = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.limits.idle_timeout_s:
            self._idle_since = self.loop.time()
            self._timer = self.loop.call_later(self.limits.idle_timeout_s, self._idle_check)

    def _idle_check(self) -> None:
        # One timer re-armed at its end, not one per stream: the stamp is taken as the last
        # stream ends (_close_if_idle).
        self._timer = None
        if self.going_away or self.transport is None or self.transport.is_closing():
            return
        wait = self.limits.idle_timeout_s
        if not self.calls:
            wait += self._idle_since - self.loop.time()
            if wait <= 0:
                log.info(
                    "h2 peer %s idle for %g s: GOAWAY", self.guard.peer, self.limits.idle_timeout_s
                )
                self.go_away()
                return
        self._timer = self.loop.call_later(wait, self._idle_check)

    # Streams

    def _start(self, sid: int, fields: list[tuple[str, str]], *, end_stream: bool) -> None:
        self.server.start_call(self, sid, fields, end_stream=end_stream)

    def _reset(self, sid: int, code: int) -> None:
        self.send(frames.rst_stream(sid, code))
        call = self.calls.pop(sid, None)
        if call is not None:
            self.blocked.discard(call)
            call.reset()
            self._close_if_idle()

    def cancel(self, call: Call) -> None:
        """Our side gave up on ``call`` (stop() past its grace): RST_STREAM CANCEL."""
        if call.closed:
            return
        call.closed = True
        self.send(frames.rst_stream(call.id, frames.CANCEL))
        if self.calls.pop(call.id, None) is not None:
            self.blocked.discard(call)
            self._close_if_idle()

    def finish(self, call: Call, status: int, message: str = "") -> None:
        """End ``call`` with its trailers (and RST_STREAM NO_ERROR if Envoy still sends)."""
        if call.closed:
            return
        call.closed = True
        if call.deadline is not None:
            call.deadline.cancel()
        if call.headers_sent:
            block = grpcwire.OK_TRAILERS if status == 0 else grpcwire.trailers(status, message)
        else:
            block = grpcwire.trailers_only(status, message)
        self.send(frames.headers(call.id, block, self.peer_max_frame, end_stream=True))
        if not call.remote_ended:
            self.send(frames.rst_stream(call.id, frames.NO_ERROR))
        if self.calls.pop(call.id, None) is not None:
            self.blocked.discard(call)
            self._close_if_idle()


__all__ = ["RECV_WINDOW", "Acceptor", "H2Connection"]
