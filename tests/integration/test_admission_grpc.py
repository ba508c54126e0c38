"""Admission control through a running sidecar's gRPC servicer: a request over
``--max-inflight`` is answered at once with 503 overloaded and retry-after, audited and counted;
the flags are validated by ``serve``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from policy_extproc.cli import main
from policy_extproc.enforce.admission import AdmissionSettings
from tests.integration.helpers import (
    Exchange,
    chat_body,
    mutation_headers,
    request_body,
    request_headers,
    wait_for,
    write_policies,
)
from tests.integration.test_metrics import sample, scrape, start

POLICIES = """
- policy_name: acme_base
  org: acme
  rules:
    - type: content_filter
      id: secrets
      keywords: [confidential]
      action: block
"""


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def test_a_saturated_sidecar_sheds_at_once_with_503_and_retry_after(
    stack: AsyncExitStack, tmp_path: Path
) -> None:
    server = await start(
        stack,
        tmp_path,
        POLICIES,
        admission=AdmissionSettings(max_inflight=1, fail_open_routes=("/v1/embeddings",)),
    )
    port = server.sidecar.metrics_port
    samples = scrape(port)
    assert sample(samples, "policy_extproc_max_inflight") == 1
    assert sample(samples, "policy_extproc_inflight") == 0
    body = chat_body("Capital of France?")
    # One exchange holds the only slot: its headers are in, its body not yet.
    held = Exchange(server.stub)
    await held.send(request_headers(body=body, request_id="held"))
    await wait_for(lambda: server.sidecar.admission.inflight == 1, "the slot to be taken")
    assert sample(scrape(port), "policy_extproc_inflight") == 1

    shed = Exchange(server.stub)
    answer = await shed.send(request_headers(body=body, request_id="shed"))
    assert answer.WhichOneof("response") == "immediate_response"
    imm = answer.immediate_response
    assert imm.status.code == 503
    assert mutation_headers(imm.headers)["retry-after"] == "1"
    error = json.loads(imm.body)
    assert error["error"]["code"] == "overloaded" and error["retry_after"] == 1
    assert await shed.close() == grpc.StatusCode.OK

    # A fail-open route is let through unchecked, and Envoy told to send nothing more.
    emb = json.dumps({"model": "text-embedding-3-small", "input": "confidential"}).encode()
    opened = Exchange(server.stub)
    answer = await opened.send(request_headers(body=emb, path="/v1/embeddings", request_id="open"))
    assert answer.WhichOneof("response") == "request_headers"
    assert answer.mode_override.request_body_mode == 0  # NONE
    assert await opened.close() == grpc.StatusCode.OK

    # The held one is decided as usual and frees its slot.
    answer = await held.send(request_body(body))
    assert answer.WhichOneof("response") == "request_body"
    assert await held.close() == grpc.StatusCode.OK
    await wait_for(lambda: server.sidecar.admission.inflight == 0, "the slot to be free")

    records = {r["request_id"]: r for r in server.records_json()}
    assert (records["shed"]["decision"], records["shed"]["outcome"]) == ("block", "shed")
    assert records["shed"]["error_code"] == "overloaded"
    assert (records["open"]["decision"], records["open"]["outcome"]) == (
        "allow",
        "shed_fail_open",
    )
    assert records["held"]["decision"] == "allow" and records["held"]["outcome"] is None
    samples = scrape(port)
    assert sample(samples, "policy_extproc_shed_total", reason="inflight") == 2
    assert sample(samples, "policy_extproc_shed_total", reason="queue_age") == 0
    assert sample(samples, "policy_extproc_errors_total", code="overloaded") == 2
    assert sample(samples, "policy_extproc_inflight") == 0


async def test_unbounded_admits_everything(stack: AsyncExitStack, tmp_path: Path) -> None:
    server = await start(stack, tmp_path, POLICIES, admission=AdmissionSettings(max_inflight=0))
    body = chat_body("hello")
    streams = [Exchange(server.stub) for _ in range(5)]
    for i, ex in enumerate(streams):
        answer = await ex.send(request_headers(body=body, request_id=f"r{i}"))
        assert answer.WhichOneof("response") == "request_headers"
    for ex in streams:
        await ex.send(request_body(body))
        assert await ex.close() == grpc.StatusCode.OK
    assert sample(scrape(server.sidecar.metrics_port), "policy_extproc_max_inflight") == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-inflight", "-1"], "max inflight must be 0 (unbounded) or more"),
        (["--max-queue-age", "-2"], "max queue age must be 0 (off) or more"),
        (["--fail-open-route", "v1/embeddings"], "must be a path glob starting with /"),
    ],
)
def test_serve_refuses_bad_admission_flags(tmp_path: Path, flags: list[str], message: str) -> None:
    write_policies(tmp_path, POLICIES)
    result = CliRunner().invoke(main, ["serve", "--policies", str(tmp_path), *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output
