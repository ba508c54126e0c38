"""The AWS event-stream codec: hand-built frames with their CRCs, every header type, corrupt and
truncated input, and decoding that does not depend on where the bytes were cut."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy_extproc.llm.apis.eventstream import (
    EventStreamError,
    EventStreamFramer,
    decode_headers,
    decode_message,
    encode_message,
    event_message,
    exception_message,
)


def _by_hand(headers: bytes, payload: bytes) -> bytes:
    """A frame built field by field, as the spec draws it."""
    total = 4 + 4 + 4 + len(headers) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    head = prelude + zlib.crc32(prelude).to_bytes(4, "big") + headers + payload
    return head + zlib.crc32(head).to_bytes(4, "big")


def test_a_frame_without_headers_matches_a_published_vector() -> None:
    # {"foo": "bar"} with no headers, as the Elixir event_stream package documents it.
    expected = bytes([0, 0, 0, 30, 0, 0, 0, 0, 186, 242, 246, 138]) + b'{"foo": "bar"}'
    expected += bytes([174, 114, 88, 228])
    assert encode_message({}, b'{"foo": "bar"}') == expected == _by_hand(b"", b'{"foo": "bar"}')


def test_a_frame_with_a_string_header_matches_a_published_vector() -> None:
    header = bytes([12]) + b"content-type" + bytes([7, 0, 16]) + b"application/json"
    frame = encode_message({"content-type": "application/json"}, b'{"foo": "bar"}')
    assert frame == _by_hand(header, b'{"foo": "bar"}')
    assert frame[:12] == bytes([0, 0, 0, 62, 0, 0, 0, 32, 64, 93, 249, 70])
    assert frame[-4:] == bytes([111, 162, 191, 59])
    assert decode_message(frame) == ({"content-type": "application/json"}, b'{"foo": "bar"}')


def test_every_header_value_type_decodes() -> None:
    uuid = bytes(range(16))
    raw = b"".join(
        [
            b"\x01t\x00",
            b"\x01f\x01",
            b"\x01b\x02" + struct.pack(">b", -3),
            b"\x01s\x03" + struct.pack(">h", -300),
            b"\x01i\x04" + struct.pack(">i", 70000),
            b"\x01l\x05" + struct.pack(">q", -(2**40)),
            b"\x01y\x06" + struct.pack(">H", 3) + b"\x00\xff\x01",
            b"\x01z\x07" + struct.pack(">H", 2) + "é".encode(),
            b"\x01m\x08" + struct.pack(">q", 1_700_000_000_000),
            b"\x01u\x09" + uuid,
        ]
    )
    assert decode_headers(raw) == {
        "t": True, "f": False, "b": -3, "s": -300, "i": 70000, "l": -(2**40),
        "y": b"\x00\xff\x01", "z": "é", "m": 1_700_000_000_000, "u": uuid,
    }  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [b"\x01a\x0a", b"\x05ab", b"\x01a\x07\x00\x09abc", b"\x01a\x04\x00\x00", b"\x01a"],
    ids=["unknown type", "name cut", "string cut", "int cut", "no type"],
)
def test_malformed_headers_are_an_error(raw: bytes) -> None:
    with pytest.raises(EventStreamError):
        decode_headers(raw)


def _flip(frame: bytes, i: int) -> bytes:
    return frame[:i] + bytes([frame[i] ^ 0x01]) + frame[i + 1 :]


@pytest.mark.parametrize("where", [9, 14, -6, -1], ids=["prelude crc", "header", "payload", "crc"])
def test_a_corrupt_frame_stops_the_decoder(where: int) -> None:
    good = event_message("contentBlockDelta", {"delta": {"text": "hi"}})
    bad = _flip(good, where % len(good))
    framer = EventStreamFramer()
    assert [e.event for e in framer.feed(good + bad + good)] == ["contentBlockDelta"]
    assert framer.broken
    assert framer.feed(good) == []  # nothing after a corrupt frame is trusted


def test_lengths_out_of_range_stop_the_decoder() -> None:
    prelude = struct.pack(">II", 8, 0)
    framer = EventStreamFramer()
    assert framer.feed(prelude + struct.pack(">I", zlib.crc32(prelude))) == []
    assert framer.broken == "lengths out of range"


def test_a_stream_cut_inside_a_message_is_broken_at_the_end() -> None:
    frame = event_message("messageStop", {"stopReason": "end_turn"})
    framer = EventStreamFramer()
    assert framer.feed(frame[:-3]) == []
    assert framer.broken is None  # still waiting
    assert framer.flush() == []
    assert framer.broken == "the stream ended inside a message"


def test_exception_messages_name_their_type() -> None:
    frame = exception_message("throttlingException", {"message": "slow down"})
    (ev,) = EventStreamFramer().feed(frame)
    assert ev.event == "exception:throttlingException"
    assert ev.payload == {"message": "slow down"}
    assert ev.raw == frame


_PAYLOADS = st.lists(
    st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=3), min_size=1, max_size=6
)


@given(_PAYLOADS, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_any_chunk_cuts_give_the_same_events(
    payloads: list[dict[str, str]], cuts: list[int]
) -> None:
    stream = b"".join(event_message("contentBlockDelta", p) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    framer = EventStreamFramer()
    events = []
    prev = 0
    for c in [*points, len(stream)]:
        events += framer.feed(stream[prev:c])
        prev = c
    events += framer.flush()
    assert framer.broken is None
    assert [e.payload for e in events] == payloads
    assert b"".join(e.raw for e in events) == stream
    assert [json.loads(e.data) for e in events] == payloads
