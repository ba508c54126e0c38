"""Drives one ext_proc stream's state machine for the gRPC servicer: the I/O side.

``ExtProcStream.handle`` feeds Envoy's message to the ``ExtProcMachine`` (stream.py), performs
what it asks for (the engine's async decision, then the audit records and follow-ups, in
order, before the reply goes back) and turns every failure into the machine's ``Failed`` event,
so Envoy always gets a reply we chose (DESIGN.md s8).
"""

from __future__ import annotations

import logging
import time

from ..errors import PolicyExtprocError
from . import answers
from .engine import Engine
from .envoy_replies import Continue, Immediate, Reply
from .exchange import Exchange
from .stream import ExtProcMachine, State
from .stream_events import Closed, Decide, Decided, Failed, InternalError
from .translate import Event

log = logging.getLogger(__name__)


class ExtProcStream:
    """Drives an ``ExtProcMachine`` for the servicer: performs its ``Decide`` actions (the
    engine's async decision) and turns every failure into the machine's ``Failed`` event."""

    def __init__(self, engine: Engine, *, trace_context: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.machine = ExtProcMachine(engine, trace_context=trace_context)

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def exchange(self) -> Exchange | None:
        return self.machine.exchange

    @property
    def trace_context(self) -> dict[str, str]:
        return self.machine.trace_context

    def extension(self, ev: Event) -> float | None:
        """Seconds to ask Envoy for before answering ``ev`` (a large body), or None."""
        return self.machine.extension(ev)

    async def handle(self, ev: Event) -> Reply:
        """The reply to one message; never raises. What the machine asks for (a decision,
        audit records, follow-ups) is done before the reply goes back."""
        m = self.machine
        try:
            out = m.receive(ev, received_ns=time.monotonic_ns())
            self._perform()
            if isinstance(out, Decide):
                ex = m.exchange
                assert ex is not None
                decision, new_body = await self.engine.decide_request(
                    ex, out.body, complete=out.complete, claims=m.claims
                )
                self._perform()
                out = m.receive(Decided(decision, new_body))
            assert isinstance(out, Continue | Immediate), out
            return out
        except PolicyExtprocError as exc:
            return self._fail(exc)
        except Exception as exc:  # a bug of ours must not become Envoy's generic 500
            log.exception("ext_proc stream failed on %s", ev.phase)
            return self._fail(
                InternalError(f"internal error while processing {ev.phase}: {type(exc).__name__}")
            )

    def _perform(self) -> None:
        self.engine.perform(self.machine.effects())

    def _fail(self, exc: PolicyExtprocError) -> Reply:
        m = self.machine
        out = m.receive(Failed(exc))
        assert isinstance(out, Continue | Immediate)
        try:
            self._perform()
        except Exception as audit_exc:
            # The refusal could not be audited either (the audit log is down, say): still answer
            # deliberately, never with a stream error. Nothing goes through unaudited: this
            # answer refuses the request. A failed audit wins: its code says what to fix.
            # An unwritable audit log is reported by its watcher, once, not once per request.
            unwritable = getattr(audit_exc, "code", None) == "audit_unavailable"
            log.log(
                logging.DEBUG if unwritable else logging.ERROR,
                "could not audit the refusal (%s): %s",
                exc.code,
                audit_exc,
            )
            cause = audit_exc if isinstance(audit_exc, PolicyExtprocError) else exc
            ex = m.exchange
            assert ex is not None
            out = answers.refusal(answers.request_error(cause), ex.request_id, m.version())
        return out

    def close(self) -> None:
        """The stream ended (cleanly, cancelled, or the client went away)."""
        try:
            self.machine.receive(Closed(time.monotonic_ns()))
            self._perform()
        except Exception:
            # Called from the servicer's ``finally``: raising here would turn a clean close
            # into an error status (or mask a cancellation). The answers already went out.
            log.exception("ext_proc stream: recording the end of the exchange failed")

    def __repr__(self) -> str:
        return f"ExtProcStream({self.state.value})"


__all__ = ["ExtProcStream"]
