"""Where audit records go: the ``AuditSink`` protocol and the sinks that are not OpenTelemetry.

The enforcement path calls ``emit`` once per decision, before the decision goes back to Envoy.
A sink that cannot keep a record durably raises (``AuditLogError``), so the caller can refuse
to let an unaudited decision through; a best-effort sink (``OtelSink``) never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from policy_extproc.audit.chain import AuditLog
from policy_extproc.audit.record import AuditRecord

logger = logging.getLogger(__name__)


@runtime_checkable
class AuditSink(Protocol):
    """Receives every audit record; ``trace_context`` holds W3C ``traceparent``/``tracestate``."""

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        """Keep ``record``."""
        ...

    def close(self) -> None:
        """Flush what is pending and release resources."""
        ...


class JsonlSink:
    """Writes records to a hash-chained ``AuditLog``; closing the sink closes the log."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        """Append ``record`` to the log; raises ``AuditLogError`` if it cannot be written."""
        self.log.append(record)

    def close(self) -> None:
        """Close the log (fsyncs it)."""
        self.log.close()


@dataclass(frozen=True, slots=True)
class Emitted:
    """One call to ``RecordingSink.emit``."""

    record: AuditRecord
    trace_context: Mapping[str, str] | None


class RecordingSink:
    """Keeps every record it is given, in order; the test double and an in-memory sink."""

    def __init__(self) -> None:
        self.emitted: list[Emitted] = []
        self.closed = False

    @property
    def records(self) -> list[AuditRecord]:
        """The records emitted so far, oldest first."""
        return [e.record for e in self.emitted]

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        """Keep ``record``; emitting after ``close`` is a bug in the caller and raises."""
        if self.closed:
            raise RuntimeError("emit after close")
        context = None if trace_context is None else dict(trace_context)
        self.emitted.append(Emitted(record, context))

    def close(self) -> None:
        """Mark the sink closed."""
        self.closed = True


class FanoutSink:
    """Emits each record to several sinks in order: put the durable one first.

    Every sink gets the record even when an earlier one fails; the first failure is then
    re-raised, so a broken durable log still stops the decision and a broken exporter cannot
    stop the durable log.
    """

    def __init__(self, sinks: Sequence[AuditSink]) -> None:
        self.sinks = tuple(sinks)

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        """Emit to every sink; re-raise the first failure after all have been tried."""
        _each(self.sinks, "emit", lambda sink: sink.emit(record, trace_context=trace_context))

    def close(self) -> None:
        """Close every sink; re-raise the first failure after all have been tried."""
        _each(self.sinks, "close", lambda sink: sink.close())


def _each(sinks: Sequence[AuditSink], what: str, call: Callable[[AuditSink], None]) -> None:
    first: Exception | None = None
    for sink in sinks:
        try:
            call(sink)
        except Exception as exc:
            if first is None:
                first = exc
            else:
                logger.error("audit sink %s: %s failed too: %s", type(sink).__name__, what, exc)
    if first is not None:
        raise first
