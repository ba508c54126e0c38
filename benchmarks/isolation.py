"""One tenant's large PII-dense body against another tenant's small requests, through the sidecar.

Starts ``policy-extproc serve`` as its own process (so the client's work does not share its
GIL), then for each configuration:

- tenant ``big`` sends one chat request of N e-mail addresses (3 MB at 150,000) over ext_proc;
- meanwhile tenant ``small`` sends small requests (a ~1 KB prompt, one e-mail) at ``--rate``
  per second (open loop), each a whole ext_proc exchange (headers, body) on its own stream;
- printed: the big request's own time and decision, and the small requests' p50 / p99 / max
  latency and count while the big one was in the sidecar; a baseline row has no big request,
  which shows the machine's own noise;
- then, with the sidecar in this process, its event loop's lag (a 1 ms ticker) before and while
  the big body is decided: what the loop itself could not serve, whatever the machine does.

Configurations: ``--offload-workers 0`` (every body examined on the event loop, as before this
change) and the default (large bodies examined in a worker process). Prints; asserts nothing.

    .venv/bin/python benchmarks/isolation.py [--emails 150000] [--emails 15000] [--rate 200]
        [--work-timeout 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from tests.envoy_harness import ManagedProcess, free_port
from tests.integration.helpers import (
    Exchange,
    chat_body,
    request_body,
    request_headers,
)

POLICIES = """
- policy_name: everyone
  rules:
    - type: pii
      entities: [EMAIL, PHONE, CREDIT_CARD, US_SSN]
    - type: content_filter
      id: secrets
      keywords: [confidential, project aurora]
      action: redact
"""


MAX_PENDING = 500


class Sidecar(ManagedProcess):
    def __init__(self, workdir: Path, port: int, extra: list[str]) -> None:
        super().__init__([], "sidecar", workdir=workdir)
        policies = workdir / "policies.yaml"
        policies.write_text(POLICIES)
        self.port = port
        self.argv = [
            str(Path(sys.executable).with_name("policy-extproc")),
            "serve",
            "--policies",
            str(policies),
            "--listen",
            f"127.0.0.1:{port}",
            "--audit-log",
            str(workdir / "audit.jsonl"),
            "--admin-listen",
            "off",
            "--log-level",
            "warning",
            *extra,
        ]

    def start(self, timeout: float = 30.0) -> Sidecar:
        self.spawn()

        async def ready() -> bool:
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as ch:
                    await asyncio.wait_for(ch.channel_ready(), 0.5)
                return True
            except (TimeoutError, grpc.aio.AioRpcError):
                return False

        self.poll("gRPC ready", lambda: asyncio.run(ready()) or None, timeout)
        return self


async def one(stub: Any, body: bytes, org: str, rid: str) -> tuple[float, str]:
    """One whole request exchange; (seconds, decision or error code)."""
    t = time.perf_counter()
    ex = Exchange(stub)
    answer = await ex.send(request_headers(body=body, org=org, request_id=rid))
    if answer.WhichOneof("response") != "immediate_response":
        answer = await ex.send(request_body(body))
    await ex.close()
    kind = answer.WhichOneof("response")
    if kind == "immediate_response":
        outcome = json.loads(answer.immediate_response.body)["error"]["code"]
    else:
        fields = answer.dynamic_metadata.fields["policy_extproc"].struct_value.fields
        outcome = fields["decision"].string_value
    return time.perf_counter() - t, outcome


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    port: int, emails: int, rate: float, baseline_s: float = 3.0
) -> dict[str, object]:
    big = chat_body(" ".join(f"user{i}@example.com" for i in range(emails)))  # 150k: 3.2 MB
    small = chat_body("Please summarise the notes below. " * 30 + "Reply to ann@example.org.")
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.max_send_message_length", 8 << 20),
            ("grpc.max_receive_message_length", 8 << 20),
        ],
    ) as ch:
        from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg

        stub = epg.ExternalProcessorStub(ch)
        for i in range(20):  # warm: connections, caches, the first small decisions
            await one(stub, small, "small", f"warm-{i}")
        done = asyncio.Event()
        window: list[float] = []  # [start, end] of the big request
        during: list[float] = []  # small requests due while the big one was in the sidecar
        pending: set[asyncio.Task[None]] = set()
        failed: list[int] = []

        async def small_one(due: float, i: int) -> None:
            try:
                seconds, _ = await one(stub, small, "small", f"s-{i}")
            except grpc.aio.AioRpcError:
                failed.append(i)
                return
            # From when it was due, not when it went out: a stall is not hidden by the requests
            # it delays. One stalled behind the big request ends after it: it counts too.
            latency = time.perf_counter() - due if due else seconds
            if window and window[0] <= due and (len(window) == 1 or due <= window[1]):
                during.append(latency)

        async def tenant() -> None:
            # Open loop: requests go out at a fixed rate whatever the answers do.
            start, i = time.perf_counter(), 0
            while not done.is_set():
                due = start + i / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                while len(pending) >= MAX_PENDING:  # gRPC's client gives up on more streams
                    await asyncio.sleep(0.01)
                task = asyncio.create_task(small_one(due, i))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1

        sender = asyncio.create_task(tenant())
        await asyncio.sleep(0.5)
        window.append(time.perf_counter())
        if emails:
            big_s, big_outcome = await one(stub, big, "big", "big-1")
        else:  # the baseline: the same small traffic for as long, without a large body
            await asyncio.sleep(baseline_s)
            big_s, big_outcome = baseline_s, "-"
        window.append(time.perf_counter())
        done.set()
        await sender
        await asyncio.gather(*pending)
    return {
        "body_mb": len(big) / 1e6,
        "big_s": big_s,
        "big": big_outcome,
        "n": len(during),
        "failed": len(failed),
        "p50_ms": 1e3 * statistics.median(during) if during else float("nan"),
        "p99_ms": 1e3 * pct(during, 0.99) if during else float("nan"),
        "max_ms": 1e3 * max(during) if during else float("nan"),
    }


async def loop_lag(emails: int, workers: int, work_timeout: float) -> dict[str, float]:
    """The sidecar's own event-loop lag (in process) before and while the big body is decided."""
    from tests.integration.helpers import running_sidecar

    big = chat_body(" ".join(f"user{i}@example.com" for i in range(emails)))
    options = [
        ("grpc.max_send_message_length", 8 << 20),
        ("grpc.max_receive_message_length", 8 << 20),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        async with running_sidecar(
            Path(tmp), POLICIES, channel_options=options, offload_workers=workers,
            offload_warm=True, work_timeout_s=work_timeout, message_timeout_s=300.0,
        ) as server:  # fmt: skip
            await asyncio.sleep(2)  # the worker started and compiled the policies
            lags: list[float] = []
            stop = asyncio.Event()

            async def tick() -> None:
                while not stop.is_set():
                    t = time.perf_counter()
                    await asyncio.sleep(0.001)
                    lags.append(time.perf_counter() - t - 0.001)

            ticker = asyncio.create_task(tick())
            await asyncio.sleep(1)
            before, lags[:] = list(lags), []
            await one(server.stub, big, "big", "big-lag")
            stop.set()
            await ticker
    return {
        "before_p99": 1e3 * pct(before, 0.99),
        "during_p50": 1e3 * statistics.median(lags),
        "during_p99": 1e3 * pct(lags, 0.99),
        "during_max": 1e3 * max(lags),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--emails", type=int, action="append", help="repeatable; default 15000, 150000"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="small requests per second")
    parser.add_argument("--work-timeout", default="300", help="seconds (so the big one finishes)")
    parser.add_argument(
        "--skip-loop", action="store_true", help="only the worker configuration (and baseline)"
    )
    args = parser.parse_args()
    sizes = args.emails or [15000, 150000]
    configs = {
        "in the loop (--offload-workers 0)": ["--offload-workers", "0"],
        "worker process (default)": [],
    }
    if args.skip_loop:
        del configs["in the loop (--offload-workers 0)"]
    runs: list[tuple[int, str, list[str]]] = [(0, "no large body (baseline)", [])]
    runs += [(n, name, extra) for n in sizes for name, extra in configs.items()]
    print(f"{'configuration':<36} {'emails':>7} {'MB':>5} {'big s':>7} {'big':>22} "
          f"{'small n':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'failed':>6}")  # fmt: skip
    for emails, name, extra in runs:
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            flags = [*extra, "--work-timeout", args.work_timeout, "--work-budget", "0"]
            with Sidecar(Path(tmp), port, flags):
                r = asyncio.run(measure(port, emails, args.rate))
        print(f"{name:<36} {emails:>7} {r['body_mb']:>5.1f} {r['big_s']:>7.2f} "
              f"{r['big']:>22} {r['n']:>7} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
              f"{r['max_ms']:>7.1f} {r['failed']:>6}", flush=True)  # fmt: skip
    print("\nthe sidecar's event-loop lag (1 ms ticker in its process), ms")
    print(f"{'configuration':<36} {'emails':>7} {'before p99':>10} {'during p50':>10} "
          f"{'p99':>7} {'max':>7}")  # fmt: skip
    for emails in sizes:
        for name, extra in configs.items():
            workers = 0 if extra else 1
            lag = asyncio.run(loop_lag(emails, workers, float(args.work_timeout)))
            print(f"{name:<36} {emails:>7} {lag['before_p99']:>10.1f} {lag['during_p50']:>10.2f} "
                  f"{lag['during_p99']:>7.1f} {lag['during_max']:>7.1f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
