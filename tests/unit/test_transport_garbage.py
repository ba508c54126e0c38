"""The lean transport fed broken bytes: whatever comes, ``data_received`` never raises (an
exception there would escape into asyncio), nothing is written after the connection closed,
and a good stream on the connection before the garbage is answered or reset, never left hanging.

Seeded random frames and corrupted header blocks: the same cases on every run.
"""

from __future__ import annotations

import logging
import random

import grpc
import pytest
from grpc_health.v1.health_pb2 import HealthCheckRequest as Msg

from policy_extproc.transport import Call, H2Server, Route, frames
from tests.h2_peer import Peer, message, settle


async def echo(call: Call) -> None:
    while (msg := await call.read()) is not grpc.aio.EOF:
        await call.write(msg)


def _peer() -> Peer:
    p = Peer(H2Server({"/t.T/echo": Route(Msg, echo)}, max_message=1000))
    p.start()
    return p


async def _finish(p: Peer) -> None:
    await settle()
    for task in list(p.server.tasks):
        task.cancel()
    await settle()


@pytest.mark.parametrize("seed", range(4))
async def test_random_frames_never_raise_out_of_the_protocol(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)  # connection errors are warnings; nothing worse may come
    rnd = random.Random(seed)
    for _ in range(100):
        p = _peer()
        raw = bytearray(p.request(1, "/t.T/echo", message(Msg(service="ok"))))
        for _ in range(rnd.randint(1, 6)):
            payload = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 40)))
            kind, flags = rnd.randint(0, 10), rnd.getrandbits(8)
            raw += frames.frame(kind, flags, rnd.choice([0, 1, 2, 3, 5]), payload)
        if rnd.random() < 0.5:
            raw[rnd.randrange(len(raw))] = rnd.getrandbits(8)
        p.feed(bytes(raw), cut=rnd.choice([0, 1, 7]))  # FakeTransport fails a write after close
        await _finish(p)
    assert not caplog.records


@pytest.mark.parametrize("seed", range(2))
async def test_corrupted_header_blocks_are_compression_errors_or_answered(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(200):
        p = _peer()
        block = bytearray(p.headers_block("/t.T/echo"))
        for _ in range(rnd.randint(1, 4)):
            block[rnd.randrange(len(block))] = rnd.getrandbits(8)
        raw = frames.frame(frames.HEADERS, frames.END_HEADERS, 1, bytes(block))
        p.feed(raw + frames.frame(frames.DATA, frames.END_STREAM, 1, message(Msg())))
        await settle()
        got = p.take()
        kinds = {f.kind for f in got}
        # A connection error (GOAWAY), a reset, or an answer with trailers: never silence.
        assert kinds & {frames.GOAWAY, frames.RST_STREAM, frames.HEADERS}, got
        await _finish(p)
