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
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg

from policy_extproc.audit.chain import verify
from tests.envoy_harness import free_port
from tests.integration.helpers import chat_body, full_request, run_exchange, write_policies

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


def test_workers_share_the_port_and_each_keeps_its_chain(tmp_path: Path, redis_url: str) -> None:
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
