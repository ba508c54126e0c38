"""Overload through a real Envoy: what admission control does at 0.5x, 1x and 2x the
sustainable rate.

Starts a mock provider and two real sidecars (examples/policies), each behind its own Envoy: one
with admission control (``serve --max-inflight``, 64 by default) and one without
(``--max-inflight 0``). The sustainable rate is ``--rate`` if given, else found first: a closed
loop (``--concurrency`` connections back to back) against the sidecar without admission control
gives its maximum throughput, and the sustainable rate is ``--sustainable-share`` (0.8) of it.
Then, in interleaved rounds (for each multiple: with, without, with, without, ...), an open loop
at 0.5x, 1x and 2x that rate, and for each run:

- admitted: answered 200, with the p50 and p99 of their latency from the scheduled send time;
- shed: the sidecar's 503 ``overloaded``, answered at once;
- gave up: Envoy stopped waiting for the sidecar (``message_timeout``, 0.5 s): the shipped
  configuration answers that 503 ``policy_timeout`` (Envoy's bare 504 without it), counted with
  any 504 and ``policy_unavailable``;
- timeouts: no answer within 5 s (the client gave up), and connection errors.

The load generator runs on the same machine as Envoy and the sidecars: on a small machine it
takes CPU from them, and at 2x it may not keep the schedule (the "sent/s" column says what it
managed). Prints figures; asserts nothing; never run by ``make test``. Usage:

    .venv/bin/python benchmarks/overload.py [--rate R] [--duration 5] [--rounds 2]
        [--max-inflight 64] [--max-queue-age 0] [--team support]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import (
    DEFAULT_SIDECAR,
    ManagedProcess,
    MockProviderProcess,
    Result,
    chat_request,
    closed_loop,
    envoy_for,
    open_loop,
    spread,
    start_sidecar,
)

MULTIPLES = (0.5, 1.0, 2.0)


def shed(res: Result) -> int:
    return res.codes["overloaded"]


def gave_up(res: Result) -> int:
    return res.codes["policy_timeout"] + res.codes["policy_unavailable"] + res.statuses[504]


def row(name: str, multiple: float, res: Result) -> str:
    other = res.errors - res.failed - shed(res) - gave_up(res)
    return (
        f"{name:<24}{multiple:>5g}x{res.sent / res.elapsed:>9.0f}{res.statuses[200]:>9}"
        f"{res.percentile(0.5):>9.1f}{res.percentile(0.99):>9.1f}{shed(res):>8}"
        f"{gave_up(res):>9}{res.failed:>10}{other:>7}"
    )


HEADER = (
    f"{'sidecar':<24}{'load':>6}{'sent/s':>9}{'admitted':>9}{'p50 ms':>9}{'p99 ms':>9}"
    f"{'shed':>8}{'gave up':>9}{'timeouts':>10}{'other':>7}"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=0.0, help="the sustainable rate (req/s)")
    parser.add_argument("--sustainable-share", type=float, default=0.8)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: connections")
    parser.add_argument("--prompt-chars", type=int, default=400)
    parser.add_argument("--team", default="support", help="team of the requests: support or ml")
    parser.add_argument("--max-inflight", type=int, default=64)
    parser.add_argument("--max-queue-age", type=float, default=0.0)
    args = parser.parse_args(argv)

    started: list[ManagedProcess] = []
    results: dict[tuple[str, float], list[Result]] = {}
    try:
        mock = MockProviderProcess("openai").start()
        started.append(mock)
        admitting = (
            f"{DEFAULT_SIDECAR} --max-inflight {args.max_inflight} "
            f"--max-queue-age {args.max_queue_age}"
        )
        configs = {
            f"admission {args.max_inflight}"
            + (f", age {args.max_queue_age:g}s" if args.max_queue_age else ""): admitting,
            "no admission": f"{DEFAULT_SIDECAR} --max-inflight 0",
        }
        envoys = {}
        for name, cmd in configs.items():
            sidecar = start_sidecar(cmd)
            started.append(sidecar)
            env = envoy_for(mock.port, sidecar.port)
            started.append(env)
            envoys[name] = env

        async def run() -> None:
            rate = args.rate
            raws = {
                n: chat_request(e.port, args.prompt_chars, args.team) for n, e in envoys.items()
            }
            for name, env in envoys.items():  # warm-up
                await closed_loop("127.0.0.1", env.port, raws[name], 4, 1.0)
            if not rate:
                name = "no admission"
                c = await closed_loop(
                    "127.0.0.1", envoys[name].port, raws[name], args.concurrency, args.duration
                )
                top = len(c.latencies) / c.elapsed
                rate = round(top * args.sustainable_share)
                print(
                    f"closed loop c={args.concurrency} without admission: {top:.0f} req/s; "
                    f"sustainable rate taken as {args.sustainable_share:g} of it: {rate} req/s"
                )
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            print(
                f"cores: {os.cpu_count()}, load average: {load}\n"
                f"team {args.team}, prompt {args.prompt_chars} chars, {args.duration:g} s per run, "
                f"{args.rounds} interleaved rounds, Envoy --concurrency 1, message_timeout 0.5 s"
                f"\n\n{HEADER}",
                flush=True,
            )
            for multiple in MULTIPLES:
                for _ in range(args.rounds):
                    for name, env in envoys.items():
                        res = await open_loop(
                            "127.0.0.1", env.port, raws[name], rate * multiple, args.duration
                        )
                        results.setdefault((name, multiple), []).append(res)
                        print(row(name, multiple, res), flush=True)

        asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in reversed(started):
            with contextlib.suppress(Exception):
                proc.stop()

    print("\nmedian [min..max] of rounds:")
    print(
        f"{'sidecar':<24}{'load':>6}{'admitted p50 ms':>24}{'admitted p99 ms':>26}"
        f"{'shed':>10}{'gave up':>9}{'timeouts':>10}"
    )
    for (name, multiple), runs in results.items():
        print(
            f"{name:<24}{multiple:>5g}x{spread(r.percentile(0.5) for r in runs):>24}"
            f"{spread(r.percentile(0.99) for r in runs):>26}"
            f"{sum(shed(r) for r in runs):>10}{sum(gave_up(r) for r in runs):>9}"
            f"{sum(r.failed for r in runs):>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
