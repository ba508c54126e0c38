"""The lean transport's pure parts on crafted bytes: HTTP/2 frames and the gRPC wire format."""

from __future__ import annotations

import hpack
import pytest

from policy_extproc.transport import frames, grpcwire
from policy_extproc.transport.frames import ProtocolError, StreamError
from tests.h2_peer import parse_frames


def test_a_frame_header_round_trips_with_a_24_bit_length() -> None:
    raw = frames.frame(frames.DATA, frames.END_STREAM, 7, b"x" * 70000)
    assert frames.parse_header(raw) == (70000, frames.DATA, frames.END_STREAM, 7)


def test_the_reserved_bit_of_the_stream_id_is_ignored() -> None:
    raw = bytearray(frames.frame(frames.DATA, 0, 3, b""))
    raw[5] |= 0x80
    assert frames.parse_header(raw)[3] == 3


def test_padding_is_stripped() -> None:
    padded = bytes([3]) + b"body" + b"\0\0\0"
    assert frames.strip_padding(padded, frames.PADDED, 1) == b"body"
    assert frames.strip_padding(b"body", 0, 1) == b"body"


@pytest.mark.parametrize("payload", [b"", bytes([4]) + b"abc", bytes([5]) + b"abcd"])
def test_padding_longer_than_the_frame_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        frames.strip_padding(payload, frames.PADDED, 1)


def test_headers_fragment_drops_padding_and_priority() -> None:
    payload = bytes([2]) + b"\x00\x00\x00\x00\x10" + b"block" + b"\0\0"
    flags = frames.PADDED | frames.PRIORITY_FLAG
    assert frames.headers_fragment(payload, flags, 1) == b"block"


def test_headers_too_short_for_its_priority_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        frames.headers_fragment(b"\x00\x00", frames.PRIORITY_FLAG, 1)


def test_a_stream_depending_on_itself_is_a_stream_error() -> None:
    with pytest.raises(StreamError) as err:
        frames.headers_fragment(b"\x00\x00\x00\x05\x10block", frames.PRIORITY_FLAG, 5)
    assert err.value.stream_id == 5


def test_settings_round_trip() -> None:
    raw = frames.settings({frames.MAX_FRAME_SIZE: 20000, frames.INITIAL_WINDOW_SIZE: 10})
    (frame,) = parse_frames(raw)
    assert frames.parse_settings(frame.payload) == [
        (frames.MAX_FRAME_SIZE, 20000),
        (frames.INITIAL_WINDOW_SIZE, 10),
    ]


@pytest.mark.parametrize(
    ("ident", "value", "code"),
    [
        (frames.ENABLE_PUSH, 2, frames.PROTOCOL_ERROR),
        (frames.INITIAL_WINDOW_SIZE, 2**31, frames.FLOW_CONTROL_ERROR),
        (frames.MAX_FRAME_SIZE, 16383, frames.PROTOCOL_ERROR),
        (frames.MAX_FRAME_SIZE, 2**24, frames.PROTOCOL_ERROR),
    ],
)
def test_settings_out_of_bounds_are_connection_errors(ident: int, value: int, code: int) -> None:
    payload = parse_frames(frames.settings({ident: value}))[0].payload
    with pytest.raises(ProtocolError) as err:
        frames.parse_settings(payload)
    assert err.value.code == code


def test_settings_of_a_bad_length_are_a_frame_size_error() -> None:
    with pytest.raises(ProtocolError) as err:
        frames.parse_settings(b"\x00\x01\x00")
    assert err.value.code == frames.FRAME_SIZE_ERROR


def test_window_update_of_a_bad_length_is_a_frame_size_error() -> None:
    assert frames.parse_window_update(b"\x80\x00\x00\x05") == 5  # the reserved bit dropped
    with pytest.raises(ProtocolError) as err:
        frames.parse_window_update(b"\x00\x01")
    assert err.value.code == frames.FRAME_SIZE_ERROR


def test_a_large_header_block_goes_out_as_headers_then_continuations() -> None:
    block = bytes(range(256)) * 100  # 25600 bytes
    got = parse_frames(frames.headers(3, block, 16384, end_stream=True))
    assert [f.kind for f in got] == [frames.HEADERS, frames.CONTINUATION]
    assert got[0].flags == frames.END_STREAM and got[1].flags == frames.END_HEADERS
    assert b"".join(f.payload for f in got) == block


def test_data_is_cut_at_the_peers_max_frame_size() -> None:
    got = parse_frames(frames.data(1, b"y" * 40000, 16384))
    assert [len(f.payload) for f in got] == [16384, 16384, 40000 - 32768]
    assert all(f.kind == frames.DATA and f.flags == 0 for f in got)


def test_our_header_blocks_decode_as_grpc_expects() -> None:
    decoder = hpack.Decoder()
    assert decoder.decode(grpcwire.RESPONSE_HEADERS) == [
        (":status", "200"),
        ("content-type", "application/grpc"),
    ]
    fields = dict(decoder.decode(grpcwire.trailers(13, "bad 100% ünicode\n")))
    assert fields["grpc-status"] == "13"
    assert fields["grpc-message"] == "bad 100%25 %C3%BCnicode%0A"  # gRPC's percent-encoding


def test_a_long_header_value_uses_multi_byte_hpack_integers() -> None:
    value = b"v" * 300
    assert hpack.Decoder().decode(grpcwire.literal(b"x-long", value)) == [("x-long", "v" * 300)]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5S", 5.0), ("500m", 0.5), ("1H", 3600.0), ("2M", 120.0), ("10u", 1e-5), ("7n", 7e-9)],
)
def test_grpc_timeout_parses(value: str, seconds: float) -> None:
    assert grpcwire.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "5", "5x", "-5S", "123456789S", "1.5S"])
def test_a_grpc_timeout_that_does_not_parse_is_none(value: str) -> None:
    assert grpcwire.parse_timeout(value) is None


def test_messages_come_out_of_any_cut_of_the_data() -> None:
    raw = grpcwire.encode(b"first") + grpcwire.encode(b"") + grpcwire.encode(b"third!")
    for cut in range(1, len(raw) + 1):
        reader = grpcwire.MessageReader(100)
        got = []
        for at in range(0, len(raw), cut):
            got += reader.feed(raw[at : at + cut])
        assert got == [b"first", b"", b"third!"], cut
        assert not reader.pending


def test_a_message_cut_short_is_pending() -> None:
    reader = grpcwire.MessageReader(100)
    assert reader.feed(grpcwire.encode(b"abcdef")[:7]) == []
    assert reader.pending


def test_a_message_over_the_limit_is_resource_exhausted_before_it_arrives() -> None:
    reader = grpcwire.MessageReader(10)
    with pytest.raises(grpcwire.MessageError) as err:
        reader.feed(grpcwire.PREFIX.pack(0, 11))  # the prefix alone says too much
    assert err.value.status == grpcwire.RESOURCE_EXHAUSTED


def test_a_compressed_message_is_unimplemented() -> None:
    with pytest.raises(grpcwire.MessageError) as err:
        grpcwire.MessageReader(10).feed(grpcwire.PREFIX.pack(1, 1) + b"x")
    assert err.value.status == grpcwire.UNIMPLEMENTED
