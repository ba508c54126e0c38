"""End-to-end latency through a real Envoy: what the ext_proc sidecar adds to each request.

Starts a mock provider, the sidecars to compare, one Envoy without the ext_proc filter (the
baseline) and one Envoy with it per sidecar, all from the same template. Then, in interleaved
rounds (baseline, A, B, ..., baseline, A, B, ...: a machine that gets busier or quieter during
the run shifts every configuration alike), each target gets an open loop: requests sent at a
fixed rate whatever the answers do, latency measured from each request's scheduled send time, so
a stall is not hidden by the requests it delays. The configurations:

- ``passthrough``: the do-nothing ext_proc server of tests/envoy_harness.py (Envoy's ext_proc
  round trips and a minimal Python gRPC server alone);
- ``passthrough-h2``: the same server on the lean HTTP/2 transport (policy_extproc.transport);
- ``support``: ``policy-extproc serve`` with examples/policies, team support (the
  organisation's PII rule guards the answer too: four ext_proc messages per request);
- ``ml``: the same sidecar, team ml (that, and a budget reading the answer's usage).

Per configuration it prints the added p50 and p99 (configuration minus the baseline of the same
round) as the median of the rounds with their range, and the CPU time per request of the sidecar
process (and its children) and of its Envoy. ``--closed`` adds a closed loop (C connections
back to back) per round for the maximum throughput. Prints figures; asserts nothing. Usage:

    .venv/bin/python benchmarks/e2e.py [--rate 300] [--duration 5] [--rounds 3] [--alt-cmd CMD]
        [--configs passthrough,support,ml] [--closed] [--concurrency 16] [--stream]
        [--sidecar-cmd 'policy-extproc serve --policies examples/policies --listen {listen}']
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import (
    HEADER,
    EnvoyProcess,
    ManagedProcess,
    MockProviderProcess,
    Result,
    added,
    chat_request,
    closed_loop,
    cpu_seconds,
    envoy_for,
    open_loop,
    print_closed,
    spread,
    start_sidecar,
)

TEAMS = {
    "passthrough": "ml",
    "passthrough-h2": "ml",
    "support": "support",
    "ml": "ml",
    "support@alt": "support",
    "ml@alt": "ml",
}


@dataclass
class Target:
    """One configuration under test: its Envoy, the sidecar behind it, and its figures."""

    name: str
    envoy: EnvoyProcess
    sidecar: ManagedProcess | None
    team: str
    runs: list[Result] = field(default_factory=list)
    closed: list[Result] = field(default_factory=list)
    sidecar_ms: list[float] = field(default_factory=list)  # CPU ms per request, per round
    envoy_ms: list[float] = field(default_factory=list)


async def run_round(targets: list[Target], args: argparse.Namespace, n: int) -> None:
    """One round: every target in turn, open loop (and closed loop with --closed)."""
    for t in targets:
        raw = chat_request(t.envoy.port, args.prompt_chars, t.team, stream=args.stream)
        await closed_loop("127.0.0.1", t.envoy.port, raw, 4, args.warmup)
        cpu0 = cpu_seconds(t.sidecar) if t.sidecar else 0.0
        env0 = cpu_seconds(t.envoy)
        res = await open_loop("127.0.0.1", t.envoy.port, raw, args.rate, args.duration)
        if res.sent:
            if t.sidecar:
                t.sidecar_ms.append((cpu_seconds(t.sidecar) - cpu0) * 1000 / res.sent)
            t.envoy_ms.append((cpu_seconds(t.envoy) - env0) * 1000 / res.sent)
        t.runs.append(res)
        codes = " ".join(f"{c}={k}" for c, k in res.codes.most_common())
        print(f"{res.row(t.name)}   round {n} {codes}", flush=True)
        if args.closed:
            c = await closed_loop("127.0.0.1", t.envoy.port, raw, args.concurrency, args.duration)
            t.closed.append(c)
            print(f"{c.row(t.name)}   round {n}", flush=True)


def summary(targets: list[Target]) -> None:
    base = targets[0]
    print(
        f"\n{'configuration':<14}{'added p50 ms':>24}{'added p99 ms':>26}"
        f"{'sidecar CPU ms/req':>24}{'Envoy CPU ms/req':>24}{'errors':>8}"
    )
    for t in targets:
        errors = sum(r.errors for r in t.runs)
        p50, p99 = ("-", "-") if t is base else added(base.runs, t.runs)
        print(
            f"{t.name:<14}{p50:>24}{p99:>26}"
            f"{spread(t.sidecar_ms):>24}{spread(t.envoy_ms):>24}{errors:>8}"
        )
    print_closed([(t.name, t.closed) for t in targets], 14)
    p = [f"{t.name} p50 {spread(r.percentile(0.5) for r in t.runs)}" for t in targets]
    print("\nabsolute latency, ms: " + "; ".join(p))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=300.0, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per run")
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: connections")
    parser.add_argument("--closed", action="store_true", help="add a closed loop per round")
    parser.add_argument("--prompt-chars", type=int, default=400, help="size of the user prompt")
    parser.add_argument(
        "--stream", action="store_true", help="ask for streamed (SSE) answers, read to the end"
    )
    parser.add_argument(
        "--configs",
        default="passthrough,support,ml",
        help="comma-separated, in order: passthrough, support, ml (and support@alt, ml@alt: "
        "the same requests to the sidecar of --alt-cmd)",
    )
    parser.add_argument(
        "--alt-cmd", help="a second real sidecar to compare (e.g. the same with another flag)"
    )
    parser.add_argument(
        "--sidecar-cmd", help="command starting the real sidecar; {listen} and {audit} filled in"
    )
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in TEAMS]
    if unknown:
        parser.error(f"unknown configurations: {unknown}")

    started: list[ManagedProcess] = []
    try:
        mock = MockProviderProcess("openai").start()
        started.append(mock)
        baseline = envoy_for(mock.port, None)
        started.append(baseline)
        targets = [Target("envoy", baseline, None, "ml")]
        real: dict[str, ManagedProcess] = {}
        for name in configs:
            if name in ("passthrough", "passthrough-h2"):
                sidecar = start_sidecar(name)
            else:
                which = "alt" if name.endswith("@alt") else "main"
                if which not in real:
                    cmd = args.alt_cmd if which == "alt" else args.sidecar_cmd
                    if which == "alt" and not cmd:
                        parser.error(f"{name} needs --alt-cmd")
                    real[which] = start_sidecar(cmd)
                sidecar = real[which]
            if sidecar not in started:
                started.append(sidecar)
            env = envoy_for(mock.port, sidecar.port)
            started.append(env)
            targets.append(Target(name, env, sidecar, TEAMS[name]))
        print(
            f"sidecar: {args.sidecar_cmd or 'policy-extproc serve, examples/policies'}\n"
            + (f"alt: {args.alt_cmd}\n" if args.alt_cmd else "")
            + f"cores: {os.cpu_count()}, load average at start: "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
            f"prompt: {args.prompt_chars} chars{', streamed answers' if args.stream else ''}, "
            f"{args.rate:g} req/s open loop, "
            f"{args.duration:g} s per run, {args.rounds} interleaved rounds, "
            f"Envoy --concurrency 1\n\n{HEADER}",
            flush=True,
        )

        async def run() -> None:
            for n in range(1, args.rounds + 1):
                await run_round(targets, args, n)

        asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in reversed(started):
            with contextlib.suppress(Exception):
                proc.stop()
    summary(targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
