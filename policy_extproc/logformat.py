"""Log lines as text (the default) or as one JSON object a line, for node log agents.

A JSON line carries the time, level, logger and message, plus the request id and trace id of
the request being handled when the line was logged (``bind_request`` sets them for the task
that handles one ext_proc stream; asyncio copies context per task, so streams never mix).
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any, Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_request: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "policy_extproc_request", default=None
)


def bind_request(request_id: str, trace_id: str | None = None) -> None:
    """Name the request the current task handles, for the log lines it writes."""
    _request.set((request_id, trace_id))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, request_id, trace_id, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        bound = _request.get()
        if bound is not None:
            out["request_id"] = bound[0]
            if bound[1]:
                out["trace_id"] = bound[1]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


_configured: list[LogFormat] = []  # what ``configure`` set, so worker processes do the same


def configure(level: str | int, fmt: LogFormat, *, worker: str | None = None) -> None:
    """Set up the root logger once, for ``serve`` (and each of its worker processes)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        named = f"[{worker}] %(name)s"
        text = TEXT_FORMAT if worker is None else TEXT_FORMAT.replace("%(name)s", named)
        handler.setFormatter(logging.Formatter(text))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    _configured[:] = [fmt]


def configured_format() -> LogFormat:
    return _configured[0] if _configured else "text"
