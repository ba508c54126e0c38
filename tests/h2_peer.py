"""A client side of HTTP/2 made of crafted bytes, for the frame-layer tests of the lean transport.

``Peer`` drives a ``transport.connection.H2Connection`` through a fake asyncio transport: the
test builds frames (``frames.frame``), feeds them with ``feed`` (in one read, or cut anywhere),
and reads what the server wrote as parsed frames (``take``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import hpack

from policy_extproc.transport import frames, grpcwire
from policy_extproc.transport.connection import H2Connection
from policy_extproc.transport.server import H2Server

PEER_ADDRESS = ("192.0.2.7", 40123)


class FakeTransport(asyncio.Transport):
    """Collects what the connection writes; ``close`` (or ``abort``) marks it closed, and
    ``pause_reading`` / ``resume_reading`` are remembered in ``reading``."""

    def __init__(self) -> None:
        super().__init__({"peername": PEER_ADDRESS})
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "a write after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


@dataclass
class Frame:
    kind: int
    flags: int
    sid: int
    payload: bytes


def parse_frames(raw: bytes | bytearray) -> list[Frame]:
    out, at = [], 0
    while at < len(raw):
        length, kind, flags, sid = frames.parse_header(raw, at)
        body = bytes(raw[at + frames.HEADER_LEN : at + frames.HEADER_LEN + length])
        assert len(body) == length, "a frame cut short"
        out.append(Frame(kind, flags, sid, body))
        at += frames.HEADER_LEN + length
    return out


class Peer:
    """Envoy's side of one connection, byte by byte."""

    def __init__(self, server: H2Server) -> None:
        self.server = server
        self.conn = H2Connection(server)
        self.transport = FakeTransport()
        self.conn.connection_made(self.transport)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()

    def feed(self, data: bytes, *, cut: int = 0) -> None:
        """``data`` in one read, or in reads of ``cut`` bytes."""
        if not cut:
            self.conn.data_received(data)
            return
        for at in range(0, len(data), cut):
            self.conn.data_received(data[at : at + cut])

    def start(self, settings: dict[int, int] | None = None) -> None:
        """The preface and our SETTINGS; what the server wrote so far is dropped."""
        self.feed(frames.PREFACE + frames.settings(settings or {}))
        self.take()

    def take(self) -> list[Frame]:
        """The frames written since the last call."""
        out = parse_frames(self.transport.written)
        self.transport.written.clear()
        return out

    def headers_block(self, path: str, extra: list[tuple[str, str]] | None = None) -> bytes:
        fields = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "sidecar"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *(extra or []),
        ]
        return bytes(self.encoder.encode(fields))

    def request(self, sid: int, path: str, *messages: bytes, end: bool = True, **kw: Any) -> bytes:
        """HEADERS, then each message as one DATA frame, END_STREAM on the last frame."""
        block = self.headers_block(path, kw.get("extra"))
        out = frames.frame(
            frames.HEADERS, frames.END_HEADERS | (0 if messages or not end else 1), sid, block
        )
        for i, message in enumerate(messages):
            last = end and i == len(messages) - 1
            out += frames.frame(frames.DATA, frames.END_STREAM if last else 0, sid, message)
        return out

    def decode(self, block: bytes) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.decoder.decode(block)}


def message(msg: Any) -> bytes:
    """A protobuf message, gRPC length-prefixed."""
    return grpcwire.encode(msg.SerializeToString())


def status_of(peer: Peer, got: list[Frame], sid: int) -> dict[str, str]:
    """The last header block the server sent on ``sid`` (trailers), decoded."""
    blocks = [f for f in got if f.sid == sid and f.kind == frames.HEADERS]
    assert blocks, f"no HEADERS on stream {sid}: {got}"
    fields = {}
    for block in blocks:
        fields = peer.decode(block.payload)
    return fields


def goaway_code(got: list[Frame]) -> int | None:
    """The error code of the GOAWAY among ``got``, if any."""
    for f in got:
        if f.kind == frames.GOAWAY:
            return int.from_bytes(f.payload[4:8], "big")
    return None


def data_of(got: list[Frame], sid: int) -> bytes:
    return b"".join(f.payload for f in got if f.sid == sid and f.kind == frames.DATA)


async def settle(rounds: int = 5) -> None:
    """Let the handler tasks run and the queued writes go out (no timing: loop turns)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
