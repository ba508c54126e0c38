"""Whether the durable audit log can be written, for readiness: a sink wrapper that watches.

No decision goes out unaudited, so a sidecar whose audit log cannot be written refuses
everything; it should leave the Service's endpoints meanwhile, not keep receiving traffic it
will refuse. ``WatchedSink`` passes every record to the durable sink; the first failure turns it
unhealthy (``on_change(False)``: gRPC health goes NOT_SERVING) and logs one ERROR, then at most
one line per ``log_every_s`` with the count refused meanwhile, never one per request.

A pod out of rotation gets no requests to prove the log writable again, so while unhealthy
``probe`` (called every second by the server) appends a chain event ``audit_resumed`` carrying
how many decisions were refused; once one is written the sink is healthy (``on_change(True)``),
and the log itself records the outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from policy_extproc.audit.chain import AuditLog
from policy_extproc.audit.record import AuditRecord
from policy_extproc.audit.sink import AuditSink

logger = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


class WatchedSink:
    """An ``AuditSink`` around the durable one that reports when writing fails and recovers."""

    def __init__(
        self,
        sink: AuditSink,
        log: AuditLog | None,
        on_change: Callable[[bool], None],
        *,
        log_every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.log = log
        self.on_change = on_change
        self.log_every_s = log_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self.healthy = True
        self.refused = 0  # decisions refused since the log became unwritable
        self._unlogged = 0
        self._logged_at = 0.0

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        """Emit to the durable sink; a failure is counted, reported, and re-raised."""
        try:
            self.sink.emit(record, trace_context=trace_context)
        except Exception as exc:
            self._failed(exc)
            raise
        if not self.healthy:
            self._recovered()

    def probe(self) -> bool:
        """While unhealthy, try to append an ``audit_resumed`` event; True once healthy."""
        if self.healthy:
            return True
        if self.log is None:
            return False
        try:
            self.log.append_event("audit_resumed", refused=self.refused)
        except Exception as exc:
            self._failed(exc, count=False)
            return False
        self._recovered()
        return True

    def close(self) -> None:
        """Close the durable sink."""
        self.sink.close()

    def _failed(self, exc: BaseException, *, count: bool = True) -> None:
        with self._lock:
            first = self.healthy
            self.healthy = False
            if count:
                self.refused += 1
                self._unlogged += 1
            now = self._clock()
            due = first or now - self._logged_at >= self.log_every_s
            if due:
                unlogged, self._unlogged, self._logged_at = self._unlogged, 0, now
        if first:
            logger.error("audit log cannot be written, refusing every request: %s", exc)
            self.on_change(False)
        elif due:
            logger.error(
                "audit log still cannot be written (%d requests refused in the last %.0f s): %s",
                unlogged,
                self.log_every_s,
                exc,
            )

    def _recovered(self) -> None:
        with self._lock:
            if self.healthy:
                return
            self.healthy = True
            refused, self.refused, self._unlogged = self.refused, 0, 0
        logger.warning("audit log writable again (%d requests were refused meanwhile)", refused)
        self.on_change(True)
