"""Drives one ext_proc stream's state machine for the gRPC servicer: the I/O side.

``ExtProcStream.handle`` feeds Envoy's message to the ``ExtProcMachine`` (stream.py), performs
what it asks for (the engine's async decision, then the audit records and follow-ups, in
order, before the reply goes back) and turns every failure into the machine's ``Failed`` event,
so Envoy always gets a reply we chose (DESIGN.md s8).

Admission control (admission.py) happens here, where an exchange starts: the request headers
take a slot or are shed at once (too many in flight, or waited too long since Envoy's
request.time); the slot is given back once the request is decided or its stream ends.
"""

from __future__ import annotations

import logging

from ..errors import PolicyExtprocError
from . import answers
from .admission import Admission
from .engine import Engine
from .envoy_replies import Continue, Immediate, Reply
from .exchange import Exchange
from .stream import ExtProcMachine, State
from .stream_events import Closed, Decide, Decided, Failed, InternalError, Shed
from .translate import Event

log = logging.getLogger(__name__)

# The request phases: an admitted request holds its slot while in them.
_DECIDING = (State.START, State.BODY, State.DECIDING)


class ExtProcStream:
    """Drives an ``ExtProcMachine`` for the servicer: performs its ``Decide`` actions (the
    engine's async decision) and turns every failure into the machine's ``Failed`` event."""

    def __init__(
        self,
        engine: Engine,
        *,
        trace_context: dict[str, str] | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.engine = engine
        self.machine = ExtProcMachine(engine, trace_context=trace_context)
        self.admission = admission
        self._admitted = False  # holds a slot of ``admission``

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
            now_ns = self.engine.clock.monotonic_ns()
            first = ev.phase == "request_headers" and m.state is State.START
            if self.admission is not None and first:
                shed = self._admit(ev)
                if shed is not None:
                    return self._reply(m.receive(shed))
            out = m.receive(ev, received_ns=now_ns)
            self._perform()
            if isinstance(out, Decide):
                # Queue age is not judged again here: the time since request.time now includes
                # the client's upload of the body, which is not the sidecar being overloaded.
                ex = m.exchange
                assert ex is not None
                decision, new_body = await self.engine.decide_request(
                    ex, out.body, complete=out.complete, claims=m.claims
                )
                self._perform()
                out = m.receive(Decided(decision, new_body))
            return self._reply(out)
        except PolicyExtprocError as exc:
            return self._fail(exc)
        except Exception as exc:  # a bug of ours must not become Envoy's generic 500
            log.exception("ext_proc stream failed on %s", ev.phase)
            return self._fail(
                InternalError(f"internal error while processing {ev.phase}: {type(exc).__name__}")
            )
        finally:
            if self._admitted and self.state not in _DECIDING:
                self._release()

    def _admit(self, ev: Event) -> Shed | None:
        """Take a slot for the request whose headers ``ev`` are, or shed it."""
        assert self.admission is not None
        path = ev.headers.get(":path", "")
        age_s = None
        if ev.request_time_s is not None:
            # Envoy's clock and ours are the same host's (a sidecar): the wait in Envoy and in
            # our event loop, not just since our code saw the message.
            age_s = max(0.0, self.engine.clock.wall_s() - ev.request_time_s)
        shed = self.admission.admit(path, age_s)
        if shed is not None:
            return Shed(shed, ev)
        self._admitted = True
        return None

    def _release(self) -> None:
        self._admitted = False
        if self.admission is not None:
            self.admission.release()

    def _reply(self, out: object) -> Reply:
        self._perform()
        assert isinstance(out, Continue | Immediate), out
        return out

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
        if self._admitted:
            self._release()
        try:
            self.machine.receive(Closed(self.engine.clock.monotonic_ns()))
            self._perform()
        except Exception:
            # Called from the servicer's ``finally``: raising here would turn a clean close
            # into an error status (or mask a cancellation). The answers already went out.
            log.exception("ext_proc stream: recording the end of the exchange failed")

    def __repr__(self) -> str:
        return f"ExtProcStream({self.state.value})"


__all__ = ["ExtProcStream"]
