"""The lean transport's abuse limits on crafted frames: concurrent streams, rapid resets,
control-frame and empty-frame floods, replies piling up for a peer that does not read,
header blocks past the cap, the handshake's timeout and the idle one.

Each test drives one H2Connection (tests/h2_peer.py) with small limits; the timeouts are tiny
ones waited for with a generous safety net, never timed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1.health_pb2 import HealthCheckRequest as Msg

from policy_extproc.transport import Call, H2Server, Route, frames
from policy_extproc.transport.limits import Budget, Limits
from tests.h2_peer import PEER_ADDRESS, Frame, Peer, goaway_code, message, settle, status_of

PING = frames.frame(frames.PING, 0, 0, b"12345678")


class Gate:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def echo(self, call: Call) -> None:
        while (msg := await call.read()) is not grpc.aio.EOF:
            await call.write(msg)

    async def wait(self, call: Call) -> None:
        await self.release.wait()
        await call.write(Msg(service="released"))


Make = Callable[..., Peer]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    gate = Gate()
    servers: list[H2Server] = []

    def build(**limits: Any) -> Peer:
        routes = {"/t.T/echo": Route(Msg, gate.echo), "/t.T/wait": Route(Msg, gate.wait)}
        server = H2Server(routes, max_message=64 * 1024, limits=Limits(**limits))
        servers.append(server)
        peer = Peer(server)
        peer.gate = gate  # type: ignore[attr-defined]
        return peer

    yield build
    for server in servers:
        for task in list(server.tasks):
            task.cancel()
    await settle()


def resets(got: list[Frame]) -> dict[int, int]:
    return {f.sid: int.from_bytes(f.payload, "big") for f in got if f.kind == frames.RST_STREAM}


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(1000):  # a safety net of 10 s, not an assertion about speed
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_our_settings_advertise_the_stream_and_header_limits(make: Make) -> None:
    p = make(max_concurrent_streams=7, max_header_list_size=8192)
    settings = dict(frames.parse_settings(p.take()[0].payload))
    assert settings[frames.MAX_CONCURRENT_STREAMS] == 7
    assert settings[frames.MAX_HEADER_LIST_SIZE] == 8192


async def test_a_stream_past_the_concurrent_limit_is_refused_and_the_others_go_on(
    make: Make,
) -> None:
    p = make(max_concurrent_streams=2)
    p.start()
    p.feed(p.request(1, "/t.T/wait", message(Msg())) + p.request(3, "/t.T/wait", message(Msg())))
    await settle()
    p.feed(p.request(5, "/t.T/echo", message(Msg(service="over"))))
    await settle()
    assert resets(p.take()) == {5: frames.REFUSED_STREAM}
    p.gate.release.set()  # type: ignore[attr-defined]
    await settle()
    got = p.take()
    assert status_of(p, got, 1)["grpc-status"] == status_of(p, got, 3)["grpc-status"] == "0"
    p.feed(p.request(7, "/t.T/echo", message(Msg(service="room again"))))
    await settle()
    assert status_of(p, p.take(), 7)["grpc-status"] == "0"
    assert not p.transport.closed
    assert p.server.violations == {"concurrent_streams": 1}


def _rapid(p: Peer, sids: range) -> bytes:
    return b"".join(
        p.request(sid, "/t.T/wait", message(Msg())) + frames.rst_stream(sid, frames.CANCEL)
        for sid in sids
    )


async def test_streams_reset_before_their_handler_ran_past_the_budget_are_goaway(
    make: Make,
) -> None:
    p = make(max_early_resets=5)
    p.start()
    p.feed(_rapid(p, range(1, 11, 2)))  # five: within the budget
    assert goaway_code(p.take()) is None and not p.transport.closed
    p.feed(_rapid(p, range(11, 13, 2)))
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM
    assert p.transport.closed
    assert p.server.violations == {"early_resets": 1}


async def test_envoys_resets_of_streams_it_used_are_not_counted(make: Make) -> None:
    # Envoy ends every ext_proc stream with END_STREAM, then RST_STREAM (its close()), and resets
    # the ones whose client left: after their handlers ran.
    p = make(max_early_resets=2)
    p.start()
    for sid in range(1, 41, 2):
        p.feed(p.request(sid, "/t.T/echo", message(Msg()), end=sid % 4 == 1))
        await settle()
        p.feed(frames.rst_stream(sid, frames.CANCEL))
    await settle()
    assert goaway_code(p.take()) is None and not p.transport.closed


async def test_refused_streams_count_as_early_resets(make: Make) -> None:
    p = make(max_concurrent_streams=1, max_early_resets=3)
    p.start()
    p.feed(p.request(1, "/t.T/wait", message(Msg())))
    await settle()
    p.feed(b"".join(p.request(sid, "/t.T/wait", message(Msg())) for sid in (3, 5, 7)))
    assert goaway_code(p.take()) is None
    p.feed(p.request(9, "/t.T/wait", message(Msg())))
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM


def _open_stream(p: Peer) -> bytes:
    return p.request(1, "/t.T/wait", end=False)


FLOODS: dict[str, Callable[[Peer], bytes]] = {
    "ping": lambda p: PING,
    "ping_ack": lambda p: frames.frame(frames.PING, frames.ACK, 0, b"x" * 8),
    "settings": lambda p: frames.settings({}),
    "window_update": lambda p: frames.window_update(0, 1),
    "priority": lambda p: frames.frame(frames.PRIORITY, 0, 1, b"\0\0\0\0\x10"),
    "unknown": lambda p: frames.frame(0x42, 0, 0, b"x"),
    "empty_data": lambda p: frames.frame(frames.DATA, 0, 1, b""),
    "padded_empty_data": lambda p: frames.frame(frames.DATA, frames.PADDED, 1, b"\x03abc"),
    "empty_continuation": lambda p: frames.frame(frames.CONTINUATION, 0, 1, b""),
}


@pytest.mark.parametrize("kind", FLOODS)
async def test_a_flood_of_control_or_empty_frames_is_goaway(make: Make, kind: str) -> None:
    p = make(max_control_frames=20)
    p.start()
    if kind == "empty_continuation":  # a header block that never ends
        p.feed(frames.frame(frames.HEADERS, 0, 1, p.headers_block("/t.T/wait")))
    elif kind.endswith("data"):
        p.feed(_open_stream(p))
    p.take()
    p.feed(FLOODS[kind](p) * 30)
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM
    assert p.transport.closed


async def test_empty_headers_without_end_stream_are_counted(make: Make) -> None:
    p = make(max_control_frames=5)
    p.start()
    raw = b"".join(
        frames.frame(frames.HEADERS, frames.END_HEADERS, sid, b"") for sid in range(1, 20, 2)
    )
    p.feed(raw)
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM


async def test_window_updates_and_pings_answering_our_data_are_free(make: Make) -> None:
    p = make(max_control_frames=3)
    p.start()  # its SETTINGS: 1
    p.feed(p.request(1, "/t.T/echo", message(Msg(service="x")), end=False))
    await settle()
    p.take()  # one DATA frame of ours: two frames' credit
    p.feed(frames.window_update(1, 10) + frames.window_update(0, 10) + PING + PING)  # 2 counted
    assert goaway_code(p.take()) is None
    p.feed(PING)
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM


async def test_a_peer_that_does_not_read_is_not_read_and_its_replies_are_capped(
    make: Make,
) -> None:
    p = make(max_queued_replies=3)
    p.start()
    p.conn.pause_writing()  # the transport's buffer went over its high-water mark
    assert not p.transport.reading
    p.feed(PING * 3)  # what was read before the pause took effect
    assert goaway_code(p.take()) is None
    p.conn.resume_writing()
    assert p.transport.reading
    p.conn.pause_writing()
    p.feed(PING * 4)
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM
    assert p.transport.aborted  # not close(): that would wait for a buffer nobody reads


async def test_a_header_block_past_the_cap_is_goaway_before_its_end(make: Make) -> None:
    p = make(max_header_list_size=4096)
    p.start()
    p.feed(frames.frame(frames.HEADERS, 0, 1, p.headers_block("/t.T/echo")))
    for _ in range(5):  # the block passes 4096 bytes with the fifth
        p.feed(frames.frame(frames.CONTINUATION, 0, 1, b"\x00" * 1000))
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM
    assert p.transport.closed and p.conn._block_size <= 4096 + 1000


async def test_a_single_headers_frame_past_the_cap_is_goaway(make: Make) -> None:
    p = make(max_header_list_size=4096)
    p.start()
    p.feed(frames.frame(frames.HEADERS, frames.END_HEADERS, 1, b"\x00" * 5000))
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM


async def test_a_small_block_decoding_past_the_cap_is_goaway(make: Make) -> None:
    # The dynamic table: the second block names a 3000-byte field twice in a few bytes.
    p = make(max_header_list_size=4096)
    p.start()
    big = [("x-big", "a" * 3000)]
    p.feed(p.request(1, "/t.T/echo", message(Msg()), extra=big))
    await settle()
    assert status_of(p, p.take(), 1)["grpc-status"] == "0"
    block = p.headers_block("/t.T/echo", big * 2)
    assert len(block) < 100
    p.feed(frames.frame(frames.HEADERS, frames.END_HEADERS | frames.END_STREAM, 3, block))
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM


async def test_a_preface_not_ending_in_settings_is_a_protocol_error(make: Make) -> None:
    p = make()
    p.take()
    p.feed(frames.PREFACE + PING)
    assert goaway_code(p.take()) == frames.PROTOCOL_ERROR


async def test_no_preface_in_time_is_goaway_and_close(make: Make) -> None:
    p = make(handshake_timeout_s=0.01)
    p.take()
    p.feed(frames.PREFACE[:10])  # a slow start that never ends
    await until(lambda: p.transport.closed, "the handshake timeout")
    assert goaway_code(p.take()) == frames.ENHANCE_YOUR_CALM
    assert p.server.violations == {"handshake_timeout": 1}


async def test_a_completed_handshake_stops_its_timer(make: Make) -> None:
    p = make(handshake_timeout_s=0.01)
    p.start()
    assert p.conn._timer is None  # the default idle timeout is off: no timer at all
    await asyncio.sleep(0.05)
    assert not p.transport.closed


async def test_an_idle_connection_is_goaway_no_error_once_its_streams_end(make: Make) -> None:
    p = make(idle_timeout_s=0.01)
    p.start()
    p.feed(p.request(1, "/t.T/wait", message(Msg())))
    await asyncio.sleep(0.05)  # a stream is open: not idle however long it takes
    assert not p.transport.closed
    p.gate.release.set()  # type: ignore[attr-defined]
    await until(lambda: p.transport.closed, "the idle timeout")
    got = p.take()
    assert status_of(p, got, 1)["grpc-status"] == "0"
    assert goaway_code(got) == frames.NO_ERROR


async def test_a_violation_is_warned_once_per_connection_with_the_peer_and_counted(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "policy_extproc.transport")
    p = make(max_concurrent_streams=1)
    p.start()
    p.feed(p.request(1, "/t.T/wait", message(Msg())))
    await settle()
    secret = [("x-secret", "hunter2")]
    p.feed(b"".join(p.request(s, "/t.T/wait", extra=secret) for s in (3, 5, 7)))
    assert set(resets(p.take())) == {3, 5, 7}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "192.0.2.7:40123" in warnings[0] and "concurrent_streams" in warnings[0]
    assert "hunter2" not in warnings[0]
    assert p.server.violations == {"concurrent_streams": 3}
    assert PEER_ADDRESS[0] in warnings[0]


def test_a_budget_counts_within_its_window_and_starts_again_after_it() -> None:
    now = [0.0]
    budget = Budget(2, 10.0, lambda: now[0])
    assert budget.spend() and budget.spend() and not budget.spend()
    now[0] = 10.0
    assert budget.spend()


@pytest.mark.parametrize(
    "bad",
    [
        {"max_concurrent_streams": 0},
        {"max_header_list_size": 100},
        {"window_s": 0},
        {"max_early_resets": 0},
        {"max_control_frames": 0},
        {"max_queued_replies": 0},
        {"handshake_timeout_s": 0},
        {"idle_timeout_s": -1},
    ],
)
def test_limits_out_of_range_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="h2 "):
        Limits(**bad)  # type: ignore[arg-type]
