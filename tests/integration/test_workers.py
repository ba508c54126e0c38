"""`serve --workers N`: several processes on one port, one audit chain each, shared Redis."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg

from policy_extproc.audit.chain import verify
from tests.envoy_harness import free_port
from tests.integration.helpers import (
    chat_body,
    full_exchange,
    full_request,
    run_exchange,
    write_policies,
)

EXE = str(Path(sys.executable).parent / "policy-extproc")
POLICY = """
policy_name: base
org: acme
rules:
  - {type: rate_limit, per: user, requests: 1000, window: minute}
"""


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("workers did not listen")


@pytest.mark.parametrize("transport", ["grpc", "h2"])  # both bind with SO_REUSEPORT
def test_workers_share_the_port_and_each_keeps_its_chain(
    tmp_path: Path, redis_url: str, transport: str
) -> None:
    write_policies(tmp_path / "policies", POLICY)
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    proc = subprocess.Popen(
        [
            EXE,
            "serve",
            "--policies",
            str(tmp_path / "policies"),
            "--listen",
            f"127.0.0.1:{port}",
            "--audit-log",
            str(audit),
            "--redis",
            redis_url,
            "--admin-listen",
            "off",  # its default port is fixed: another run on this machine may hold it
            "--workers",
            "2",
            "--transport",
            transport,
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_port(port, proc)
        time.sleep(1.0)  # the second worker binds a moment after the first

        async def drive() -> int:
            sent = 0
            for i in range(12):  # a connection each: the kernel spreads them over the workers
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = epg.ExternalProcessorStub(channel)
                    body = chat_body("hello")
                    await run_exchange(
                        stub, full_request(body, request_id=f"w-{i}", headers={"x-user-id": "u1"})
                    )
                    sent += 1
            return sent

        import asyncio

        sent = asyncio.run(drive())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    logs = sorted(tmp_path.glob("audit-*.jsonl"))
    assert [p.name for p in logs] == ["audit-0.jsonl", "audit-1.jsonl"]
    total = 0
    for log_file in logs:
        result = verify(log_file)
        assert result.ok, result.message
        total += result.lines
    assert total == sent


def test_each_worker_gets_its_own_audit_log_and_metrics_port() -> None:
    from policy_extproc.server import ServerConfig
    from policy_extproc.workers import worker_config

    base = ServerConfig(
        policies=("p",),
        audit_log="/var/log/audit.jsonl",
        metrics_listen="0.0.0.0:9090",
        admin_listen="127.0.0.1:50052",
    )
    configs = [worker_config(base, i) for i in range(3)]
    assert [c.audit_log for c in configs] == [f"/var/log/audit-{i}.jsonl" for i in range(3)]
    assert [c.metrics_listen for c in configs] == ["0.0.0.0:9090", "0.0.0.0:9091", "0.0.0.0:9092"]
    assert [c.admin_listen for c in configs] == ["127.0.0.1:50052", None, None]
    # Port 0: each worker binds a free port of its own, never "port 1", "port 2".
    free = replace(base, metrics_listen="127.0.0.1:0")
    assert {worker_config(free, i).metrics_listen for i in range(3)} == {"127.0.0.1:0"}


def test_n_workers_poll_and_sweep_as_often_as_one_process() -> None:
    from policy_extproc.server import ServerConfig
    from policy_extproc.workers import worker_config

    base = ServerConfig(policies=("p",), policy_poll_s=5.0, reservation_sweep_s=30.0)
    one = worker_config(base, 0)  # one process: as configured
    assert (one.policy_poll_s, one.reservation_sweep_s) == (5.0, 30.0)
    # Three workers, each every 15 s (90 s): together once per 5 s (30 s), as one process.
    three = {
        (c.policy_poll_s, c.reservation_sweep_s)
        for c in (worker_config(base, i, 3) for i in range(3))
    }
    assert three == {(15.0, 90.0)}


# Commands that are not the request path: connection set-up, the policy version poll and the
# pub/sub keep-alive (timers, spread over the workers), script loading on first use, our INFO.
_NOT_PER_REQUEST = ("client", "hello", "get", "ping", "subscribe", "script", "info", "config")


def _request_commands(client: object, stats: dict[str, dict[str, int]]) -> dict[str, int]:
    counts = {
        name.removeprefix("cmdstat_"): s["calls"]
        - s.get("failed_calls", 0)
        - s.get("rejected_calls", 0)
        for name, s in stats.items()
        if not name.removeprefix("cmdstat_").startswith(_NOT_PER_REQUEST)
    }
    # Each worker re-reads the pushed policies once it has subscribed (policies_read.lua: one
    # EVALSHA, one HGETALL in it), which may come after the stats were reset; nothing else this
    # policy runs reads a whole hash, so that read is taken out by its HGETALL.
    counts["evalsha"] = counts.get("evalsha", 0) - counts.pop("hgetall", 0)
    return counts


def _serve_and_count(tmp_path: Path, redis_url: str, workers: int, requests: int) -> dict:
    import asyncio

    import redis

    write_policies(tmp_path / "policies", POLICY)
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    errors = tmp_path / "stderr.log"
    argv = [EXE, "serve", "--policies", str(tmp_path / "policies"), "--listen",
            f"127.0.0.1:{port}", "--audit-log", str(audit), "--redis", redis_url,
            "--admin-listen", "off", "--workers", str(workers), "--log-level", "info"]  # fmt: skip
    with errors.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while errors.read_text().count("serving on") < workers:  # every worker listens
            assert proc.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, errors.read_text()
            time.sleep(0.05)
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.config_resetstat()

        async def drive() -> None:
            for i in range(requests):  # a connection each: the kernel spreads them
                # A channel's own subchannel pool: never the connection of the channel before.
                options = [("grpc.use_local_subchannel_pool", 1)]
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options) as channel:
                    stub = epg.ExternalProcessorStub(channel)
                    messages = full_exchange(
                        chat_body("hello"),
                        response=b'{"choices":[],"usage":{"prompt_tokens":3,'
                        b'"completion_tokens":2,"total_tokens":5}}',
                        request_id=f"c-{workers}-{i}",
                        headers={"x-user-id": "u1"},
                    )
                    await run_exchange(stub, messages)

        asyncio.run(drive())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # every worker flushed its decision stream on the way out
        counts = _request_commands(client, client.info("commandstats"))
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    lines = [len(p.read_text().splitlines()) for p in sorted(tmp_path.glob("audit*.jsonl"))]
    return {"commands": counts, "lines": lines}


def test_n_workers_make_no_more_redis_calls_per_request_than_one(
    tmp_path: Path, redis_url: str
) -> None:
    requests = 24
    one = _serve_and_count(tmp_path / "one", redis_url, 1, requests)
    two = _serve_and_count(tmp_path / "two", redis_url, 2, requests)
    records = 2 * requests  # a request record and a response record each
    assert one["lines"] == [records]
    # Both workers served (24 connections landing on one of two: a chance of 2 in 16 million).
    assert len(two["lines"]) == 2 and min(two["lines"]) > 0 and sum(two["lines"]) == records
    # The request path did talk to Redis (the rate limit's admit; the decision stream's XADD).
    assert one["commands"].get("evalsha", 0) >= requests, one
    assert one["commands"].get("xadd", 0) == records, one
    assert two["commands"] == one["commands"], (one, two)
