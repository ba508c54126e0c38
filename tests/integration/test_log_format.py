"""``serve --log-format json``: every line the real process writes is one JSON object."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.integration.helpers import write_policies
from tests.integration.test_server_lifecycle import POLICIES, ServeProcess
from tests.integration.test_server_lifecycle import serve as serve  # the fixture


async def test_serve_logs_one_json_object_a_line(tmp_path: Path, serve: object) -> None:
    policy_dir = tmp_path / "p"
    write_policies(policy_dir, POLICIES)
    sp: ServeProcess = await serve("--policies", str(policy_dir), "--log-format", "json")  # type: ignore[operator]
    await sp.wait_line(r'"message": "serving on 127\.0\.0\.1:\d+')
    sp.proc.send_signal(signal.SIGTERM)
    assert await sp.exit_code() == 0, sp.output
    records = [json.loads(line) for line in sp.lines if line.strip()]
    assert records, sp.output
    for r in records:
        assert {"ts", "level", "logger", "message"} <= set(r)
    assert any(r["message"].startswith("shutting down") for r in records)
