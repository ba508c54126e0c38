"""The sidecar under faults: Redis down at start, a full audit disk, logrotate, a cut stream.

Readiness is read through gRPC health's Watch stream (an event, not a poll on time); limits are
only there to turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from policy_extproc.audit.verify import verify_directory
from policy_extproc.server import EXT_PROC, LIVENESS
from tests.integration.helpers import (
    Exchange,
    chat_body,
    full_request,
    immediate_json,
    metadata,
    request_body,
    request_headers,
    response_headers,
    run_exchange,
    running_sidecar,
    write_policies,
)
from tests.integration.test_server_lifecycle import _command, serve  # noqa: F401 (fixture)
from tests.redis_server import RedisServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GUARD_S = 60.0

LIMITED = """
policy_name: acme_base
org: acme
rules:
  - type: rate_limit
    id: rl
    per: [user]
    requests: 1
    window: hour
    on_error: closed
"""

PLAIN = """
policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
    action: block
"""


async def _until(channel: grpc.aio.Channel, status: int, service: str = "") -> None:
    """Wait until health reports ``status`` for ``service`` (Watch sends every change)."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=service)
    )
    try:
        async with asyncio.timeout(GUARD_S):
            while (await watch.read()).status != status:
                pass
    finally:
        watch.cancel()


async def _status(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return int(resp.status)


def _user(user: str, request_id: str) -> list[object]:
    body = chat_body("hello")
    return full_request(body, request_id=request_id, headers={"x-user-id": user})


async def test_redis_down_at_start_serves_per_on_error_then_becomes_ready_and_shares_state(
    tmp_path: Path,
) -> None:
    server = RedisServer()  # not started: its port is free, nothing answers
    try:
        async with running_sidecar(tmp_path, LIMITED, redis=server.url) as running:
            channel = running.channel
            assert await _status(channel) == NOT_SERVING
            assert await _status(channel, EXT_PROC) == NOT_SERVING
            assert await _status(channel, LIVENESS) == SERVING  # not restarted meanwhile
            # Requests are answered, and on_error: closed refuses them (503, audited).
            answers = await run_exchange(running.stub, _user("alice", "r-down"))  # type: ignore[arg-type]
            assert immediate_json(answers[-1])["error"]["code"] == "state_unavailable"
            assert running.sink.records[-1].error_code == "state_unavailable"
            server.start()
            await _until(channel, SERVING)
            answers = await run_exchange(running.stub, _user("alice", "r-up-1"))  # type: ignore[arg-type]
            assert metadata(answers[-1])["decision"] == "allow"
            answers = await run_exchange(running.stub, _user("alice", "r-up-2"))  # type: ignore[arg-type]
            assert immediate_json(answers[-1])["error"]["code"] == "rate_limited"
            # The limiter lives in Redis, where every replica finds it.
            with redis.Redis.from_url(server.url) as client:
                assert client.keys("pe:{acme}:rl:*")
    finally:
        server.close()


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: writes there fail with ENOSPC through a real file descriptor."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not root?): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                os.write(fd, b"\0" * 512)
    finally:
        os.close(fd)
    return filler


async def test_a_full_audit_disk_turns_readiness_off_logs_once_and_back_on(
    tmp_path: Path, full_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audit = full_disk / "audit.jsonl"
    async with running_sidecar(
        tmp_path, PLAIN, audit_log=str(audit), fsync_interval_s=0
    ) as running:
        channel = running.channel
        assert await _status(channel) == SERVING
        filler = _fill(full_disk)
        with caplog.at_level(logging.ERROR):
            for i in range(20):
                answers = await run_exchange(
                    running.stub,  # type: ignore[arg-type]
                    full_request(chat_body("hello"), request_id=f"r-full-{i}"),
                )
                assert immediate_json(answers[-1])["error"]["code"] == "audit_unavailable"
            await _until(channel, NOT_SERVING)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert await _status(channel, LIVENESS) == SERVING
        filler.unlink()  # room again: the probe writes, readiness comes back
        await _until(channel, SERVING)
        answers = await run_exchange(
            running.stub,  # type: ignore[arg-type]
            full_request(chat_body("hello"), request_id="r-after"),
        )
        assert metadata(answers[-1])["decision"] == "allow"
    lines = [json.loads(line) for line in audit.read_bytes().splitlines()]
    resumed = [line for line in lines if line.get("event") == "audit_resumed"]
    assert resumed and resumed[0]["refused"] >= 20
    [chain] = verify_directory(full_disk)
    assert chain.result.ok, chain.result.message


@pytest.mark.parametrize("transport", ["grpc", "h2"])
async def test_a_stream_cut_by_shutdown_gets_a_response_record(
    tmp_path: Path, transport: str
) -> None:
    async with running_sidecar(tmp_path, PLAIN, grace_s=0.0, transport=transport) as running:
        ex = Exchange(epg.ExternalProcessorStub(running.channel))
        body = chat_body("hello")
        await ex.send(request_headers(body=body, request_id="r-cut"))
        await ex.send(request_body(body))
        await ex.send(response_headers())  # the answer starts streaming, then the pod stops
        await running.stop()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await ex.call.read()
    records = [(r.request_id, r.phase, r.error_code) for r in running.sink.records]
    assert records == [("r-cut", "request", None), ("r-cut", "response", "stream_cut_by_shutdown")]


async def test_sighup_after_logrotate_rename_writes_a_new_file_and_the_chain_verifies(
    tmp_path: Path,
    serve: object,  # noqa: F811 (the fixture imported above)
) -> None:
    policy_dir = tmp_path / "p"
    write_policies(policy_dir, PLAIN)
    sp = await serve("--policies", str(policy_dir), "--grace", "3")  # type: ignore[operator]
    port = int((await sp.wait_line(r"serving on 127\.0\.0\.1:(\d+)")).group(1))
    audit = tmp_path / "audit.jsonl"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = epg.ExternalProcessorStub(channel)
        await run_exchange(stub, full_request(chat_body("one"), request_id="r-1"))
        audit.rename(tmp_path / "audit.jsonl.1")  # logrotate's rename, then its postrotate:
        sp.proc.send_signal(signal.SIGHUP)
        await sp.wait_line(r"audit log .* reopened")
        await run_exchange(stub, full_request(chat_body("two"), request_id="r-2"))
    sp.proc.send_signal(signal.SIGTERM)
    assert await sp.exit_code() == 0, sp.output
    assert [json.loads(line)["request_id"] for line in audit.read_bytes().splitlines()] == ["r-2"]
    verify = await asyncio.create_subprocess_exec(
        *_command(), "audit", "verify", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await verify.communicate()
    assert verify.returncode == 0, out.decode()
    assert "2 records in 2 files" in out.decode()
