"""Nothing the client saw is missing from the audit log, even after kill -9 of the sidecar.

A real `policy-extproc serve` process behind a real Envoy takes load from client threads; it is
SIGKILLed mid-load. Every response that carried a decision (x-policy-decision) must have its
record in the log, and the hash chain must verify, the line cut by the kill included.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from policy_extproc.audit.chain import verify
from tests.envoy_harness import free_port, http_request

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).parent / "policy-extproc")


def _start_sidecar(port: int, audit: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            EXE,
            "serve",
            "--policies",
            str(ROOT / "examples" / "policies"),
            "--listen",
            f"127.0.0.1:{port}",
            "--audit-log",
            str(audit),
            "--log-level",
            "warning",
            "--admin-listen",
            "off",  # its default port is fixed: another run on this machine may hold it
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "sidecar exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("sidecar did not listen")


@pytest.mark.e2e
def test_kill9_mid_load_loses_no_decision_the_client_saw(envoy_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    sidecar = _start_sidecar(port, audit)
    envoy = envoy_factory(port)
    seen: list[str] = []  # request ids of responses that carried a decision
    lock = threading.Lock()
    stop = threading.Event()
    bodies = [
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]},  # allow
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "project-aurora?"}]},  # modify
        {"model": "o1", "messages": [{"role": "user", "content": "hi"}]},  # block
    ]

    def client(n: int) -> None:
        # Each request from another user: the example's per-user rate limit never throttles.
        i = 0
        while not stop.is_set():
            body = bodies[(n + i) % len(bodies)]
            i += 1
            try:
                resp = http_request(
                    envoy.url,
                    "/v1/chat/completions",
                    body,
                    timeout=10,
                    headers={"x-org-id": "acme", "x-team-id": "ml", "x-user-id": f"u{n}-{i}"},
                )
            except OSError:
                continue
            if "x-policy-decision" in resp.headers:
                with lock:
                    seen.append(resp.headers["x-request-id"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 150 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(sidecar.pid, signal.SIGKILL)
        sidecar.wait(10)
        time.sleep(0.5)  # requests after the kill fail closed (no decision header)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        if sidecar.poll() is None:
            sidecar.kill()
    assert len(seen) >= 150, "not enough load before the kill"
    result = verify(audit)
    assert result.ok, result.message
    logged = {json.loads(line)["request_id"] for line in audit.read_text().splitlines()}
    missing = [rid for rid in seen if rid not in logged]
    assert not missing, f"{len(missing)} decisions the client saw are not in the audit log"

    # Restarted on the same log, the sidecar continues the chain where the kill cut it.
    before = len(audit.read_text().splitlines())
    sidecar = _start_sidecar(port, audit)
    try:
        resp = http_request(
            envoy.url,
            "/v1/chat/completions",
            bodies[0],
            headers={"x-org-id": "acme", "x-team-id": "ml", "x-user-id": "after-restart"},
        )
        assert resp.status == 200
    finally:
        sidecar.send_signal(signal.SIGTERM)
        sidecar.wait(15)
    assert len(audit.read_text().splitlines()) > before
    result = verify(audit)
    assert result.ok, result.message
