"""CPU per request of the lean HTTP/2 transport, in process, no socket.

``request_path.py`` measures our request path without a transport; ``e2e.py`` measures it all
through Envoy and the kernel, with the noise of a loaded machine. This measures the transport
alone: an ``H2Connection`` over a stand-in transport (what it writes is counted, not sent),
fed the bytes Envoy sends for one chat request (HEADERS and the request headers message, then
each message once the last one was answered, then RST_STREAM, which Envoy sends as each stream
ends, in the read that opens the next stream), served by a handler that answers each message
with its phase's empty reply. It prints CPU microseconds per request (``time.process_time``),
median [min..max] of the rounds, and the transport writes per request.

``--root`` imports policy_extproc from another checkout, to compare two trees in turns. Runs on
uvloop, as ``serve`` does under h2. Prints figures; asserts nothing. Usage:

    .venv/bin/python benchmarks/h2_path.py [--requests 5000] [--rounds 5] [--root PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


class Wire(asyncio.Transport):
    """Stands in for the socket: counts writes and wakes the driver at each."""

    def __init__(self) -> None:
        super().__init__({"peername": ("192.0.2.1", 1)})
        self.writes = 0
        self.waiter: asyncio.Future[None] | None = None

    def write(self, data: Any) -> None:
        self.writes += 1
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _reads(n: int, msgs: Sequence[Any], block: bytes) -> list[bytes]:
    """What Envoy sends for stream ``n`` (its id 2n+1), one item per read: HEADERS and the
    first message, then one message per read; the RST_STREAM goes with the next stream's."""
    from policy_extproc.transport import frames, grpcwire

    sid = 2 * n + 1
    data = [frames.frame(frames.DATA, 0, sid, grpcwire.encode(m.SerializeToString())) for m in msgs]
    first = frames.frame(frames.HEADERS, frames.END_HEADERS, sid, block) + data[0]
    if n:
        first = frames.rst_stream(sid - 2, frames.CANCEL) + first
    return [first, *data[1:]]


async def _handler(call: Any) -> None:
    import grpc
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

    while (msg := await call.read()) is not grpc.aio.EOF:
        resp = ep.ProcessingResponse()
        getattr(resp, msg.WhichOneof("request")).response.SetInParent()
        await call.write(resp)


async def run(args: argparse.Namespace) -> list[tuple[float, float]]:
    """Rounds of requests, each round on a new connection; (us, writes) per request."""
    import hpack
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
    from request_path import messages

    from policy_extproc.transport import H2Server, Route, frames
    from policy_extproc.transport.connection import H2Connection

    loop = asyncio.get_running_loop()
    fields = [(":method", "POST"), (":scheme", "http"), (":path", PATH),
              (":authority", "ext_proc"), ("content-type", "application/grpc"),
              ("te", "trailers")]  # fmt: skip
    msgs = [messages(i, 400, "ml") for i in range(args.requests)]
    out = []
    for _ in range(args.rounds + 1):  # the first round warms up
        server = H2Server({PATH: Route(ep.ProcessingRequest, _handler)}, max_message=1 << 22)
        conn = H2Connection(server)
        wire = Wire()
        conn.connection_made(wire)
        # Windows as large as they go, as Envoy's are: the replies never wait for one.
        big = frames.MAX_WINDOW
        conn.data_received(
            frames.PREFACE
            + frames.settings({frames.INITIAL_WINDOW_SIZE: big})
            + frames.window_update(0, big - frames.DEFAULT_WINDOW)
        )
        encoder = hpack.Encoder()
        # The first block fills HPACK's table; from then on Envoy's blocks are all alike.
        blocks = [bytes(encoder.encode(fields)) for _ in range(2)]
        reads = [_reads(i, m, blocks[min(i, 1)]) for i, m in enumerate(msgs)]
        wire.writes = 0
        started = time.process_time()
        for stream in reads:
            for chunk in stream:
                wire.waiter = waiter = loop.create_future()
                conn.data_received(chunk)
                await waiter
        await asyncio.sleep(0)
        used = time.process_time() - started
        out.append((used * 1e6 / args.requests, wire.writes / args.requests))
        conn.connection_lost(None)
        await asyncio.sleep(0)
    return out[1:]


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds")
    parser.add_argument("--root", default=str(HERE.parent), help="the checkout to import")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(Path(args.root).resolve()))
    # Imported now, from --root: request_path (imported later for its messages) puts this
    # checkout first on sys.path, and the package's modules then come from where it was found.
    import uvloop

    import policy_extproc  # noqa: F401

    figures = uvloop.run(run(args))
    us = [u for u, _ in figures]
    writes = statistics.median(w for _, w in figures)
    print(
        f"transport CPU us/request {statistics.median(us):.1f} [{min(us):.1f}..{max(us):.1f}],"
        f" writes/request {writes:.2f}  ({args.root})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
