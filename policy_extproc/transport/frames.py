"""HTTP/2 frames (RFC 9113) for the lean gRPC transport: constants, parsing, building.

Pure functions on bytes; no state, no I/O. ``connection.py`` holds the connection's state and
drives these. Only what a gRPC server talking to Envoy needs: no server push, no priorities (a
PRIORITY frame or the priority fields of HEADERS are parsed and ignored).
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types.
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings.
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

# Error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_WINDOW = 2**31 - 1
MAX_FRAME_LIMIT = 2**24 - 1
HEADER_LEN = 9

_HEADER = struct.Struct(">HBBBL")  # length as 16 + 8 bits, type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_GOAWAY = struct.Struct(">LL")


class ProtocolError(Exception):
    """A connection error: the peer broke HTTP/2; answer GOAWAY with ``code`` and close."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class StreamError(Exception):
    """A stream error: reset that stream with ``code``; the connection goes on."""

    def __init__(self, stream_id: int, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code


def parse_header(buf: bytes | bytearray | memoryview, at: int = 0) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id) of the frame header at ``at`` (9 bytes must be there)."""
    hi, lo, kind, flags, sid = _HEADER.unpack_from(buf, at)
    return (hi << 8) | lo, kind, flags, sid & 0x7FFFFFFF


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-byte header, then the payload (its length must fit the peer's limit)."""
    n = len(payload)
    return _HEADER.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def strip_padding(payload: bytes, flags: int, stream_id: int) -> bytes:
    """A DATA or HEADERS payload without its padding (PADDED flag): ProtocolError if too short."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolError(f"stream {stream_id}: padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def headers_fragment(payload: bytes, flags: int, stream_id: int) -> bytes:
    """The header block fragment of a HEADERS frame: padding and priority fields removed."""
    payload = strip_padding(payload, flags, stream_id)
    if flags & PRIORITY_FLAG:
        if len(payload) < 5:
            raise ProtocolError(f"stream {stream_id}: HEADERS too short for its priority")
        if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
            raise StreamError(stream_id, "stream depends on itself")
        payload = payload[5:]
    return payload


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """(identifier, value) pairs of a SETTINGS payload, with the values RFC 9113 s6.5.2 bounds
    checked (ProtocolError, or FLOW_CONTROL_ERROR for a window over 2^31 - 1)."""
    if len(payload) % 6:
        raise ProtocolError("SETTINGS length not a multiple of 6", FRAME_SIZE_ERROR)
    out = []
    for at in range(0, len(payload), 6):
        ident, value = _SETTING.unpack_from(payload, at)
        if ident == ENABLE_PUSH and value > 1:
            raise ProtocolError("SETTINGS_ENABLE_PUSH not 0 or 1")
        if ident == INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise ProtocolError("SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1", FLOW_CONTROL_ERROR)
        if ident == MAX_FRAME_SIZE and not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
            raise ProtocolError("SETTINGS_MAX_FRAME_SIZE out of range")
        out.append((ident, value))
    return out


def settings(values: dict[int, int]) -> bytes:
    """A SETTINGS frame with these values."""
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame (increment 1 to 2^31 - 1)."""
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def parse_window_update(payload: bytes) -> int:
    """The increment of a WINDOW_UPDATE payload (0 is the caller's error to raise)."""
    if len(payload) != 4:
        raise ProtocolError("WINDOW_UPDATE length not 4", FRAME_SIZE_ERROR)
    return int(_U32.unpack(payload)[0] & 0x7FFFFFFF)


def rst_stream(stream_id: int, code: int) -> bytes:
    """A RST_STREAM frame."""
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def parse_u32(payload: bytes, what: str) -> int:
    """The 32-bit error code of RST_STREAM (FRAME_SIZE_ERROR when it is not 4 bytes)."""
    if len(payload) != 4:
        raise ProtocolError(f"{what} length not 4", FRAME_SIZE_ERROR)
    return int(_U32.unpack(payload)[0])


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame."""
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


def ping_ack(payload: bytes) -> bytes:
    """The answer to a PING: the same 8 bytes, ACK set."""
    return frame(PING, ACK, 0, payload)


def headers(stream_id: int, block: bytes, max_frame: int, *, end_stream: bool) -> bytes:
    """A header block as HEADERS, then CONTINUATION frames when it exceeds ``max_frame``."""
    first = block[:max_frame]
    rest = block[max_frame:]
    flags = END_STREAM if end_stream else 0
    if not rest:
        return frame(HEADERS, flags | END_HEADERS, stream_id, first)
    out = [frame(HEADERS, flags, stream_id, first)]
    while rest:
        chunk, rest = rest[:max_frame], rest[max_frame:]
        out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, chunk))
    return b"".join(out)


def data(stream_id: int, payload: bytes, max_frame: int) -> bytes:
    """``payload`` as DATA frames of at most ``max_frame`` bytes each (no END_STREAM)."""
    if len(payload) <= max_frame:
        return frame(DATA, 0, stream_id, payload)
    view = memoryview(payload)
    return b"".join(
        frame(DATA, 0, stream_id, bytes(view[at : at + max_frame]))
        for at in range(0, len(payload), max_frame)
    )
