"""``serve --workers N``: N sidecar processes on one port, for more than one core.

gRPC binds with SO_REUSEPORT on Linux, so the kernel spreads Envoy's connections over the
workers: connections, not streams. Each Envoy worker thread holds one HTTP/2 connection to the
sidecar, so an Envoy with ``--concurrency 1`` feeds one worker only (benchmarks/workers.py
shows the split), unless its cluster's ``max_concurrent_streams`` makes it open more.

Each worker is a whole sidecar: its own event loop, its own audit log (a hash chain is one
writer's: ``audit.jsonl`` becomes ``audit-0.jsonl``, ``audit-1.jsonl``, ...), and the shared
state in Redis, which is why more than one worker needs ``--redis`` (in-process counters would
give each worker its own limits). Only worker 0 serves the admin API; metrics, when on, are
served by worker i on the configured port + i (or each on a free port, with port 0).

Redis: per request a worker makes exactly the calls one process makes (the same engine: the
state scripts its rules ask for, one XADD to the decision stream per audit record), so N
workers cost Redis nothing more per request (tests/integration/test_workers.py counts them).
In the background, what one process does on a timer N workers would do N times:
so each worker polls the pushed-policy version every N x ``policy_poll_s`` and sweeps lost
reservations every N x ``reservation_sweep_s``, and together they poll and sweep as often as one
process. Announced policy changes still reach every worker at once (each has its pub/sub
subscription, re-read after every reconnection); only a lost announcement waits longer for the
poll. What stays per worker: the subscription's keep-alive PING (every 5 s while idle) and the
connections of each worker's own pool (each opened once, with redis-py's CLIENT SETINFO).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from . import eventloop
from .logformat import LogFormat, configure, configured_format
from .server import ServerConfig, serve

log = logging.getLogger(__name__)


class WorkersError(ValueError):
    pass


def worker_config(config: ServerConfig, index: int, workers: int = 1) -> ServerConfig:
    """The configuration of worker ``index`` of ``workers``."""
    changes: dict[str, Any] = {
        "policy_poll_s": config.policy_poll_s * workers,
        "reservation_sweep_s": config.reservation_sweep_s * workers,
    }
    if config.audit_log and config.audit_log != "-":  # "-": every worker on stdout
        path = Path(config.audit_log)
        changes["audit_log"] = str(path.with_name(f"{path.stem}-{index}{path.suffix}"))
    names = {f.name for f in fields(config)}
    if "admin_listen" in names and index > 0:
        changes["admin_listen"] = None
    metrics = getattr(config, "metrics_listen", None)
    if metrics and index > 0:
        host, _, port = metrics.rpartition(":")
        if int(port):  # port 0: every worker picks a free port of its own
            changes["metrics_listen"] = f"{host}:{int(port) + index}"
    return replace(config, **changes)


def _worker(config: ServerConfig, level: int, fmt: LogFormat) -> None:
    configure(level, fmt, worker=multiprocessing.current_process().name)
    eventloop.run(serve(config), config.event_loop, config.transport)


def run(config: ServerConfig, workers: int) -> int:
    """Run ``workers`` sidecars until SIGTERM/SIGINT; the exit code is the worst of theirs."""
    if workers > 1 and not config.redis:
        raise WorkersError(
            "--workers above 1 needs --redis: every worker must see the same "
            "limits, budgets, approvals and breakers"
        )
    if config.listen.endswith(":0"):
        raise WorkersError("--workers above 1 needs a fixed --listen port")
    ctx = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    procs = [
        ctx.Process(
            target=_worker,
            args=(worker_config(config, i, workers), level, configured_format()),
            name=f"worker-{i}",
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()

    def stop(_signum: int, _frame: object) -> None:
        # Each worker drains its streams and flushes its audit log on SIGTERM.
        for p in procs:
            if p.is_alive():
                p.terminate()

    def reopen(_signum: int, _frame: object) -> None:
        # logrotate signals the process it knows: each worker reopens its own audit log.
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reopen)
    for p in procs:
        p.join()
    return max((p.exitcode or 0) for p in procs)
