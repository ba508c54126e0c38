"""gRPC over HTTP/2, the wire parts: length-prefixed messages, status trailers, grpc-timeout.

Our own header blocks are HPACK without the dynamic table (literal without indexing, RFC 7541
s6.2.2), so they are constant bytes per status and never depend on what was sent before.
"""

from __future__ import annotations

import struct
from urllib.parse import quote

# gRPC status codes used here.
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

PREFIX = struct.Struct(">BL")  # compressed flag, message length
PREFIX_LEN = 5
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class MessageError(Exception):
    """A request message the stream cannot take: end the stream with this gRPC status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _int(value: int, bits: int, first: int) -> bytes:
    """An HPACK integer with a ``bits``-bit prefix, high bits of the first byte ``first``."""
    limit = (1 << bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(raw: bytes) -> bytes:
    return _int(len(raw), 7, 0) + raw  # no Huffman coding


def literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, with a new name."""
    return b"\x00" + _string(name) + _string(value)


# :status 200 (static index 8), content-type (static index 31) application/grpc.
RESPONSE_HEADERS = b"\x88" + _int(31, 4, 0) + _string(b"application/grpc")


def trailers(status: int, message: str = "") -> bytes:
    """The trailer block: grpc-status, and grpc-message (percent-encoded) when there is one."""
    block = literal(b"grpc-status", str(status).encode())
    if message:
        block += literal(
            b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()
        )
    return block


OK_TRAILERS = trailers(OK)


def trailers_only(status: int, message: str = "") -> bytes:
    """The one header block of a response that ends at once (gRPC's "Trailers-Only")."""
    return RESPONSE_HEADERS + trailers(status, message)


def encode(message: bytes) -> bytes:
    """One length-prefixed, uncompressed gRPC message."""
    return PREFIX.pack(0, len(message)) + message


def parse_timeout(value: str) -> float | None:
    """Seconds of a grpc-timeout header ("500m", "5S"); None when it does not parse."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    return None if unit is None else int(value[:-1]) * unit


class MessageReader:
    """Length-prefixed gRPC messages out of a stream's DATA bytes, bounded by ``limit``."""

    __slots__ = ("_buf", "_limit")

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, chunk: bytes) -> list[bytes]:
        """The messages completed by ``chunk`` (often one, may be none); MessageError for a
        compressed message (we never offered an encoding) or one over the limit."""
        buf = self._buf
        if not buf and len(chunk) >= PREFIX_LEN:
            # The common case: one whole message in one DATA frame, no copy.
            flag, n = PREFIX.unpack_from(chunk)
            if len(chunk) == PREFIX_LEN + n:
                self._check(flag, n)
                return [chunk[PREFIX_LEN:]]
        buf += chunk
        out = []
        while len(buf) >= PREFIX_LEN:
            flag, n = PREFIX.unpack_from(buf)
            self._check(flag, n)
            if len(buf) < PREFIX_LEN + n:
                break
            out.append(bytes(buf[PREFIX_LEN : PREFIX_LEN + n]))
            del buf[: PREFIX_LEN + n]
        return out

    def _check(self, flag: int, n: int) -> None:
        if flag:
            raise MessageError(UNIMPLEMENTED, "compressed messages are not supported")
        if n > self._limit:
            raise MessageError(
                RESOURCE_EXHAUSTED,
                f"Received message larger than max ({n} vs. {self._limit})",
            )

    @property
    def pending(self) -> bool:
        """Bytes of an unfinished message are waiting (a stream ending now is malformed)."""
        return bool(self._buf)
