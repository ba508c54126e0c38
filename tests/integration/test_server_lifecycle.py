"""The server's life: health, reflection, hot reload, start-up failure and draining on SIGTERM.

In-process sidecars (port 0) where the server object is enough; a real ``policy-extproc serve``
subprocess where the CLI, signals and exit codes are what is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from policy_extproc.audit.record import AuditRecord
from policy_extproc.audit.sink import RecordingSink
from policy_extproc.errors import PolicyError
from policy_extproc.server import EXT_AUTHZ, EXT_PROC, ServerConfig, Sidecar
from tests.envoy_harness import free_port
from tests.integration.helpers import (
    Exchange,
    Running,
    chat_body,
    full_request,
    immediate_json,
    metadata,
    request_body,
    request_headers,
    response_body,
    response_headers,
    run_exchange,
    running_sidecar,
    wait_for,
    write_policies,
)

POLICIES = """
policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
    action: block
"""

RELOADED = """
policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential, classified]
    action: block
"""

# Line 9 holds the mistake: an unknown rule type.
BROKEN = """
policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
    action: block
  - type: telepathy
    id: mind
"""

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_sidecar(tmp_path, POLICIES, watch_interval_s=0.02) as running:
        yield running


@pytest.fixture(params=["grpc", "h2"])
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """The sidecar on each transport (serve --transport): health is the same on both."""
    async with running_sidecar(tmp_path, POLICIES, transport=request.param) as running:
        yield running


# -- health and reflection -------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", EXT_PROC, EXT_AUTHZ])
async def test_health_is_serving_once_started(served: Running, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    assert resp.status == SERVING


async def test_health_goes_not_serving_when_the_server_stops(served: Running) -> None:
    watch = health_pb2_grpc.HealthStub(served.channel).Watch(
        health_pb2.HealthCheckRequest(service=EXT_PROC)
    )
    assert (await watch.read()).status == SERVING
    stop = asyncio.create_task(served.stop())
    # Kubernetes' probe sees NOT_SERVING first, while open streams drain.
    assert (await watch.read()).status == NOT_SERVING
    watch.cancel()
    await stop


async def test_reflection_lists_the_services(served: Running) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    resp = await call.read()
    await call.done_writing()
    names = {s.name for s in resp.list_services_response.service}
    assert {
        "envoy.service.ext_proc.v3.ExternalProcessor",
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    # And it can describe the ext_proc service, as grpcurl would ask.
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=EXT_PROC))
    resp = await call.read()
    await call.done_writing()
    assert resp.file_descriptor_response.file_descriptor_proto
    # Several questions on one stream, each answered in turn, then the end of the stream.
    call = stub.ServerReflectionInfo()
    for symbol in (EXT_AUTHZ, "grpc.health.v1.Health", "no.such.Service"):
        await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    answers = [await call.read() for _ in range(3)]
    await call.done_writing()
    assert all(a.file_descriptor_response.file_descriptor_proto for a in answers[:2])
    assert answers[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


# -- hot reload --------------------------------------------------------------------------------


async def _decision(server: Running, text: str, request_id: str) -> str:
    answers = await run_exchange(server.stub, full_request(chat_body(text), request_id=request_id))
    if answers[1].WhichOneof("response") == "immediate_response":
        return str(immediate_json(answers[1])["decision"])
    return str(metadata(answers[1])["decision"])


async def test_a_policy_change_is_picked_up_without_a_restart(server: Running) -> None:
    store = server.sidecar.store
    old = store.current.version
    assert await _decision(server, "a classified memo", "r-before") == "allow"
    write_policies(server.policy_dir, RELOADED)
    await wait_for(lambda: store.current.version != old, "the reload")
    assert await _decision(server, "a classified memo", "r-after") == "block"
    records = {r["request_id"]: r for r in server.records_json()}
    assert records["r-before"]["policy_version"] == old
    assert records["r-after"]["policy_version"] == store.current.version


async def test_a_bad_change_keeps_the_last_good_set(server: Running) -> None:
    store = server.sidecar.store
    first = store.current.version
    write_policies(server.policy_dir, RELOADED)
    await wait_for(lambda: store.current.version != first, "the reload")
    good = store.current.version
    write_policies(server.policy_dir, BROKEN)
    await wait_for(lambda: "telepathy" in str(store.last_error or ""), "the refused reload")
    assert store.current.version == good
    assert await _decision(server, "a classified memo", "r-kept") == "block"
    assert await _decision(server, "hello", "r-ok") == "allow"
    # Fixing the file is picked up again.
    write_policies(server.policy_dir, POLICIES)
    await wait_for(lambda: store.last_error is None, "the repaired reload")
    assert await _decision(server, "a classified memo", "r-fixed") == "allow"


async def test_a_bad_set_at_start_up_does_not_serve(tmp_path: Path) -> None:
    write_policies(tmp_path / "p", BROKEN)
    sidecar = Sidecar(
        ServerConfig(policies=(str(tmp_path / "p"),), listen="127.0.0.1:0", audit_log=None)
    )
    with pytest.raises(PolicyError) as info:
        await sidecar.start()
    assert any("telepathy" in str(p) for p in info.value.problems)
    await sidecar.stop()  # nothing started: stopping is harmless


# -- the real command -------------------------------------------------------------------------


def _command() -> list[str]:
    script = Path(sys.executable).parent / "policy-extproc"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "policy_extproc.cli"]


class ServeProcess:
    """``policy-extproc serve`` in a subprocess, its stderr collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
            self._new_line.set()
        self._new_line.set()

    async def wait_line(self, pattern: str, limit_s: float = 30.0) -> re.Match[str]:
        """The first stderr line matching ``pattern``; fails if the process ends without one."""
        rx = re.compile(pattern)

        async def scan() -> re.Match[str]:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if m := rx.search(line):
                        return m
                seen = len(self.lines)
                if self._reader.done():
                    raise AssertionError(f"no line matching {pattern!r}:\n" + self.output)
                self._new_line.clear()
                await self._new_line.wait()

        return await asyncio.wait_for(scan(), limit_s)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def exit_code(self, limit_s: float = 30.0) -> int:
        code = await asyncio.wait_for(self.proc.wait(), limit_s)
        await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[object]:
    """start(policies_dir) -> a running ServeProcess; every one started is killed at the end."""
    started: list[ServeProcess] = []

    async def start(*extra: str) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLICY_EXTPROC_")}
        proc = await asyncio.create_subprocess_exec(
            *_command(),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--audit-log",
            str(tmp_path / "audit.jsonl"),
            "--fsync-interval",
            "0",
            "--admin-listen",
            "off",  # its default port is fixed: another run on this machine may hold it
            *extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        sp = ServeProcess(proc)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        await sp.kill()


@pytest.mark.parametrize("transport", ["grpc", "h2"])
async def test_sigterm_drains_an_open_stream_then_exits(
    tmp_path: Path, serve: object, transport: str
) -> None:
    policy_dir = tmp_path / "p"
    write_policies(policy_dir, POLICIES)
    sp = await serve("--policies", str(policy_dir), "--transport", transport)  # type: ignore[operator]
    port = int((await sp.wait_line(r"serving on 127\.0\.0\.1:(\d+)")).group(1))
    body = chat_body("hello")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        ex = Exchange(epg.ExternalProcessorStub(channel))
        await ex.send(request_headers(body=body, request_id="r-drain"))
        sp.proc.send_signal(signal.SIGTERM)
        await sp.wait_line(r"shutting down")
        # The stream that was open when SIGTERM came still gets every answer.
        answer = await ex.send(request_body(body))
        assert metadata(answer)["decision"] == "allow"
        answer = await ex.send(response_headers())
        assert answer.WhichOneof("response") == "response_headers"
        answer = await ex.send(
            response_body(b'{"usage": {"prompt_tokens": 2, "completion_tokens": 3}}')
        )
        assert answer.WhichOneof("response") == "response_body"
        assert await ex.close() == grpc.StatusCode.OK
    assert await sp.exit_code() == 0, sp.output
    # Both records of the drained exchange reached the audit log, and its chain is intact.
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    records = [AuditRecord.from_dict(json.loads(line)) for line in lines]
    assert [(r.request_id, r.phase) for r in records] == [
        ("r-drain", "request"),
        ("r-drain", "response"),
    ]
    verify = await asyncio.create_subprocess_exec(
        *_command(),
        "audit",
        "verify",
        str(tmp_path / "audit.jsonl"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await verify.communicate()
    assert verify.returncode == 0, out.decode()


async def test_a_bad_set_at_start_up_exits_1_with_the_problem_lines(
    tmp_path: Path, serve: object
) -> None:
    policy_dir = tmp_path / "p"
    path = write_policies(policy_dir, BROKEN)
    sp = await serve("--policies", str(policy_dir))  # type: ignore[operator]
    assert await sp.exit_code() == 1
    problem = f"{path}:9: policy 'acme_base' rule 2"
    assert any(line.startswith(problem) and "telepathy" in line for line in sp.lines), sp.output
    assert "not serving" in sp.output


@pytest.mark.parametrize("transport", ["grpc", "h2"])
async def test_a_busy_port_fails_start_cleanly(tmp_path: Path, transport: str) -> None:
    write_policies(tmp_path / "p", POLICIES)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sink = RecordingSink()
        sidecar = Sidecar(
            ServerConfig(
                policies=(str(tmp_path / "p"),),
                listen=f"127.0.0.1:{port}",
                audit_log=str(tmp_path / "audit.jsonl"),
                transport=transport,
            ),
            sinks=[sink],
        )
        with pytest.raises(OSError, match="cannot listen on"):
            await sidecar.start()
    assert sink.closed  # what start opened is closed again: nothing is left running


async def test_a_busy_admin_port_is_a_clear_error_not_a_traceback(
    tmp_path: Path, serve: object
) -> None:
    write_policies(tmp_path / "p", POLICIES)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sp = await serve(*_admin_on(tmp_path, port))  # type: ignore[operator]
        await _refused_admin_port(sp, port)
    assert "Traceback" not in sp.output


async def test_a_second_sidecar_on_the_same_admin_port_does_not_start(
    tmp_path: Path, serve: object
) -> None:
    # grpcio binds with SO_REUSEPORT unless told not to: the second would then share the
    # admin calls with the first (an approval or a policy push reaching either process).
    write_policies(tmp_path / "p", POLICIES)
    port = free_port()
    first = await serve(*_admin_on(tmp_path, port))  # type: ignore[operator]
    await first.wait_line(rf"admin API on 127\.0\.0\.1:{port}\b")
    second = await serve(  # type: ignore[operator]
        *_admin_on(tmp_path, port), "--audit-log", str(tmp_path / "second.jsonl")
    )
    await _refused_admin_port(second, port)
    assert first.proc.returncode is None


def _admin_on(tmp_path: Path, port: int) -> tuple[str, ...]:
    return ("--policies", str(tmp_path / "p"), "--admin-listen", f"127.0.0.1:{port}")


async def _refused_admin_port(sp: ServeProcess, port: int) -> None:
    assert await sp.exit_code() == 1
    assert f"cannot start: cannot listen on 127.0.0.1:{port} (admin API)" in sp.output, sp.output
