"""The lean transport's connection on crafted bytes: preface, SETTINGS, PING, flow control,
CONTINUATION, padding, resets, GOAWAY, and gRPC calls that fail without hurting the others.

Each test drives one H2Connection (tests/h2_peer.py) with the frames Envoy could send and reads
the frames it answers with; the handlers are tiny ones over a health message type.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1.health_pb2 import HealthCheckRequest as Msg

from policy_extproc.transport import Call, H2Server, Route, frames, grpcwire
from policy_extproc.transport.connection import RECV_WINDOW
from tests.h2_peer import Peer, data_of, goaway_code, message, settle, status_of

LIMIT = 64 * 1024


class Handlers:
    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.waiting: asyncio.Event = asyncio.Event()
        self.release: asyncio.Event = asyncio.Event()

    async def echo(self, call: Call) -> None:
        while (msg := await call.read()) is not grpc.aio.EOF:
            await call.write(msg)

    async def wait(self, call: Call) -> None:
        try:
            self.waiting.set()
            await self.release.wait()
            await call.write(Msg(service="released"))
        except asyncio.CancelledError:
            self.cancelled.append(call.path)
            raise

    async def meta(self, call: Call) -> None:
        await call.read()
        names = ",".join(f"{k}={v}" for k, v in call.invocation_metadata())
        await call.write(Msg(service=names))

    async def boom(self, call: Call) -> None:
        raise RuntimeError("a bug")

    async def big(self, call: Call) -> None:
        request = await call.read()
        await call.write(Msg(service="z" * int(request.service)))


Pair = tuple[Peer, Handlers]


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, Handlers]]:
    h = Handlers()
    routes = {
        f"/t.T/{name}": Route(Msg, getattr(h, name)) for name in ("echo", "wait", "meta", "boom")
    }
    routes["/t.T/big"] = Route(Msg, h.big)
    server = H2Server(routes, max_message=LIMIT)
    p = Peer(server)
    yield p, h
    for task in list(server.tasks):
        task.cancel()
    await settle()


async def test_the_server_speaks_first_with_its_settings_and_acks_ours(peer: Pair) -> None:
    p, _ = peer
    first = p.take()
    assert first[0].kind == frames.SETTINGS and not first[0].flags & frames.ACK
    settings = dict(frames.parse_settings(first[0].payload))
    assert settings[frames.INITIAL_WINDOW_SIZE] == RECV_WINDOW
    assert first[1].kind == frames.WINDOW_UPDATE and first[1].sid == 0
    p.feed(frames.PREFACE + frames.settings({frames.MAX_FRAME_SIZE: 20000}), cut=5)
    (ack,) = p.take()
    assert (ack.kind, ack.flags, ack.payload) == (frames.SETTINGS, frames.ACK, b"")
    assert p.conn.peer_max_frame == 20000


async def test_a_wrong_preface_is_goaway_and_close(peer: Pair) -> None:
    p, _ = peer
    p.take()
    p.feed(b"GET / HTTP/1.1\r\n")
    assert goaway_code(p.take()) == frames.PROTOCOL_ERROR
    assert p.transport.closed


async def test_ping_is_acked_with_its_payload_and_an_ack_is_not(peer: Pair) -> None:
    p, _ = peer
    p.start()
    p.feed(frames.frame(frames.PING, 0, 0, b"12345678") + frames.frame(frames.PING, 1, 0, b"x" * 8))
    (pong,) = p.take()
    assert (pong.kind, pong.flags, pong.payload) == (frames.PING, frames.ACK, b"12345678")


async def test_a_call_cut_into_single_bytes_is_answered(peer: Pair) -> None:
    p, _ = peer
    p.start()
    p.feed(p.request(1, "/t.T/echo", message(Msg(service="a")), message(Msg(service="b"))), cut=1)
    await settle()
    got = p.take()
    assert status_of(p, got, 1)["grpc-status"] == "0"
    reader = grpcwire.MessageReader(LIMIT)
    assert [Msg.FromString(m).service for m in reader.feed(data_of(got, 1))] == ["a", "b"]
    headers = [f for f in got if f.kind == frames.HEADERS]
    assert p.decode(headers[0].payload)[":status"] == "200"
    assert headers[-1].flags & frames.END_STREAM


async def test_several_streams_in_one_read_are_each_answered(peer: Pair) -> None:
    p, _ = peer
    p.start()
    raw = b"".join(p.request(sid, "/t.T/echo", message(Msg(service=str(sid)))) for sid in (1, 3, 5))
    p.feed(raw)
    await settle()
    got = p.take()
    for sid in (1, 3, 5):
        assert Msg.FromString(data_of(got, sid)[5:]).service == str(sid)


async def test_continuation_and_padding_are_read(peer: Pair) -> None:
    p, _ = peer
    p.start()
    block = p.headers_block(
        "/t.T/meta", [("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")]
    )
    padded = bytes([4]) + block[:10] + b"\0" * 4
    raw = frames.frame(frames.HEADERS, frames.PADDED, 1, padded)
    raw += frames.frame(frames.CONTINUATION, 0, 1, block[10:20])
    raw += frames.frame(frames.CONTINUATION, frames.END_HEADERS, 1, block[20:])
    body = message(Msg())
    raw += frames.frame(
        frames.DATA, frames.PADDED | frames.END_STREAM, 1, bytes([9]) + body + b"\0" * 9
    )
    p.feed(raw)
    await settle()
    got = p.take()
    assert status_of(p, got, 1)["grpc-status"] == "0"
    metadata = Msg.FromString(data_of(got, 1)[5:]).service
    assert "traceparent=00-" in metadata and "content-type" not in metadata


async def test_a_header_block_interrupted_by_another_frame_is_a_protocol_error(peer: Pair) -> None:
    p, _ = peer
    p.start()
    block = p.headers_block("/t.T/echo")
    p.feed(
        frames.frame(frames.HEADERS, 0, 1, block[:5]) + frames.frame(frames.PING, 0, 0, b"x" * 8)
    )
    assert goaway_code(p.take()) == frames.PROTOCOL_ERROR
    assert p.transport.closed


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (frames.frame(frames.DATA, 0, 0, b"x"), frames.PROTOCOL_ERROR),  # DATA on stream 0
        (frames.frame(frames.HEADERS, frames.END_HEADERS, 2, b""), frames.PROTOCOL_ERROR),  # even
        (frames.frame(frames.CONTINUATION, frames.END_HEADERS, 1, b""), frames.PROTOCOL_ERROR),
        (frames.frame(frames.PING, 0, 0, b"short"), frames.FRAME_SIZE_ERROR),
        (frames.frame(frames.DATA, 0, 1, b"x" * 16385), frames.FRAME_SIZE_ERROR),  # over ours
        (frames.frame(frames.WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), frames.PROTOCOL_ERROR),
        (frames.window_update(0, 2**31 - 1), frames.FLOW_CONTROL_ERROR),  # past 2^31-1
        (frames.frame(frames.RST_STREAM, 0, 9, b"\0\0\0\x08"), frames.PROTOCOL_ERROR),  # idle
        (frames.frame(frames.PUSH_PROMISE, 0, 1, b"\0" * 4), frames.PROTOCOL_ERROR),
        (frames.frame(frames.SETTINGS, frames.ACK, 0, b"\0" * 6), frames.FRAME_SIZE_ERROR),
        (
            frames.frame(frames.HEADERS, frames.END_HEADERS, 1, b"\xff\xff\xff"),
            frames.COMPRESSION_ERROR,
        ),
    ],
)
async def test_broken_http2_is_goaway_with_its_code(peer: Pair, raw: bytes, code: int) -> None:
    p, _ = peer
    p.start()
    p.feed(raw)
    assert goaway_code(p.take()) == code
    assert p.transport.closed


async def test_unknown_frame_types_and_priority_are_ignored(peer: Pair) -> None:
    p, _ = peer
    p.start()
    p.feed(frames.frame(0x42, 0, 0, b"whatever") + frames.frame(frames.PRIORITY, 0, 1, b"\0" * 5))
    assert p.take() == [] and not p.transport.closed


async def test_an_unknown_path_is_unimplemented_in_trailers_only(peer: Pair) -> None:
    p, _ = peer
    p.start()
    p.feed(p.request(1, "/t.T/nope", message(Msg())))
    await settle()
    got = p.take()
    heads = [f for f in got if f.kind == frames.HEADERS and f.sid == 1]
    assert len(heads) == 1 and heads[0].flags & frames.END_STREAM
    fields = p.decode(heads[0].payload)
    assert fields[":status"] == "200" and fields["grpc-status"] == str(grpcwire.UNIMPLEMENTED)


async def test_a_malformed_message_ends_its_stream_only(peer: Pair) -> None:
    p, _ = peer
    p.start()
    p.feed(p.request(1, "/t.T/echo", grpcwire.encode(b"\xff\xff\xff")))
    p.feed(p.request(3, "/t.T/echo", message(Msg(service="fine"))))
    await settle()
    got = p.take()
    assert status_of(p, got, 1)["grpc-status"] == str(grpcwire.INTERNAL)
    assert status_of(p, got, 3)["grpc-status"] == "0"
    assert not p.transport.closed


async def test_a_message_over_the_limit_is_resource_exhausted(peer: Pair) -> None:
    p, _ = peer
    p.start()
    big = grpcwire.encode(Msg(service="x" * LIMIT).SerializeToString())
    raw = p.request(1, "/t.T/echo", end=False)
    for at in range(0, len(big), 16384):
        raw += frames.frame(frames.DATA, 0, 1, big[at : at + 16384])
    p.feed(raw)
    await settle()
    assert status_of(p, p.take(), 1)["grpc-status"] == str(grpcwire.RESOURCE_EXHAUSTED)


async def test_a_stream_ending_inside_a_message_is_internal(peer: Pair) -> None:
    p, _ = peer
    p.start()
    p.feed(p.request(1, "/t.T/echo", message(Msg(service="abc"))[:-1]))
    await settle()
    assert status_of(p, p.take(), 1)["grpc-status"] == str(grpcwire.INTERNAL)


async def test_a_handler_that_raises_is_unknown_and_the_connection_goes_on(peer: Pair) -> None:
    p, _ = peer
    p.start()
    p.feed(p.request(1, "/t.T/boom", message(Msg())))
    await settle()
    assert status_of(p, p.take(), 1)["grpc-status"] == str(grpcwire.UNKNOWN)
    p.feed(p.request(3, "/t.T/echo", message(Msg(service="after"))))
    await settle()
    assert status_of(p, p.take(), 3)["grpc-status"] == "0"


async def test_rst_stream_cancels_that_stream_only(peer: Pair) -> None:
    p, h = peer
    p.start()
    p.feed(p.request(1, "/t.T/wait", message(Msg()), end=False))
    p.feed(p.request(3, "/t.T/wait", message(Msg()), end=False))
    await settle()
    p.feed(frames.rst_stream(1, frames.CANCEL))
    await settle()
    assert h.cancelled == ["/t.T/wait"]
    h.release.set()
    await settle()
    got = p.take()
    assert not [f for f in got if f.sid == 1]  # nothing more on the reset stream
    assert Msg.FromString(data_of(got, 3)[5:]).service == "released"
    p.feed(frames.frame(frames.DATA, 0, 1, b"late"))  # in flight after the reset: ignored
    assert not p.transport.closed


async def test_a_lost_connection_cancels_every_open_call(peer: Pair) -> None:
    p, h = peer
    p.start()
    p.feed(p.request(1, "/t.T/wait", message(Msg()), end=False))
    p.feed(p.request(3, "/t.T/wait", message(Msg()), end=False))
    await settle()
    p.conn.connection_lost(ConnectionResetError())
    await settle()
    assert h.cancelled == ["/t.T/wait", "/t.T/wait"]


async def test_grpc_timeout_ends_the_call_deadline_exceeded(peer: Pair) -> None:
    p, h = peer
    p.start()
    p.feed(p.request(1, "/t.T/wait", message(Msg()), end=False, extra=[("grpc-timeout", "1n")]))
    for _ in range(100):  # the loop's clock passes 1 ns at once; no wall-time assertion
        await asyncio.sleep(0)
        if h.cancelled:
            break
    await settle()
    assert status_of(p, p.take(), 1)["grpc-status"] == str(grpcwire.DEADLINE_EXCEEDED)


async def test_what_we_send_waits_for_the_peers_stream_window(peer: Pair) -> None:
    p, _ = peer
    p.start({frames.INITIAL_WINDOW_SIZE: 10})
    p.feed(p.request(1, "/t.T/big", message(Msg(service="100"))))
    await settle()
    got = p.take()
    assert len(data_of(got, 1)) == 10
    assert not [f for f in got if f.kind == frames.HEADERS and f.flags & frames.END_STREAM]
    p.feed(frames.window_update(1, 1000))
    await settle()
    rest = p.take()
    assert len(data_of(got, 1) + data_of(rest, 1)) == 5 + 2 + 100  # prefix, field tag and length
    assert status_of(p, rest, 1)["grpc-status"] == "0"


async def test_a_larger_initial_window_in_settings_unblocks_a_waiting_write(peer: Pair) -> None:
    p, _ = peer
    p.start({frames.INITIAL_WINDOW_SIZE: 0})
    p.feed(p.request(1, "/t.T/big", message(Msg(service="50"))))
    await settle()
    assert data_of(p.take(), 1) == b""
    p.feed(frames.settings({frames.INITIAL_WINDOW_SIZE: 65535}))
    await settle()
    got = p.take()
    assert len(data_of(got, 1)) == 5 + 2 + 50
    assert status_of(p, got, 1)["grpc-status"] == "0"


async def test_the_connection_window_bounds_what_we_send_too(peer: Pair) -> None:
    p, _ = peer
    p.start({frames.INITIAL_WINDOW_SIZE: 2**20})
    p.feed(p.request(1, "/t.T/big", message(Msg(service="60000"))))  # under the limit
    p.feed(p.request(3, "/t.T/big", message(Msg(service="60000"))))
    await settle()
    got = p.take()
    assert len(data_of(got, 1)) + len(data_of(got, 3)) == frames.DEFAULT_WINDOW
    p.feed(frames.window_update(0, 2**20))
    await settle()
    got += p.take()
    assert len(data_of(got, 1)) == len(data_of(got, 3)) == 5 + 4 + 60000


async def test_data_frames_we_send_honour_the_peers_max_frame_size(peer: Pair) -> None:
    p, _ = peer
    p.start({frames.MAX_FRAME_SIZE: 20000, frames.INITIAL_WINDOW_SIZE: 2**20})
    p.feed(frames.window_update(0, 2**20))
    p.feed(p.request(1, "/t.T/big", message(Msg(service="50000"))))
    await settle()
    sizes = [len(f.payload) for f in p.take() if f.kind == frames.DATA]
    assert max(sizes) == 20000 and sum(sizes) == 5 + 4 + 50000


async def test_received_data_is_given_back_in_window_updates(peer: Pair) -> None:
    p, _ = peer
    p.start()
    chunk = b"\0" * 16384
    p.feed(p.request(1, "/t.T/wait", end=False))
    n = RECV_WINDOW // 2 // len(chunk) + 1
    p.feed(
        b"".join(
            frames.frame(frames.DATA, frames.PADDED, 1, bytes([0]) + chunk[1:]) for _ in range(n)
        )
    )
    updates = {
        f.sid: int.from_bytes(f.payload, "big") for f in p.take() if f.kind == frames.WINDOW_UPDATE
    }
    assert updates[0] >= RECV_WINDOW // 2 and updates[1] >= RECV_WINDOW // 2  # padding counts


async def test_go_away_refuses_new_streams_and_lets_open_ones_finish(peer: Pair) -> None:
    p, h = peer
    p.start()
    p.feed(p.request(1, "/t.T/wait", message(Msg()), end=False))
    await settle()
    p.conn.go_away()
    await settle()
    got = p.take()
    assert goaway_code(got) == frames.NO_ERROR
    assert int.from_bytes(got[-1].payload[:4], "big") == 1  # the last stream we took
    p.feed(p.request(3, "/t.T/echo", message(Msg())))
    resets = [f for f in p.take() if f.kind == frames.RST_STREAM]
    assert resets and resets[0].sid == 3
    assert int.from_bytes(resets[0].payload, "big") == frames.REFUSED_STREAM
    h.release.set()
    p.feed(frames.frame(frames.DATA, frames.END_STREAM, 1, b""))
    await settle()
    assert status_of(p, p.take(), 1)["grpc-status"] == "0"
    assert p.transport.closed  # idle once the last stream ended
