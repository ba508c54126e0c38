"""The sidecar as ``benchmarks/soak.py`` runs it: ``policy-extproc`` with a probe on SIGUSR1.

Usage: ``python benchmarks/soak_probe.py <probe-dir> [--trace FRAMES] -- serve ...``.
On every SIGUSR1 the process writes ``<probe-dir>/probe-<n>.json`` (n counts from 0): its VmRSS,
the blocks Python's allocator holds (``sys.getallocatedblocks``) and its arenas (a heap of
live blocks whose arenas grow is fragmented), the asyncio tasks alive and the object counts by
type (``gc.get_objects``). SIGUSR2 does the same, then calls glibc's
``malloc_trim(0)`` and adds the VmRSS after it (memory the allocator held free: fragmentation
or a high-water mark, not live objects). With
``--trace``, tracemalloc runs from the start and each probe also dumps its snapshot to
``probe-<n>.tracemalloc``, for ``soak.py`` to compare by traceback. ``-- bare`` runs a bare
gRPC ext_proc server instead of the sidecar (``soak.py --bare``).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import json
import os
import re
import signal
import sys
import tempfile
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType


def rss_kb() -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else -1


def pymalloc() -> dict[str, int]:
    """Python's small-object allocator as ``sys._debugmallocstats`` tells it (it writes to the C
    stderr): arenas held, bytes in live blocks and free bytes inside those arenas."""
    wanted = {
        "arenas allocated current": "arenas",
        "bytes in allocated blocks": "pymalloc_used",
        "bytes in available blocks": "pymalloc_free",
    }
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    found = {}
    for line in text.splitlines():
        name, _, value = line.lstrip("# ").partition("=")
        if name.strip() in wanted:
            found[wanted[name.strip()]] = int(value.strip().replace(",", ""))
    return found


class Probe:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        self.n = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        n, self.n = self.n, self.n + 1
        report: dict[str, object] = {"rss_kb": rss_kb(), "blocks": sys.getallocatedblocks()}
        report.update(pymalloc())
        try:
            report["tasks"] = len(asyncio.all_tasks())
        except RuntimeError:  # no loop running yet
            report["tasks"] = 0
        counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        report["types"] = dict(counts.most_common(60))
        report["objects"] = sum(counts.values())
        if tracemalloc.is_tracing():
            report["traced"] = tracemalloc.get_traced_memory()[0]
            tracemalloc.take_snapshot().dump(str(self.out / f"probe-{n}.tracemalloc"))
        if signum == signal.SIGUSR2:
            self.malloc_trim(0)
            report["trimmed_rss_kb"] = rss_kb()
        tmp = self.out / f".probe-{n}.json"
        tmp.write_text(json.dumps(report))
        os.replace(tmp, self.out / f"probe-{n}.json")  # the reader never sees half a file


async def bare() -> None:
    """gRPC alone: an ext_proc server that answers every message with an empty reply (CONTINUE)
    and does nothing else, so ``soak.py --bare`` measures the drift that is not the sidecar's."""
    import grpc
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg

    class Continue(epg.ExternalProcessorServicer):
        async def Process(
            self,
            requests: AsyncIterator[ep.ProcessingRequest],
            context: grpc.aio.ServicerContext,
        ) -> AsyncIterator[ep.ProcessingResponse]:
            async for msg in requests:
                phase = msg.WhichOneof("request")
                yield ep.ProcessingResponse(**{phase: {}})

    server = grpc.aio.server()
    epg.add_ExternalProcessorServicer_to_server(Continue(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.wait_for_termination()


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    own, cli = args[:split], args[split + 1 :]
    out = Path(own[0])
    if "--trace" in own:
        tracemalloc.start(int(own[own.index("--trace") + 1]))
    probe = Probe(out)
    signal.signal(signal.SIGUSR1, probe)
    signal.signal(signal.SIGUSR2, probe)
    if cli == ["bare"]:
        asyncio.run(bare())
        return
    from policy_extproc.cli import main as cli_main

    sys.argv = ["policy-extproc", *cli]
    cli_main()


if __name__ == "__main__":
    main()
