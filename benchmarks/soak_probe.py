"""The sidecar as ``benchmarks/soak.py`` runs it: ``policy-extproc`` with a probe on SIGUSR1.

Usage: ``python benchmarks/soak_probe.py <probe-dir> [--trace FRAMES] -- serve ...``.
On every SIGUSR1 the process writes ``<probe-dir>/probe-<n>.json`` (n counts from 0): its VmRSS,
the blocks Python's allocator holds (``sys.getallocatedblocks``), the asyncio tasks alive and
the object counts by type (``gc.get_objects``). SIGUSR2 does the same, then calls glibc's
``malloc_trim(0)`` and adds the VmRSS after it (memory the allocator held free: fragmentation
or a high-water mark, not live objects). With
``--trace``, tracemalloc runs from the start and each probe also dumps its snapshot to
``probe-<n>.tracemalloc``, for ``soak.py`` to compare by traceback.
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
import tracemalloc
from pathlib import Path
from types import FrameType


def rss_kb() -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else -1


class Probe:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        self.n = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        n, self.n = self.n, self.n + 1
        report: dict[str, object] = {"rss_kb": rss_kb(), "blocks": sys.getallocatedblocks()}
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
    from policy_extproc.cli import main as cli_main

    sys.argv = ["policy-extproc", *cli]
    cli_main()


if __name__ == "__main__":
    main()
