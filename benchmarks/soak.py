"""Soak: the sidecar's resident memory under a steady load, sampled over minutes.

Starts ``policy-extproc serve`` (memory state, an audit log in a temporary directory, rotation
on so the disk stays small) with a policy that reserves and settles a budget and token limits on
every request, then plays Envoy's side of whole ext_proc exchanges (request headers, body,
response headers, a body with ``usage``) at a fixed rate, one user per request so limiter state
grows as it would with many users. Every ``--sample`` seconds it reads the sidecar's VmRSS;
at the end it prints the samples and the least-squares slope in MB per minute over the second
half (after warm-up: imports, caches and arenas settle first).

The sidecar runs under ``benchmarks/soak_probe.py``, which answers SIGUSR1 with its RSS, the
blocks Python's allocator holds, live asyncio tasks and object counts by type; so the report
also says whether Python's heap grows (blocks, objects) or only the RSS around it (allocator
fragmentation). The last sample calls glibc's ``malloc_trim(0)`` and reports the RSS after it
(how much of the RSS is free heap); ``--trim`` does so after every sample and fits that too.
``--arena-max N`` runs the sidecar with ``MALLOC_ARENA_MAX=N``; ``--trace F`` runs tracemalloc
(F frames: slower, so the rate it sustains is lower) and prints the allocation sites that grew
most between the middle and the end, by traceback. ``--bare`` plays the same traffic against
a bare gRPC ext_proc server that answers CONTINUE: the drift of gRPC and the interpreter alone.

Prints figures; asserts nothing. Usage:

    .venv/bin/python benchmarks/soak.py [--rate 100] [--duration 300] [--sample 10]
        [--trim] [--arena-max N] [--trace FRAMES] [--types] [--bare]
        [--no-rotation]   (for a sidecar without the audit rotation flags, e.g. an older tree
                           on PYTHONPATH)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from tests.integration.helpers import (
    chat_body,
    request_body,
    request_headers,
    response_body,
    response_headers,
)

POLICY = """
policy_name: soak
org: acme
rules:
  - {type: rate_limit, id: rate, per: user, requests: 1000000, tokens: 100000000, window: minute}
  - {type: cost_budget, id: spend, per: team, limit_usd: 1000000000, period: day}
  - type: content_filter
    id: secrets
    keywords: [confidential]
    action: block
"""
USAGE = json.dumps(
    {
        "choices": [{"message": {"content": "ok"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5},
    }
).encode()
PROBE = Path(__file__).resolve().with_name("soak_probe.py")


@dataclass
class Options:
    rate: float = 100.0
    duration: float = 300.0
    sample: float = 10.0
    rotation: bool = True
    trim: bool = False
    arena_max: int | None = None
    trace: int = 0
    types: bool = False
    bare: bool = False


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    xs = [t / 60 for t, _ in points]
    ys = [m for _, m in points]
    if len(points) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def one(stub: epg.ExternalProcessorStub, i: int) -> bool:
    body = chat_body("hello there", model="gpt-4o-mini")
    headers = {"x-user-id": f"u{i}", "x-team-id": f"t{i % 50}"}
    call = stub.Process()
    try:
        for msg in (
            request_headers(body=body, request_id=f"soak-{i}", headers=headers),
            request_body(body),
            response_headers(),
            response_body(USAGE),
        ):
            await call.write(msg)
            answer = await call.read()
            if answer is grpc.aio.EOF or answer.WhichOneof("response") == "immediate_response":
                break
        await call.done_writing()
        await call.read()
        return True
    except grpc.aio.AioRpcError:
        return False


async def probe(pid: int, work: Path, n: int, trim: bool) -> dict[str, Any]:
    """Ask the sidecar for probe n (and a malloc_trim after it) and wait for its answer."""
    os.kill(pid, signal.SIGUSR2 if trim else signal.SIGUSR1)
    path = work / f"probe-{n}.json"
    for _ in range(1200):  # a tracemalloc snapshot of a big heap takes seconds
        if path.exists():
            return dict(json.loads(path.read_text()))
        await asyncio.sleep(0.05)
    raise SystemExit(f"the sidecar did not answer probe {n}")


async def run(opts: Options) -> None:
    work = Path(tempfile.mkdtemp(prefix="pe-soak-"))
    (work / "policies").mkdir()
    (work / "policies" / "soak.yaml").write_text(POLICY)
    env = dict(os.environ)
    if opts.arena_max is not None:
        env["MALLOC_ARENA_MAX"] = str(opts.arena_max)
    own = ["--trace", str(opts.trace)] if opts.trace else []
    serve = [
        "serve", "--policies", str(work / "policies"), "--listen", "127.0.0.1:0",
        "--admin-listen", "off", "--audit-log", str(work / "audit.jsonl"),
        *(("--audit-max-bytes", "8M", "--audit-keep", "2") if opts.rotation else ()),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROBE),
        str(work),
        *own,
        "--",
        *(["bare"] if opts.bare else serve),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env=env,
    )
    assert proc.stderr is not None
    port = 0
    while not port:
        line = (await proc.stderr.readline()).decode()
        if not line:
            raise SystemExit("the sidecar exited before serving")
        if m := re.search(r"serving on 127\.0\.0\.1:(\d+)", line):
            port = int(m.group(1))
    drain = asyncio.create_task(proc.stderr.read())
    probes: list[tuple[float, dict[str, Any]]] = []
    failures = sent = 0

    async def sample(elapsed: float, trim: bool) -> None:
        p = await probe(proc.pid, work, len(probes), trim)
        probes.append((elapsed, p))
        trimmed = f"  trimmed {p['trimmed_rss_kb'] / 1024:7.1f} MB" if trim else ""
        print(
            f"{elapsed:7.0f} s  rss {p['rss_kb'] / 1024:7.1f} MB{trimmed}"
            f"  blocks {p['blocks']:>7}  arenas {p.get('arenas', -1):>4}"
            f"  objects {p['objects']:>6}  tasks {p['tasks']:>4}"
            f"  sent {sent}",
            flush=True,
        )

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = epg.ExternalProcessorStub(channel)
        start = time.monotonic()
        next_sample = 0.0
        pending: set[asyncio.Task[bool]] = set()
        while (elapsed := time.monotonic() - start) < opts.duration:
            if elapsed >= next_sample:
                await sample(elapsed, opts.trim)
                next_sample += opts.sample
            task = asyncio.create_task(one(stub, sent))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            # open loop: the schedule does not wait for answers (a probe's pause is made up)
            await asyncio.sleep(max(0.0, start + sent / opts.rate - time.monotonic()))
        results = await asyncio.gather(*pending)
        failures += results.count(False)
        await asyncio.sleep(1.0)  # the last exchanges settle
        await sample(time.monotonic() - start, True)  # and how much of the RSS is free heap
    proc.terminate()
    await proc.wait()
    drain.cancel()
    report(opts, probes, sent, failures, work)


def series(
    probes: list[tuple[float, dict[str, Any]]], name: str, scale: float = 1.0
) -> list[tuple[float, float]]:
    return [(t, float(p[name]) / scale) for t, p in probes]


def report(
    opts: Options, probes: list[tuple[float, dict[str, Any]]], sent: int, failures: int,
    work: Path,
) -> None:  # fmt: skip
    half = [(t, p) for t, p in probes if t >= opts.duration / 2]
    rss, rss_half = series(probes, "rss_kb", 1024), series(half, "rss_kb", 1024)
    print(f"\nrate {opts.rate:g}/s for {opts.duration:g} s: {sent} exchanges, {failures} failed")
    end = probes[-1][1]
    print(f"rss first {rss[0][1]:.1f} MB, last {rss[-1][1]:.1f} MB", end="")
    print(f" ({end['trimmed_rss_kb'] / 1024:.1f} MB after malloc_trim(0))")
    print(f"slope over the whole run {slope_per_min(rss):+.3f} MB/min")
    print(f"slope over the second half {slope_per_min(rss_half):+.3f} MB/min ({len(half)} samples)")
    if opts.trim:
        trimmed = series(half, "trimmed_rss_kb", 1024)
        print(f"  after malloc_trim(0), second half {slope_per_min(trimmed):+.3f} MB/min")
    # The memory state is purged once a minute, so the blocks saw-tooth with a minute of users:
    # the lowest of each minute is the heap without them (the last minute may be cut short).
    lows: dict[int, tuple[float, float]] = {}
    for t, blocks in series(half, "blocks"):
        minute = int((t - half[0][0]) // 60)
        if minute not in lows or blocks < lows[minute][1]:
            lows[minute] = (t, blocks)
    low = slope_per_min(list(lows.values())[:-1])
    print(f"  blocks, the lowest of each minute, second half {low:+.1f}/min")
    for name in ("blocks", "arenas", "pymalloc_used", "pymalloc_free", "objects", "tasks"):
        if any(name not in p for _, p in probes):
            continue  # pymalloc's figures are not there under tracemalloc
        print(f"  {name} second half {slope_per_min(series(half, name)):+.1f}/min"
              f" (first {probes[0][1][name]}, last {probes[-1][1][name]})")  # fmt: skip
    if opts.types and len(half) >= 2:
        first, last = half[0][1]["types"], half[-1][1]["types"]
        grown = sorted(((last[k] - first.get(k, 0), k) for k in last), reverse=True)[:15]
        shown = ", ".join(f"{k} {d:+}" for d, k in grown)
        print(f"  object types grown over the second half: {shown}")
    if opts.trace and len(half) >= 2:
        n0, n1 = probes.index(half[0]), len(probes) - 1
        before = tracemalloc.Snapshot.load(str(work / f"probe-{n0}.tracemalloc"))
        after = tracemalloc.Snapshot.load(str(work / f"probe-{n1}.tracemalloc"))
        print("  allocations grown over the second half, by traceback:")
        for stat in after.compare_to(before, "traceback")[:12]:
            print(f"    {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7} blocks")
            for line in stat.traceback.format()[-8:]:
                print(f"        {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--sample", type=float, default=10.0)
    parser.add_argument("--no-rotation", dest="rotation", action="store_false")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) at every sample")
    parser.add_argument("--arena-max", type=int, default=None, help="MALLOC_ARENA_MAX")
    parser.add_argument("--trace", type=int, default=0, metavar="FRAMES", help="tracemalloc")
    parser.add_argument("--types", action="store_true", help="object types that grew")
    parser.add_argument("--bare", action="store_true", help="a bare gRPC server, no sidecar")
    args = parser.parse_args()
    asyncio.run(run(Options(**vars(args))))


if __name__ == "__main__":
    main()
