"""Audit lines and checkpoints as OTLP log records, and truncation found through checkpoints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_extproc.cli import main
from tests.integration.helpers import chat_body, full_exchange, run_exchange, running_sidecar
from tests.otlp_receiver import OtlpReceiver, ReceivedLog

POLICIES = """
policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
    action: block
"""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def _checkpoints(logs: list[ReceivedLog]) -> list[dict[str, object]]:
    return [json.loads(r.body) for r in logs if r.event_name == "policy.audit.checkpoint"]


async def test_every_line_and_the_head_reach_the_collector_and_a_cut_is_found(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    audit = tmp_path / "audit.jsonl"
    async with running_sidecar(
        tmp_path,
        POLICIES,
        audit_log=str(audit),
        fsync_interval_s=0,
        otlp_endpoint=receiver.endpoint,
        audit_checkpoint_s=0.05,
    ) as running:
        for i, text in enumerate(["hello", "confidential plans", "hi"]):
            body = chat_body(text)
            await run_exchange(running.stub, full_exchange(body, request_id=f"r{i}")[:2])  # type: ignore[arg-type]
        lines = audit.read_text().splitlines()
        head = json.loads(lines[-1])["hash"]
        # a checkpoint naming the head arrives while the sidecar runs
        await asyncio.to_thread(
            receiver.wait_for_logs, lambda logs: any(c["hash"] == head for c in _checkpoints(logs))
        )  # off the loop: the sidecar's checkpoint task runs on it
    logs = receiver.logs
    decisions = [r for r in logs if r.event_name == "policy.decision"]
    # the shipped bodies are the file's lines, byte for byte: they verify as the file does
    assert [r.body for r in decisions] == lines
    assert {r.attributes["policy.audit.hash"] for r in decisions} == {
        json.loads(line)["hash"] for line in lines
    }
    marks = tmp_path / "checkpoints.jsonl"
    marks.write_text("".join(json.dumps(c) + "\n" for c in _checkpoints(logs)))

    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify", str(audit), "--checkpoints", str(marks)])
    assert ok.exit_code == 0, ok.output
    # Cut the last line: the chain alone still verifies, the checkpoint does not.
    audit.write_text("".join(line + "\n" for line in lines[:-1]))
    alone = runner.invoke(main, ["audit", "verify", str(audit)])
    assert alone.exit_code == 0, alone.output
    cut = runner.invoke(main, ["audit", "verify", str(audit), "--checkpoints", str(marks)])
    assert cut.exit_code == 1
    assert "cut off the end" in cut.output
