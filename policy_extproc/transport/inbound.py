"""What each frame the peer sends does to a connection's state: the reading half of
``connection.H2Connection``, which holds that state and does the I/O.

RFC 9113's rules for each frame type live here, and the abuse limits they are counted against
(``limits.Guard``): control frames and empty frames, header block sizes, rapid resets and
streams past SETTINGS_MAX_CONCURRENT_STREAMS.
"""

from __future__ import annotations

import asyncio

import hpack

from . import frames
from . import limits as lim
from .call import Call
from .frames import ProtocolError, StreamError
from .hpackcache import CachingDecoder

RECV_WINDOW = 16 * 1024 * 1024


class Inbound:
    """Frame handlers over the connection's state (set by ``H2Connection.__init__``)."""

    limits: lim.Limits
    guard: lim.Guard
    calls: dict[int, Call]
    blocked: set[Call]
    peer_max_frame: int
    peer_window: int
    send_window: int
    recv_unacked: int
    last_stream: int
    going_away: bool
    _settled: bool
    _continuing: tuple[int, int, list[bytes]] | None
    _block_size: int
    _decoder: CachingDecoder
    _out: list[bytes]
    _paused: asyncio.Future[None] | None

    # What the connection does for these handlers.

    def _settle(self) -> None:
        """The client's first SETTINGS came."""
        raise NotImplementedError

    def _start(self, sid: int, fields: list[tuple[str, str]], *, end_stream: bool) -> None:
        """A new stream's headers are in."""
        raise NotImplementedError

    def _reset(self, sid: int, code: int) -> None:
        """RST_STREAM ``sid`` with ``code``; forget its call."""
        raise NotImplementedError

    def _close_if_idle(self) -> None:
        """A stream ended: close if going away and none is left."""
        raise NotImplementedError

    # The frames.

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if not self._settled:  # RFC 9113 s3.4: the preface ends with a SETTINGS frame
            if kind != frames.SETTINGS or flags & frames.ACK:
                raise ProtocolError("the client preface does not end with SETTINGS")
            self._settle()
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
            if not fragment and not flags & frames.END_STREAM:
                self.guard.control("empty HEADERS")
            self.guard.block(len(fragment))
            if flags & frames.END_HEADERS:
                self._headers(sid, flags, fragment)
            else:
                self._continuing = (sid, flags, [fragment])
                self._block_size = len(fragment)
        elif kind == frames.CONTINUATION:
            if self._continuing is None:
                raise ProtocolError("CONTINUATION without HEADERS")
            if not payload:
                self.guard.control("empty CONTINUATION")
            self._continuing[2].append(payload)
            self._block_size += len(payload)
            self.guard.block(self._block_size)  # CVE-2024-27316: before it grows any further
            if flags & frames.END_HEADERS:
                parts = self._continuing[2]
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
            if flags & frames.ACK:
                self.guard.control("PING ACK")  # we send no PING
            else:
                self.guard.answer("PING")
                self.guard.reply_queued(self._paused is not None)
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
                if not call.started:  # reset in the read that opened it: a rapid reset
                    self.guard.early_reset()
        elif kind == frames.GOAWAY:
            self.going_away = True  # Envoy opens no more streams here; we end when idle
            self._close_if_idle()
        elif kind == frames.PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE from a client")
        elif kind == frames.PRIORITY:
            if sid == 0 or len(payload) != 5:
                raise ProtocolError("malformed PRIORITY")
            self.guard.control("PRIORITY")
        else:  # unknown frame types are ignored (RFC 9113 s4.1), within the budget
            self.guard.control(f"frame type {kind}")

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ProtocolError("DATA on stream 0")
        # Every byte counts against the connection window, padding and closed streams too.
        self.recv_unacked += len(payload)
        if self.recv_unacked >= RECV_WINDOW // 2:
            self._out.append(frames.window_update(0, self.recv_unacked))
            self.recv_unacked = 0
        body = frames.strip_padding(payload, flags, sid)
        if not body and not flags & frames.END_STREAM:
            self.guard.control("empty DATA")
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
        if body:
            call.feed(body)
        if flags & frames.END_STREAM:
            call.end()

    def _headers(self, sid: int, flags: int, block: bytes) -> None:
        try:
            fields = self._decoder.decode(block)
        except hpack.OversizedHeaderListError:
            size = self.limits.max_header_list_size
            raise lim.LimitExceeded(lim.HEADER_LIST_SIZE, f"a header list over {size}") from None
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
        if len(self.calls) >= self.limits.max_concurrent_streams:  # RFC 9113 s5.1.2
            n = self.limits.max_concurrent_streams
            self.guard.violated(lim.CONCURRENT_STREAMS, f"a stream past the {n} open: refused")
            self._reset(sid, frames.REFUSED_STREAM)
            self.guard.early_reset()  # a peer that ignores our limit costs like one that resets
            return
        self._start(sid, fields, end_stream=bool(flags & frames.END_STREAM))

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ProtocolError("SETTINGS on a stream")
        self.guard.control("SETTINGS")
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
        self.guard.reply_queued(self._paused is not None)
        self._out.append(frames.SETTINGS_ACK)

    def _window_update(self, sid: int, payload: bytes) -> None:
        self.guard.answer("WINDOW_UPDATE")
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
