"""Soak: the sidecar's resident memory under a steady load, sampled over minutes.

Starts ``policy-extproc serve`` (memory state, an audit log in a temporary directory, rotation
on so the disk stays small) with a policy that reserves and settles a budget and token limits on
every request, then plays Envoy's side of whole ext_proc exchanges (request headers, body,
response headers, a body with ``usage``) at a fixed rate, one user per request so limiter state
grows as it would with many users. Every ``--sample`` seconds it reads the sidecar's VmRSS from
``/proc``; at the end it prints the samples and the least-squares slope in MB per minute over
the second half (after warm-up: imports, caches and arenas settle first).

Prints figures; asserts nothing. Usage:

    .venv/bin/python benchmarks/soak.py [--rate 100] [--duration 300] [--sample 10]
        [--no-rotation]   (for a sidecar without the audit rotation flags, e.g. an older tree
                           on PYTHONPATH)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def slope_per_min(points: list[tuple[float, float]]) -> float:
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


async def run(rate: float, duration: float, sample: float, rotation: bool = True) -> None:
    work = Path(tempfile.mkdtemp(prefix="pe-soak-"))
    (work / "policies").mkdir()
    (work / "policies" / "soak.yaml").write_text(POLICY)
    exe = Path(sys.executable).parent / "policy-extproc"
    proc = await asyncio.create_subprocess_exec(
        str(exe), "serve", "--policies", str(work / "policies"), "--listen", "127.0.0.1:0",
        "--admin-listen", "off", "--audit-log", str(work / "audit.jsonl"),
        *(("--audit-max-bytes", "8M", "--audit-keep", "2") if rotation else ()),
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stderr is not None
    port = 0
    while not port:
        line = (await proc.stderr.readline()).decode()
        if not line:
            raise SystemExit("the sidecar exited before serving")
        if m := re.search(r"serving on 127\.0\.0\.1:(\d+)", line):
            port = int(m.group(1))
    drain = asyncio.create_task(proc.stderr.read())
    samples: list[tuple[float, float]] = []
    failures = sent = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = epg.ExternalProcessorStub(channel)
        start = time.monotonic()
        next_sample = 0.0
        pending: set[asyncio.Task[bool]] = set()
        while (elapsed := time.monotonic() - start) < duration:
            if elapsed >= next_sample:
                samples.append((elapsed, rss_mb(proc.pid)))
                print(f"{elapsed:7.0f} s  rss {samples[-1][1]:7.1f} MB  sent {sent}", flush=True)
                next_sample += sample
            task = asyncio.create_task(one(stub, sent))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            # open loop: the schedule does not wait for answers
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        results = await asyncio.gather(*pending)
        failures += results.count(False)
    samples.append((time.monotonic() - start, rss_mb(proc.pid)))
    proc.terminate()
    await proc.wait()
    drain.cancel()
    half = [p for p in samples if p[0] >= duration / 2]
    print(f"\nrate {rate:g}/s for {duration:g} s: {sent} exchanges, {failures} failed")
    print(f"rss first {samples[0][1]:.1f} MB, last {samples[-1][1]:.1f} MB")
    print(f"slope over the whole run {slope_per_min(samples):+.3f} MB/min")
    print(f"slope over the second half {slope_per_min(half):+.3f} MB/min ({len(half)} samples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--sample", type=float, default=10.0)
    parser.add_argument("--no-rotation", dest="rotation", action="store_false")
    args = parser.parse_args()
    asyncio.run(run(args.rate, args.duration, args.sample, args.rotation))


if __name__ == "__main__":
    main()
