"""The real sidecar in-process for end-to-end tests: policies from text, a RecordingSink beside
the audit log, running on its own event loop thread so Envoy and test code can call it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from policy_extproc.audit.record import AuditRecord
from policy_extproc.audit.sink import RecordingSink
from policy_extproc.server import ServerConfig, Sidecar
from tests.envoy_harness import BackgroundLoop


@dataclass
class RunningSidecar:
    sidecar: Sidecar
    sink: RecordingSink
    loop: BackgroundLoop
    audit_log: Path

    @property
    def port(self) -> int:
        return self.sidecar.port

    def records(self, request_id: str) -> list[AuditRecord]:
        return [r for r in self.sink.records if r.request_id == request_id]

    def settle(self) -> None:
        """Wait for the work the sidecar does off the response path (breakers, budgets)."""
        self.loop.run(self.sidecar.engine.drain())


@contextlib.contextmanager
def running_sidecar(policy_text: str, workdir: Path, **config: object) -> Iterator[RunningSidecar]:
    """Start a Sidecar with one policy file holding ``policy_text``; stop it afterwards."""
    policies = workdir / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "policies.yaml").write_text(policy_text)
    audit = workdir / "audit.jsonl"
    config.setdefault("offload_warm", False)  # a worker process only for tests that need one
    cfg = ServerConfig(
        policies=(str(policies),), listen="127.0.0.1:0", audit_log=str(audit), **config
    )  # type: ignore[arg-type]
    sink = RecordingSink()
    loop = BackgroundLoop()

    async def start() -> Sidecar:
        s = Sidecar(cfg, sinks=[sink])
        await s.start()
        return s

    sidecar = loop.run(start())
    try:
        yield RunningSidecar(sidecar, sink, loop, audit)
    finally:
        loop.run(sidecar.stop())
        loop.close()
