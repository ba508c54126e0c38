"""--log-format json: one object a line, naming the request being handled."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from policy_extproc.logformat import JsonFormatter, bind_request, configure, configured_format


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        configure("info", "json")
        root.handlers[0].setStream(out)  # type: ignore[attr-defined]
        yield out
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_a_json_line_per_record_with_the_bound_request(captured: io.StringIO) -> None:
    async def handle(rid: str) -> None:
        bind_request(rid, f"trace-{rid}")
        await asyncio.sleep(0)
        logging.getLogger("policy_extproc.test").warning("handled %s", "it")

    async def main() -> None:
        await asyncio.gather(handle("a"), handle("b"))  # each task keeps its own request

    asyncio.run(main())
    logging.getLogger("x").info("no request here")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [(x.get("request_id"), x.get("trace_id")) for x in lines] == [
        ("a", "trace-a"), ("b", "trace-b"), (None, None)]  # fmt: skip
    first = lines[0]
    assert (first["level"], first["logger"], first["message"]) == (
        "warning", "policy_extproc.test", "handled it")  # fmt: skip
    assert first["ts"].endswith("Z")
    assert configured_format() == "json"


def test_exceptions_are_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("n", logging.ERROR, "f", 1, "failed", (), sys.exc_info())
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed" and "ValueError: boom" in out["exc"]
