"""``serve --workers N`` through a real Envoy: what one to N workers give, pinned to cpu sets.

Starts a mock provider, a redis-server (every configuration uses ``--redis``: more than one
worker needs it, and one worker with it is the fair base), one Envoy without the ext_proc filter
(the baseline) and, per configuration, one sidecar (``serve --workers N --redis ...``) with its
own Envoy. A configuration is ``WORKERS@LAYOUT``; a layout is ``ENVOY_CPUS/SIDECAR_CPUS`` (each a
``taskset -c`` list: ``0/1`` puts every Envoy on cpu 0 and the sidecar's workers on cpu 1) or
``free`` (nothing pinned). The load generator (this process) and Redis are pinned to
``--client-cpus`` when given, else left to the scheduler.

Envoy's ext_proc cluster speaks HTTP/2, and with ``--concurrency 1`` Envoy opens ONE connection
to it: the kernel spreads connections, not streams, over the workers (SO_REUSEPORT), so every
stream lands on one worker. ``--envoy-streams S`` sets the cluster's ``max_concurrent_streams``
to S, so Envoy opens another connection whenever S streams are in flight on each; the per-worker
CPU split (``split``) shows how the load was actually spread.

In interleaved rounds (baseline, every configuration, baseline, ...), each target gets an open
loop at ``--rate`` (latency from each request's scheduled send time) and, with ``--closed``, a
closed loop of ``--concurrency`` connections for the maximum throughput. Per configuration it
prints the median [min..max] of the rounds of: added p50 / p99 (minus the baseline of the same
round), CPU ms per request of the sidecar (all workers and their children), of its Envoy and of
Redis, the workers' CPU split, and the closed-loop req/s; ``uptime`` before and after. Prints
figures; asserts nothing. Usage:

    .venv/bin/python benchmarks/workers.py [--configs 1@0/1,2@0/1,1@free,2@free]
        [--rate 300] [--duration 5] [--rounds 3] [--closed] [--concurrency 16]
        [--team ml] [--envoy-streams S] [--client-cpus 0] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import (
    DEFAULT_SIDECAR,
    HEADER,
    EnvoyPorts,
    EnvoyProcess,
    ManagedProcess,
    MockProviderProcess,
    Result,
    _tree,
    added,
    chat_request,
    closed_loop,
    cpu_seconds,
    open_loop,
    print_closed,
    spread,
    start_sidecar,
)

from tests.envoy_harness import free_port, render_config
from tests.redis_server import RedisServer


@dataclass
class Target:
    """One configuration: its Envoy, its sidecar, and its figures per round."""

    name: str
    envoy: EnvoyProcess
    sidecar: ManagedProcess | None
    runs: list[Result] = field(default_factory=list)
    closed: list[Result] = field(default_factory=list)
    sidecar_ms: list[float] = field(default_factory=list)
    envoy_ms: list[float] = field(default_factory=list)
    redis_ms: list[float] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)


def parse_config(text: str) -> tuple[int, str | None, str | None]:
    """``N@ENVOY/SIDECAR`` or ``N@free``: (workers, Envoy cpus, sidecar cpus)."""
    workers, _, layout = text.partition("@")
    if not workers.isdigit() or int(workers) < 1:
        raise ValueError(f"{text!r}: expected WORKERS@ENVOY_CPUS/SIDECAR_CPUS or WORKERS@free")
    if layout in ("", "free"):
        return int(workers), None, None
    envoy, sep, sidecar = layout.partition("/")
    if not sep or not envoy or not sidecar:
        raise ValueError(f"{text!r}: a layout is ENVOY_CPUS/SIDECAR_CPUS, e.g. 0/1")
    return int(workers), envoy, sidecar


def start_envoy(
    mock: int, extproc: int | None, cpus: str | None, streams: int | None
) -> EnvoyProcess:
    """An Envoy (one worker thread) in front of the mock, pinned to ``cpus`` when given."""
    ports = EnvoyPorts(
        extproc=extproc or free_port(), openai=mock, azure=mock, anthropic=mock, listen=0, admin=0
    )
    config = yaml.safe_load(render_config(ports, ext_proc=extproc is not None))
    if streams:
        for cluster in config["static_resources"]["clusters"]:
            if cluster["name"] == "policy_extproc":
                options = cluster["typed_extension_protocol_options"]
                http = next(iter(options.values()))["explicit_http_config"]
                http["http2_protocol_options"]["max_concurrent_streams"] = streams
    envoy = EnvoyProcess(ports, config_text=yaml.safe_dump(config))
    if cpus:
        envoy.argv = ["taskset", "-c", cpus, *envoy.argv]
    return envoy.start()


def pid_cpu(pid: int | None) -> float:
    """User + system CPU seconds of one process (0 when unknown)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_split(sidecar: ManagedProcess, before: dict[int, float]) -> tuple[dict[int, float], str]:
    """CPU seconds per worker process (its subtree) now, and each one's share since ``before``."""
    if sidecar.proc is None:
        return {}, "-"
    now: dict[int, float] = {}
    with open(f"/proc/{sidecar.proc.pid}/task/{sidecar.proc.pid}/children") as f:
        children = [int(c) for c in f.read().split() if not _tracker(int(c))]
    if not children:  # one worker: the process itself serves
        children = [sidecar.proc.pid]
    for child in children:
        total = 0.0
        for pid in _tree(child) if child != sidecar.proc.pid else [child]:
            with contextlib.suppress(OSError):
                total += pid_cpu(pid)
        now[child] = total
    used = {pid: now[pid] - before.get(pid, 0.0) for pid in now}
    whole = sum(used.values()) or 1.0
    return now, "/".join(f"{100 * used[pid] / whole:.0f}" for pid in sorted(used)) or "-"


def _tracker(pid: int) -> bool:
    """Whether ``pid`` is multiprocessing's resource tracker (a child, but no worker)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()
    except OSError:
        return True


def uptime() -> str:
    """The ``uptime`` line: the machine's load, printed with every figure."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


async def run_round(
    targets: list[Target], redis_pid: int | None, args: argparse.Namespace, n: int
) -> None:
    for t in targets:
        raw = chat_request(t.envoy.port, args.prompt_chars, args.team)
        await closed_loop("127.0.0.1", t.envoy.port, raw, 4, args.warmup)
        side0 = cpu_seconds(t.sidecar) if t.sidecar else 0.0
        env0, red0 = cpu_seconds(t.envoy), pid_cpu(redis_pid)
        split0 = worker_split(t.sidecar, {})[0] if t.sidecar else {}
        res = await open_loop("127.0.0.1", t.envoy.port, raw, args.rate, args.duration)
        if res.sent:
            if t.sidecar:
                t.sidecar_ms.append((cpu_seconds(t.sidecar) - side0) * 1000 / res.sent)
                t.splits.append(worker_split(t.sidecar, split0)[1])
            t.envoy_ms.append((cpu_seconds(t.envoy) - env0) * 1000 / res.sent)
            if redis_pid is not None:
                t.redis_ms.append((pid_cpu(redis_pid) - red0) * 1000 / res.sent)
        t.runs.append(res)
        codes = " ".join(f"{c}={k}" for c, k in res.codes.most_common())
        split = f" split {t.splits[-1]}" if t.sidecar and t.splits else ""
        print(f"{res.row(t.name)}   round {n}{split} {codes}", flush=True)
        if args.closed:
            split0 = worker_split(t.sidecar, {})[0] if t.sidecar else {}
            c = await closed_loop("127.0.0.1", t.envoy.port, raw, args.concurrency, args.duration)
            t.closed.append(c)
            split = f" split {worker_split(t.sidecar, split0)[1]}" if t.sidecar else ""
            print(f"{c.row(t.name)}   round {n}{split}", flush=True)


def summary(targets: list[Target]) -> None:
    base = targets[0]
    print(
        f"\n{'configuration':<16}{'added p50 ms':>22}{'added p99 ms':>24}"
        f"{'sidecar CPU ms/req':>24}{'Envoy CPU ms/req':>22}{'Redis CPU ms/req':>22}"
        f"{'errors':>8}  worker CPU split %"
    )
    for t in targets:
        p50, p99 = ("-", "-") if t is base else added(base.runs, t.runs)
        print(
            f"{t.name:<16}{p50:>22}{p99:>24}{spread(t.sidecar_ms):>24}"
            f"{spread(t.envoy_ms):>22}{spread(t.redis_ms):>22}"
            f"{sum(r.errors for r in t.runs):>8}  {' '.join(t.splits) or '-'}"
        )
    print_closed([(t.name, t.closed) for t in targets], 16)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--configs",
        default="1@0/1,2@0/1,1@free,2@free",
        help="comma-separated WORKERS@ENVOY_CPUS/SIDECAR_CPUS or WORKERS@free",
    )
    parser.add_argument("--rate", type=float, default=300.0, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per run")
    parser.add_argument("--closed", action="store_true", help="add a closed loop per round")
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: connections")
    parser.add_argument("--prompt-chars", type=int, default=400, help="size of the user prompt")
    parser.add_argument(
        "--team", default="ml", help="ml (a budget: Redis admit and reconcile) or support"
    )
    parser.add_argument(
        "--envoy-streams",
        type=int,
        help="max_concurrent_streams of Envoy's "
        "connections to the sidecar (unset: as shipped, one connection)",
    )
    parser.add_argument("--client-cpus", help="taskset -c list for this load generator and Redis")
    parser.add_argument("--redis", help="an existing Redis URL (default: a redis-server here)")
    parser.add_argument(
        "--sidecar-cmd", default=DEFAULT_SIDECAR, help="the sidecar; {listen} and {audit} filled in"
    )
    args = parser.parse_args(argv)
    try:
        configs = [(c, *parse_config(c)) for c in args.configs.split(",") if c.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in _cpus(args.client_cpus)})
    started: list[ManagedProcess] = []
    redis = RedisServer()
    targets: list[Target] = []
    try:
        if not args.redis:
            redis.start()  # inherits this process's affinity
        url = args.redis or redis.url
        redis_pid = None if args.redis else redis._proc.pid  # type: ignore[union-attr]
        mock = MockProviderProcess("openai").start()
        started.append(mock)
        targets.append(Target("envoy", start_envoy(mock.port, None, None, None), None))
        started.append(targets[0].envoy)
        for name, workers, envoy_cpus, sidecar_cpus in configs:
            cmd = f"{args.sidecar_cmd} --redis {url} --workers {workers}"  # no admin API: _load
            if sidecar_cpus:
                cmd = f"taskset -c {sidecar_cpus} {cmd}"
            sidecar = start_sidecar(cmd)
            started.append(sidecar)
            envoy = start_envoy(mock.port, sidecar.port, envoy_cpus, args.envoy_streams)
            started.append(envoy)
            targets.append(Target(name, envoy, sidecar))
        print(
            f"sidecar: {args.sidecar_cmd} --redis ... --workers N (taskset per configuration)\n"
            f"cores: {os.cpu_count()}; client cpus: {args.client_cpus or 'any'}; "
            f"Envoy --concurrency 1 (baseline Envoy unpinned), "
            f"max_concurrent_streams {args.envoy_streams or 'default'}\n"
            f"team {args.team}, prompt {args.prompt_chars} chars, {args.rate:g} req/s open loop, "
            f"{args.duration:g} s per run, {args.rounds} interleaved rounds\n"
            f"uptime: {uptime()}\n\n{HEADER}",
            flush=True,
        )

        async def run() -> None:
            for n in range(1, args.rounds + 1):
                await run_round(targets, redis_pid, args, n)

        asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in reversed(started):
            with contextlib.suppress(Exception):
                proc.stop()
        if redis.running:
            redis.stop()
    summary(targets)
    print(f"\nuptime: {uptime()}")
    return 0


def _cpus(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


if __name__ == "__main__":
    sys.exit(main())
