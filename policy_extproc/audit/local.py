"""The audit log a sidecar keeps itself: the hash-chained file (or standard output), the
watcher that reports whether it can be written, and, with an OTLP endpoint, every line as an
OTLP log record plus a periodic checkpoint of the chain's head (so that cutting lines off the
end of the file is found)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from .chain import AuditLog
from .health import WatchedSink
from .sink import JsonlSink

if TYPE_CHECKING:
    from .otel_logs import OtelAuditLogs

log = logging.getLogger(__name__)

# While the audit log cannot be written, a probe line is tried this often.
PROBE_S = 1.0


class LocalAudit:
    """``serve --audit-log`` and its companions, opened; ``watched`` is the sink to emit to."""

    def __init__(
        self,
        target: str,
        *,
        fsync_interval_s: float,
        max_bytes: int | None,
        max_age_s: float | None,
        keep: int | None,
        stdout: bool,
        otlp_endpoint: str | None,
        checkpoint_s: float,
        on_health: Callable[[bool], None],
    ) -> None:
        path = None if target == "-" else target
        self.log = AuditLog(
            path,
            fsync_interval_s=fsync_interval_s,
            max_bytes=max_bytes,
            max_age_s=max_age_s,
            keep=keep,
            tee=1 if stdout or path is None else None,
        )
        self.checkpoint_s = checkpoint_s
        self.otlp: OtelAuditLogs | None = None
        if otlp_endpoint:
            from .otel_logs import OtelAuditLogs

            self.otlp = OtelAuditLogs(
                otlp_endpoint, chain=f"{socket.gethostname()}:{path or 'stdout'}"
            )
            self.log.listeners.append(self.otlp.line)
        self.watched = WatchedSink(JsonlSink(self.log), self.log, on_health)

    async def checkpoints(self) -> None:
        """Export the chain's head every ``checkpoint_s`` (a task; with OTLP only)."""
        while True:
            await asyncio.sleep(self.checkpoint_s)
            self.checkpoint()

    def checkpoint(self) -> None:
        if self.otlp is not None:
            self.otlp.checkpoint(self.log.last_hash, self.log.lines)

    async def probe(self) -> None:
        """While the log cannot be written, try a probe line every ``PROBE_S`` (a task)."""
        while True:
            await asyncio.sleep(PROBE_S)
            if not self.watched.healthy:
                await asyncio.to_thread(self.watched.probe)

    def reopen(self) -> None:
        """Open the log's path again (SIGHUP, after logrotate renamed the file)."""
        try:
            self.log.reopen()
        except Exception as exc:  # the next record tries again, and fails closed meanwhile
            log.error("audit log reopen failed: %s", exc)

    def close_export(self) -> None:
        """The head as the log closes, then the OTLP exporter (the sinks closed the log)."""
        if self.otlp is not None:
            self.checkpoint()
            self.otlp.close()


__all__ = ["PROBE_S", "LocalAudit"]
