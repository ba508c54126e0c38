"""The audit log's lines as OpenTelemetry log records over OTLP, and checkpoints of its head.

A collector can ship log records where the pod's disk cannot follow: object storage, a SIEM.
Each line the hash chain writes (``AuditLog`` calls ``line`` after the write) becomes one log
record whose body is the line itself, byte for byte as in the file, hash and ``prev_hash``
included, so the shipped copy verifies as the file does. ``event_name`` is ``policy.decision``
for a decision, ``policy.audit.<event>`` for a chain event.

``checkpoint`` sends the chain's head (the hash of the last line, how many lines this process
wrote) as a record ``policy.audit.checkpoint``: the server calls it every few seconds. Once it
has left the pod it cannot be rewritten from there, so cutting lines off the end of the file is
found by ``policy-extproc audit verify --checkpoints`` (every hash named must be in the log).

Export is batched off the request path, as spans are; when the collector is down, records are
dropped once the queue is full (the file keeps every line, and the next checkpoint still
covers the lines before it).
"""

from __future__ import annotations

import json
import logging
import time

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter

from .otel import bounded_shutdown, resource
from .segments import GENESIS

logger = logging.getLogger(__name__)

CHECKPOINT = "policy.audit.checkpoint"


class OtelAuditLogs:
    """Exports every audit line and periodic checkpoints as OTLP log records."""

    def __init__(
        self,
        endpoint: str,
        *,
        chain: str,
        service_name: str = "policy-extproc",
        insecure: bool = True,
        exporter: LogRecordExporter | None = None,
        close_timeout_s: float = 5.0,
    ) -> None:
        self._exporter = exporter or OTLPLogExporter(endpoint=endpoint, insecure=insecure)
        # Not the global provider, and no exit hook: close() is bounded, the SDK's is not.
        self._provider = LoggerProvider(resource=resource(service_name), shutdown_on_exit=False)
        self._provider.add_log_record_processor(BatchLogRecordProcessor(self._exporter))
        self._logger = self._provider.get_logger("policy_extproc.audit")
        self.chain = chain  # which log the lines belong to (host and file name)
        self._close_timeout_s = close_timeout_s
        self._last_checkpoint = ""
        self._closed = False
        self.failed = 0

    def line(self, data: bytes) -> None:
        """Export one line the chain wrote (its bytes, newline included); never raises."""
        try:
            text = data.decode().rstrip("\n")
            parsed = json.loads(text)
            event = parsed.get("event")
            self._logger.emit(
                body=text,
                event_name=f"policy.audit.{event}" if event else "policy.decision",
                attributes={
                    "policy.audit.chain": self.chain,
                    "policy.audit.hash": parsed["hash"],
                    "policy.audit.prev_hash": parsed["prev_hash"],
                },
                timestamp=time.time_ns(),
            )
        except Exception:
            self.failed += 1
            logger.exception("audit line not exported as a log record")

    def checkpoint(self, head: str, lines: int) -> bool:
        """Export the chain's head unless it is the one sent last, or the head of a chain with
        no line yet (it names no line: ``audit verify`` would call it cut off); True if sent."""
        if head in (self._last_checkpoint, GENESIS) or self._closed:
            return False
        self._last_checkpoint = head
        body = {"event": "checkpoint", "chain": self.chain, "hash": head, "lines": lines}
        self._logger.emit(
            body=json.dumps(body, separators=(",", ":")),
            event_name=CHECKPOINT,
            attributes={"policy.audit.chain": self.chain, "policy.audit.hash": head},
            timestamp=time.time_ns(),
        )
        return True

    def close(self) -> None:
        """Export what is queued (waiting at most ``close_timeout_s``); idempotent."""
        if self._closed:
            return
        self._closed = True
        bounded_shutdown(self._provider, self._exporter, self._close_timeout_s, "audit log records")
