"""One HTTP/2 connection from Envoy: an asyncio Protocol parsing frames as they arrive.

``data_received`` appends to a buffer and handles every whole frame in it (one TCP read often
carries several); what the frames call for (SETTINGS ACK, PING ACK, WINDOW_UPDATE) is written
once at the end. Each request stream becomes a ``Call`` run by a task of its own
(``server.Route``); its replies go out through ``send``, coalesced per loop iteration.

Flow control: we offer large windows (``RECV_WINDOW``) and give them back in WINDOW_UPDATEs of
half a window at a time, so a body at the limit never waits for us and a normal request costs
no WINDOW_UPDATE at all; what we send stays within Envoy's windows (``Call.write`` waits).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

import hpack

from . import frames, grpcwire
from .call import Call
from .frames import ProtocolError, StreamError
from .hpackcache import CachingDecoder


class Acceptor(Protocol):
    """What a connection uses of its server (server.H2Server)."""

    connections: set[H2Connection]

    def start_call(
        self, conn: H2Connection, sid: int, fields: list[tuple[str, str]], *, end_stream: bool
    ) -> None:
        """A new stream's headers are in: route it and start its task."""


log = logging.getLogger(__name__)

RECV_WINDOW = 16 * 1024 * 1024
MAX_HEADER_BLOCK = 64 * 1024  # Envoy's gRPC metadata is a few hundred bytes
OUR_SETTINGS = frames.settings(
    {
        frames.ENABLE_PUSH: 0,
        frames.INITIAL_WINDOW_SIZE: RECV_WINDOW,
        frames.MAX_HEADER_LIST_SIZE: MAX_HEADER_BLOCK,
    }
) + frames.window_update(0, RECV_WINDOW - frames.DEFAULT_WINDOW)


class H2Connection(asyncio.Protocol):
    """The server side of one h2 (h2c or TLS) connection."""

    def __init__(self, server: Acceptor) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
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
        self._continuing: tuple[int, int, list[bytes]] | None = None  # stream, flags, fragments
        self._decoder = CachingDecoder(MAX_HEADER_BLOCK)
        self._out: list[bytes] = []
        self._receiving = False
        self._flush_soon = False
        self._paused: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (write, pause_reading...); not always an asyncio.Transport
        # subclass: uvloop's are its own classes.
        self.transport = cast("asyncio.Transport", transport)
        self.server.connections.add(self)
        self.transport.write(OUR_SETTINGS)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for call in list(self.calls.values()):
            call.reset()
        self.calls.clear()
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)

    def pause_writing(self) -> None:
        self._paused = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self._paused = None

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

    def abort(self, code: int, message: str) -> None:
        """A connection error: GOAWAY with ``code``, then close."""
        log.warning("h2 connection error (code %d): %s", code, message)
        self._out.append(frames.goaway(self.last_stream, code, message.encode()[:256]))
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def go_away(self) -> None:
        """Graceful shutdown: no new streams (GOAWAY NO_ERROR); close once the open ones end."""
        if self.going_away:
            return
        self.going_away = True
        self.send(frames.goaway(self.last_stream, frames.NO_ERROR))
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self.going_away and not self.calls and self.transport is not None:
            self._flush()
            self.transport.close()

    # Frames

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._continuing is not None and (
            kind != frames.CONTINUATION or sid != self._continuing[0]
        ):
            raise ProtocolError("a header block interrupted before its END_HEADERS")
        if kind == frames.DATA:
            self._data(flags, sid, payload)
        elif kind == frames.HEADERS:
            if sid == 0:
                raise ProtocolError("HEADERS on stream 0")
            fragment = frames.headers_fragment(payload, flags, sid)
            if flags & frames.END_HEADERS:
                self._headers(sid, flags, fragment)
            else:
                self._continuing = (sid, flags, [fragment])
        elif kind == frames.CONTINUATION:
            if self._continuing is None:
                raise ProtocolError("CONTINUATION without HEADERS")
            parts = self._continuing[2]
            parts.append(payload)
            if sum(map(len, parts)) > MAX_HEADER_BLOCK:
                raise ProtocolError("header block too large", frames.ENHANCE_YOUR_CALM)
            if flags & frames.END_HEADERS:
                stream, first_flags, _ = self._continuing
                self._continuing = None
                self._headers(stream, first_flags, b"".join(parts))
        elif kind == frames.SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == frames.WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == frames.PING:
            if sid != 0:
                raise ProtocolError("PING on a stream")
            if len(payload) != 8:
                raise ProtocolError("PING length not 8", frames.FRAME_SIZE_ERROR)
            if not flags & frames.ACK:
                self._out.append(frames.ping_ack(payload))
        elif kind == frames.RST_STREAM:
            if sid == 0:
                raise ProtocolError("RST_STREAM on stream 0")
            frames.parse_u32(payload, "RST_STREAM")
            if sid > self.last_stream:
                raise ProtocolError("RST_STREAM on an idle stream")
            call = self.calls.pop(sid, None)
            if call is not None:
                call.reset()
                self._close_if_idle()
        elif kind == frames.GOAWAY:
            self.going_away = True  # Envoy opens no more streams here; we end when idle
            self._close_if_idle()
        elif kind == frames.PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE from a client")
        elif kind == frames.PRIORITY and (sid == 0 or len(payload) != 5):
            raise ProtocolError("malformed PRIORITY")
        # Unknown frame types are ignored (RFC 9113 s4.1).

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ProtocolError("DATA on stream 0")
        # Every byte counts against the connection window, padding and closed streams too.
        self.recv_unacked += len(payload)
        if self.recv_unacked >= RECV_WINDOW // 2:
            self._out.append(frames.window_update(0, self.recv_unacked))
            self.recv_unacked = 0
        call = self.calls.get(sid)
        if call is None:
            if sid > self.last_stream:
                raise ProtocolError("DATA on an idle stream")
            return  # a stream we ended or reset; Envoy's frames in flight
        if call.remote_ended:
            raise StreamError(sid, "DATA after END_STREAM", frames.STREAM_CLOSED)
        call.recv_unacked += len(payload)
        if call.recv_unacked >= RECV_WINDOW // 2 and not flags & frames.END_STREAM:
            self._out.append(frames.window_update(sid, call.recv_unacked))
            call.recv_unacked = 0
        body = frames.strip_padding(payload, flags, sid)
        if body:
            call.feed(body)
        if flags & frames.END_STREAM:
            call.end()

    def _headers(self, sid: int, flags: int, block: bytes) -> None:
        try:
            fields = self._decoder.decode(block)
        except hpack.HPACKError as exc:
            raise ProtocolError(f"HPACK: {exc}", frames.COMPRESSION_ERROR) from None
        call = self.calls.get(sid)
        if call is not None:  # trailers: gRPC clients send none, but they end the stream
            if not flags & frames.END_STREAM:
                raise StreamError(sid, "trailers without END_STREAM")
            call.end()
            return
        if sid <= self.last_stream:
            raise ProtocolError("HEADERS on a closed stream", frames.STREAM_CLOSED)
        if sid % 2 == 0:
            raise ProtocolError("a client stream with an even id")
        self.last_stream = sid
        if self.going_away:
            self._reset(sid, frames.REFUSED_STREAM)
            return
        self.server.start_call(self, sid, fields, end_stream=bool(flags & frames.END_STREAM))

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ProtocolError("SETTINGS on a stream")
        if flags & frames.ACK:
            if payload:
                raise ProtocolError("SETTINGS ACK with a payload", frames.FRAME_SIZE_ERROR)
            return
        for ident, value in frames.parse_settings(payload):
            if ident == frames.MAX_FRAME_SIZE:
                self.peer_max_frame = value
            elif ident == frames.INITIAL_WINDOW_SIZE:
                delta = value - self.peer_window
                self.peer_window = value
                for call in self.calls.values():
                    call.send_window += delta
                    if call.send_window > frames.MAX_WINDOW:
                        raise ProtocolError(
                            "a stream window over 2^31-1", frames.FLOW_CONTROL_ERROR
                        )
                if delta > 0:
                    self._unblock()
        self._out.append(frames.SETTINGS_ACK)

    def _window_update(self, sid: int, payload: bytes) -> None:
        increment = frames.parse_window_update(payload)
        if sid == 0:
            if increment == 0:
                raise ProtocolError("WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > frames.MAX_WINDOW:
                raise ProtocolError("connection window over 2^31-1", frames.FLOW_CONTROL_ERROR)
            self._unblock()
            return
        call = self.calls.get(sid)
        if call is None:
            return  # a closed stream's
        if increment == 0:
            raise StreamError(sid, "WINDOW_UPDATE of 0")
        call.send_window += increment
        if call.send_window > frames.MAX_WINDOW:
            raise StreamError(sid, "stream window over 2^31-1", frames.FLOW_CONTROL_ERROR)
        if call in self.blocked:
            self.blocked.discard(call)
            call.window_opened()

    def _unblock(self) -> None:
        blocked, self.blocked = self.blocked, set()
        for call in blocked:
            call.window_opened()

    # Streams

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
