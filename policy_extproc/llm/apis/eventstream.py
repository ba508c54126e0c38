"""AWS event-stream framing (``application/vnd.amazon.eventstream``), as Bedrock streams answers.

Pure decoder and encoder. A message is: a prelude (total length and headers length, 4-byte
big-endian each), the prelude's CRC32, the headers, the payload, and the CRC32 of everything
before it (AWS "Event stream encoding"; CRC32 as in gzip, ``zlib.crc32``). A header is a
one-byte name length, the name, a one-byte value type and the value: 0/1 true/false, 2 byte,
3 short, 4 int, 5 long, 6 byte array and 7 string (two-byte length first), 8 timestamp (ms,
8 bytes), 9 UUID (16 bytes).

A message that fails its CRCs or its lengths ends the decoding for good (``broken``): the rest
of the stream cannot be trusted to be cut where the provider cut it, and what we cannot read
we do not pass on as if it had been checked.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

from .wire import StreamEvent, compact, json_object

_PRELUDE = struct.Struct(">II")
_MIN = 16  # prelude (8), its CRC (4), the message CRC (4)
MAX_MESSAGE = 16 * 1024 * 1024  # the format's own limits
MAX_HEADERS = 128 * 1024
_FIXED = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}

HeaderValue = bool | int | bytes | str


class EventStreamError(ValueError):
    """A message that is not valid event-stream framing."""


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """One message: string headers as type 7, bytes as 6, bools as 0/1, ints as 4 (int32)."""
    head = bytearray()
    for name, value in headers.items():
        raw = name.encode()
        head += bytes((len(raw),)) + raw
        if isinstance(value, bool):
            head.append(0 if value else 1)
        elif isinstance(value, int):
            head += b"\x04" + struct.pack(">i", value)
        else:
            data = value.encode() if isinstance(value, str) else value
            head += (b"\x07" if isinstance(value, str) else b"\x06") + struct.pack(">H", len(data))
            head += data
    total = _MIN + len(head) + len(payload)
    prelude = _PRELUDE.pack(total, len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + bytes(head) + payload
    return body + struct.pack(">I", zlib.crc32(body))


def decode_headers(data: bytes) -> dict[str, HeaderValue]:
    out: dict[str, HeaderValue] = {}
    i, n = 0, len(data)
    try:
        while i < n:
            size = data[i]
            name = data[i + 1 : i + 1 + size].decode()
            i += 1 + size
            kind = data[i]
            i += 1
            value: HeaderValue
            if kind in (0, 1):
                value = kind == 0
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", data, i)
                raw = data[i + 2 : i + 2 + length]
                if len(raw) != length:
                    raise EventStreamError("a header value runs past the headers")
                value = raw.decode() if kind == 7 else raw
                i += 2 + length
            elif kind in _FIXED:
                size = _FIXED[kind]
                raw = data[i : i + size]
                if len(raw) != size:
                    raise EventStreamError("a header value runs past the headers")
                value = int.from_bytes(raw, "big", signed=True) if kind != 9 else raw
                i += size
            else:
                raise EventStreamError(f"unknown header value type {kind}")
            out[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"malformed headers: {exc}") from None
    return out


def decode_message(raw: bytes) -> tuple[dict[str, HeaderValue], bytes]:
    """The headers and payload of one whole message; EventStreamError if it is not one."""
    if len(raw) < _MIN:
        raise EventStreamError("shorter than a message")
    total, head_len = _PRELUDE.unpack_from(raw)
    if total != len(raw) or head_len > total - _MIN or head_len > MAX_HEADERS:
        raise EventStreamError("lengths do not agree")
    if zlib.crc32(raw[:8]) != struct.unpack_from(">I", raw, 8)[0]:
        raise EventStreamError("prelude CRC mismatch")
    if zlib.crc32(raw[:-4]) != struct.unpack_from(">I", raw, total - 4)[0]:
        raise EventStreamError("message CRC mismatch")
    return decode_headers(raw[12 : 12 + head_len]), raw[12 + head_len : -4]


def event_name(headers: Mapping[str, HeaderValue]) -> str | None:
    """The event's type (``:event-type``), or for an exception ``exception:<type>``."""
    if headers.get(":message-type") == "exception":
        return f"exception:{headers.get(':exception-type')!s}"
    if headers.get(":message-type") == "error":
        return f"error:{headers.get(':error-code')!s}"
    name = headers.get(":event-type")
    return name if isinstance(name, str) else None


class EventStreamFramer:
    """Incremental decoder: bytes in, one ``StreamEvent`` per complete message out."""

    __slots__ = ("_buf", "broken")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.broken: str | None = None  # why decoding stopped, once it did

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        if self.broken is not None:
            return []
        buf = self._buf
        buf += chunk
        events: list[StreamEvent] = []
        start = 0
        while len(buf) - start >= 8:
            total, head_len = _PRELUDE.unpack_from(buf, start)
            if total < _MIN or total > MAX_MESSAGE or head_len > total - _MIN:
                return self._break(events, "lengths out of range")
            if zlib.crc32(buf[start : start + 8]) != _crc_at(buf, start + 8):
                if len(buf) - start < 12:
                    break
                return self._break(events, "prelude CRC mismatch")
            if len(buf) - start < total:
                break
            raw = bytes(buf[start : start + total])
            try:
                headers, payload = decode_message(raw)
            except EventStreamError as exc:
                return self._break(events, str(exc))
            text = payload.decode("utf-8", "replace")
            events.append(StreamEvent(event_name(headers), text, raw, json_object(text)))
            start += total
        if start:
            del buf[:start]
        return events

    def flush(self) -> list[StreamEvent]:
        """At the end: a partial message is dropped (it cannot be checked), never passed on."""
        if self._buf and self.broken is None:
            self.broken = "the stream ended inside a message"
        self._buf.clear()
        return []

    def _break(self, events: list[StreamEvent], why: str) -> list[StreamEvent]:
        self.broken = why
        self._buf.clear()
        return events


def _crc_at(buf: bytearray, i: int) -> int | None:
    return struct.unpack_from(">I", buf, i)[0] if len(buf) >= i + 4 else None


def event_message(event_type: str, payload: object) -> bytes:
    """A JSON event message as Bedrock sends one."""
    headers = {":event-type": event_type, ":content-type": "application/json",
               ":message-type": "event"}  # fmt: skip
    return encode_message(headers, compact(payload).encode())


def exception_message(exception_type: str, payload: object) -> bytes:
    """An exception message: ends a stream with an error an AWS SDK raises."""
    headers = {":exception-type": exception_type, ":content-type": "application/json",
               ":message-type": "exception"}  # fmt: skip
    return encode_message(headers, compact(payload).encode())
