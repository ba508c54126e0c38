"""``serve --transport h2``'s abuse limits against a raw socket: each flood gets GOAWAY
ENHANCE_YOUR_CALM and a closed connection, while a real gRPC client's ext_proc exchange, on a
connection of its own and open across the flood, goes on and is decided.

The limits are small ones (``h2_limits``) so that a flood is a few hundred frames.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import hpack
import pytest

from policy_extproc.listeners import H2Listener
from policy_extproc.transport import frames
from policy_extproc.transport.limits import Limits
from tests.h2_peer import Frame, parse_frames
from tests.integration.helpers import (
    Running,
    chat_body,
    metadata,
    request_body,
    request_headers,
    running_sidecar,
)

POLICIES = """
- policy_name: acme_base
  org: acme
  rules:
    - {type: content_filter, id: secrets, keywords: [confidential], action: block}
"""
LIMITS = Limits(
    max_concurrent_streams=50,
    max_header_list_size=8192,
    max_early_resets=20,
    max_control_frames=50,
    handshake_timeout_s=0.5,
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_sidecar(tmp_path, POLICIES, transport="h2", h2_limits=LIMITS) as running:
        yield running


def _headers(encoder: hpack.Encoder, sid: int, *, end_headers: bool = True) -> bytes:
    block = encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Check"),
            (":authority", "sidecar"),
            ("content-type", "application/grpc"),
        ]
    )
    return frames.frame(frames.HEADERS, frames.END_HEADERS if end_headers else 0, sid, block)


def ping_flood(encoder: hpack.Encoder) -> bytes:
    return frames.frame(frames.PING, 0, 0, b"12345678") * 500


def settings_flood(encoder: hpack.Encoder) -> bytes:
    return frames.settings({frames.INITIAL_WINDOW_SIZE: 65535}) * 500


def rapid_reset(encoder: hpack.Encoder) -> bytes:
    return b"".join(
        _headers(encoder, sid) + frames.rst_stream(sid, frames.CANCEL) for sid in range(1, 400, 2)
    )


def continuation_flood(encoder: hpack.Encoder) -> bytes:
    # A header block that never ends: grows past the cap long before the flood ends.
    head = _headers(encoder, 1, end_headers=False)
    return head + frames.frame(frames.CONTINUATION, 0, 1, b"\x00" * 1000) * 200


def empty_data_flood(encoder: hpack.Encoder) -> bytes:
    return _headers(encoder, 1) + frames.frame(frames.DATA, 0, 1, b"") * 500


# The flood, and the limit it runs into.
FLOODS: dict[str, tuple[Callable[[hpack.Encoder], bytes], str]] = {
    "ping": (ping_flood, "control_frames"),
    "settings": (settings_flood, "control_frames"),
    "empty_data": (empty_data_flood, "control_frames"),
    "rapid_reset": (rapid_reset, "early_resets"),
    "continuation": (continuation_flood, "header_list_size"),
    "no_preface": (lambda encoder: b"", "handshake_timeout"),
}


async def _flood(port: int, raw: bytes, *, preface: bool) -> list[Frame]:
    """Send ``raw`` (after the preface) on a connection of its own; what came back until the
    server closed it. A closed socket mid-flood is the point: what was read before says why."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = bytearray()
    with contextlib.suppress(ConnectionError):
        if preface:
            writer.write(frames.PREFACE + frames.settings({}))
        writer.write(raw)
        await writer.drain()
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), 30):  # a safety net only
            got += chunk
    writer.close()
    return parse_frames(_whole_frames(got))


def _whole_frames(raw: bytearray) -> bytes:
    at = 0
    while at + frames.HEADER_LEN <= len(raw):
        length = frames.parse_header(raw, at)[0]
        if at + frames.HEADER_LEN + length > len(raw):
            break
        at += frames.HEADER_LEN + length
    return bytes(raw[:at])


@pytest.mark.parametrize("kind", FLOODS)
async def test_a_flood_is_goaway_while_another_connections_call_goes_on(
    server: Running, kind: str
) -> None:
    body = chat_body("hello")
    call = server.stub.Process()  # open on the client's own connection across the flood
    await call.write(request_headers(body=body, request_id=f"r-{kind}"))
    assert await call.read() is not None

    flood, limit = FLOODS[kind]
    port = server.sidecar.port
    got = await _flood(port, flood(hpack.Encoder()), preface=kind != "no_preface")

    goaways = [f for f in got if f.kind == frames.GOAWAY]
    assert goaways, f"no GOAWAY: {got[-5:]}"
    assert int.from_bytes(goaways[-1].payload[4:8], "big") == frames.ENHANCE_YOUR_CALM
    await call.write(request_body(body))
    answer = await call.read()
    assert metadata(answer)["decision"] == "allow"
    await call.done_writing()
    listener = server.sidecar._server
    assert isinstance(listener, H2Listener) and listener.violations.get(limit, 0) >= 1
