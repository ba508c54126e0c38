"""The I/O an exchange asks for, as values: whoever drives the exchange performs them.

The engine and the ext_proc state machine append effects to ``Exchange.outbox`` instead of
writing or spawning anything themselves; the driver (``stream.ExtProcStream`` for ext_proc,
``extauthz.check``) hands them to ``Engine.perform`` in order, before the answer goes back to
Envoy: an audit record is written before the client can see the decision it records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..audit.record import AuditRecord
from .settle import Expect, RecordOutcome, Release, Settle


@dataclass(frozen=True, slots=True)
class Audit:
    """Write one audit record (with the trace context its span joins)."""

    record: AuditRecord
    trace_context: Mapping[str, str] | None = None


Effect = Audit | Settle | Release | RecordOutcome | Expect

__all__ = ["Audit", "Effect", "Expect", "RecordOutcome", "Release", "Settle"]
