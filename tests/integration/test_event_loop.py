"""The real ``serve`` on each event loop: it says which one it runs on, decides, reopens its
audit log on SIGHUP and stops on SIGTERM, under both transports."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg

from tests.integration.helpers import chat_body, full_request, run_exchange, write_policies
from tests.integration.test_server_lifecycle import serve  # noqa: F401 (fixture)

BLOCKING = """
policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secret
    patterns: ["project nightingale"]
    action: block
"""


@pytest.mark.parametrize(
    ("transport", "choice", "loop"),
    [("h2", "auto", "uvloop"), ("h2", "asyncio", "asyncio"), ("grpc", "auto", "asyncio"),
     ("grpc", "uvloop", "uvloop")],
)  # fmt: skip
async def test_serve_on_each_loop_decides_reopens_and_stops(
    tmp_path: Path,
    serve: object,  # noqa: F811 (the fixture imported above)
    transport: str,
    choice: str,
    loop: str,
) -> None:
    write_policies(tmp_path / "p", BLOCKING)
    sp = await serve(  # type: ignore[operator]
        "--policies", str(tmp_path / "p"), "--transport", transport, "--event-loop", choice
    )
    line = await sp.wait_line(r"serving on 127\.0\.0\.1:(\d+) over (\w+) on (\w+)'s loop")
    assert line.group(2, 3) == (transport, loop)
    audit = tmp_path / "audit.jsonl"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{line.group(1)}") as channel:
        stub = epg.ExternalProcessorStub(channel)
        answers = await run_exchange(
            stub, full_request(chat_body("about project nightingale"), request_id="r-1")
        )
        assert answers[-1].immediate_response.status.code == 403
        audit.rename(tmp_path / "audit.jsonl.1")
        sp.proc.send_signal(signal.SIGHUP)  # the loop's signal handler, on either loop
        await sp.wait_line(r"audit log .* reopened")
        answers = await run_exchange(stub, full_request(chat_body("hello"), request_id="r-2"))
        assert answers[-1].WhichOneof("response") == "request_body"
    sp.proc.send_signal(signal.SIGTERM)
    assert await sp.exit_code() == 0, sp.output
    assert [json.loads(x)["request_id"] for x in audit.read_bytes().splitlines()] == ["r-2"]
