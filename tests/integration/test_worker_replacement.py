"""A killed worker's replacement is warm before the next request (enforce/work.py, ``_kill``):
once the pool is warmed, the replacement starts at once and compiles the policies in the
background, so the next large body does not pay for the compile within its own time bound
(and, under load, get its worker killed again for it). Real worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pytest

from policy_extproc.enforce.work import WorkerFailed, WorkerPool
from policy_extproc.errors import WorkBudgetExceeded
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import DEFAULT_IDENTITY
from policy_extproc.policy.loader import load_sources
from policy_extproc.policy.model import Secrets
from policy_extproc.sources.catalog import load_catalog

HEADERS = {":path": "/v1/chat/completions", ":method": "POST", "x-org-id": "acme"}
POLICY = """
policy_name: p
org: acme
rules:
  - {type: content_filter, id: alpha, keywords: [alpha]}
  - {type: pii, id: mail, entities: [EMAIL]}
"""
SNAPSHOT = Snapshot(load_sources([("p.yaml", POLICY)]), secrets=Secrets(year=2026))
JUDGE = load_catalog().judge


def job(text: str) -> tuple[Any, ...]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return (HEADERS, None, json.dumps(body).encode(), DEFAULT_IDENTITY, JUDGE)


SMALL = job("alpha beta gamma")
HUGE = job(" ".join(f"user{i}@example.com" for i in range(150_000)))  # seconds of work


class Sends:
    """Counts the policies sent with a request (``WorkerPool._blob``): none to a warm worker."""

    def __init__(self, pool: WorkerPool) -> None:
        self.count = 0
        real = pool._blob

        def counting(snapshot: Snapshot) -> bytes:
            self.count += 1
            return real(snapshot)

        pool._blob = counting  # type: ignore[method-assign]


async def killed_by_the_time_bound(pool: WorkerPool) -> None:
    """One request over the time bound: its worker is killed (a short bound, then the old)."""
    bound, pool.timeout_s = pool.timeout_s, 0.05
    try:
        with pytest.raises(WorkBudgetExceeded):
            await pool.run(SNAPSHOT, HUGE)
    finally:
        pool.timeout_s = bound


async def test_a_worker_killed_by_the_time_bound_is_replaced_warm() -> None:
    pool = WorkerPool(1, 120.0)
    try:
        await pool.warm(SNAPSHOT)
        assert pool.compiled() == {SNAPSHOT.build} and pool.started == 1

        await killed_by_the_time_bound(pool)
        assert pool.killed == 1
        await pool.replaced()

        # Before any request: a second process, started and compiled by itself.
        assert pool.started == 2
        assert pool.compiled() == {SNAPSHOT.build}
        sends = Sends(pool)
        ex = await pool.run(SNAPSHOT, SMALL)
        assert [f.rule for f in ex.findings.fired] == ["alpha"]
        assert sends.count == 0  # the request did not bring the policies: it was warm
        assert pool.started == 2
    finally:
        pool.close()


async def test_a_worker_that_dies_is_replaced_warm() -> None:
    pool = WorkerPool(1, 120.0)
    try:
        await pool.warm(SNAPSHOT)
        (worker,) = pool._idle
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        with pytest.raises(WorkerFailed):
            await pool.run(SNAPSHOT, SMALL)  # finds it dead
        await pool.replaced()
        assert pool.started == 2 and pool.compiled() == {SNAPSHOT.build}
        sends = Sends(pool)
        await pool.run(SNAPSHOT, SMALL)
        assert sends.count == 0
    finally:
        pool.close()


async def test_a_worker_outlives_the_signals_sent_to_the_whole_group() -> None:
    # SIGHUP reopens the sidecar's audit log (logrotate; a closed terminal reaches the group),
    # Ctrl-C reaches the group too: neither may kill a worker, or the next large body fails.
    pool = WorkerPool(1, 120.0)
    try:
        await pool.warm(SNAPSHOT)
        (worker,) = pool._idle
        for sig in (signal.SIGHUP, signal.SIGINT):
            os.kill(worker.process.pid, sig)
        await asyncio.sleep(0.2)
        assert worker.process.poll() is None
        examined = await pool.run(SNAPSHOT, SMALL)
        assert examined is not None and pool.started == 1 and pool.killed == 0
    finally:
        pool.close()


def test_a_starting_worker_is_out_of_reach_of_the_groups_signals() -> None:
    # A closed terminal's SIGHUP reaches the sidecar's process group at once, while a worker
    # may still be importing (before any handler of its own): its group is its own.
    pool = WorkerPool(1, 120.0)
    try:
        worker = pool._spawn()
        assert os.getpgid(worker.process.pid) == worker.process.pid != os.getpgid(0)
    finally:
        worker.process.kill()
        worker.process.wait()
        pool.close()


async def test_the_replacement_compiles_the_snapshot_last_warmed() -> None:
    other = Snapshot(
        load_sources([("p.yaml", POLICY.replace("alpha", "beta"))]), secrets=Secrets(year=2026)
    )
    pool = WorkerPool(1, 120.0)
    try:
        await pool.warm(SNAPSHOT)
        await pool.warm(other)  # a policy change
        await killed_by_the_time_bound(pool)
        await pool.replaced()
        assert pool.compiled() == {other.build}
        ex = await pool.run(other, SMALL)
        assert [f.rule for f in ex.findings.fired] == ["beta"]
    finally:
        pool.close()


async def test_a_lazy_pool_starts_the_replacement_on_next_use() -> None:
    pool = WorkerPool(1, 120.0)  # never warmed: --offload-lazy
    try:
        await pool.run(SNAPSHOT, SMALL)
        await killed_by_the_time_bound(pool)
        await pool.replaced()
        assert pool.started == 1 and pool.compiled() == set()
        await pool.run(SNAPSHOT, SMALL)
        assert pool.started == 2
    finally:
        pool.close()


async def test_requests_wait_for_the_replacement_and_never_exceed_the_pool() -> None:
    pool = WorkerPool(1, 120.0)
    try:
        await pool.warm(SNAPSHOT)
        await killed_by_the_time_bound(pool)
        # Asked for while the replacement compiles: they wait for its slot, no second process.
        results = await asyncio.gather(*(pool.run(SNAPSHOT, SMALL) for _ in range(3)))
        assert all([f.rule for f in ex.findings.fired] == ["alpha"] for ex in results)
        assert pool.started == 2
    finally:
        pool.close()


async def test_closing_while_a_replacement_compiles_leaves_no_process() -> None:
    pool = WorkerPool(1, 120.0)
    spawned: list[Any] = []
    real = pool._spawn

    def recording() -> Any:
        w = real()
        spawned.append(w.process)
        return w

    pool._spawn = recording  # type: ignore[method-assign]
    try:
        await pool.warm(SNAPSHOT)
        await killed_by_the_time_bound(pool)
    finally:
        pool.close()
    await pool.replaced()  # cancelled, or done and stopped
    assert len(spawned) >= 1
    for process in spawned:
        assert process.wait(timeout=30) is not None  # every worker process has exited
