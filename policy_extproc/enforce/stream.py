"""One ext_proc stream as a state machine: each message in, exactly one reply out, in order.

``ExtProcMachine`` is the protocol, with no I/O of its own: ``receive(event)`` returns the reply
to send, or a ``Decide`` action when the request's decision is needed, and ``effects()`` the
audit records and follow-ups it asks for; whoever drives it (``driver.ExtProcStream``, for the
gRPC servicer) performs them and feeds the decision back as a ``Decided`` event. Every
transition is a row of ``TRANSITIONS`` below, and ``_step`` is the one place that sets the state
(STYLE.md: "the state is set nowhere else")::

    START --request_headers--> BODY        (body to come; DONE when refused early on the headers)
    START --request_headers(eos)--> DECIDING   (no body: decided on the headers)
    BODY --request_body--> DECIDING        (not eos: BUFFERED_PARTIAL hit the limit, refused 413)
    DECIDING --decided--> RESPONSE         (or DONE when refused)
    RESPONSE --response_headers--> RESPONSE_BODY   (or DONE at end of stream)
    RESPONSE_BODY --response_body--> RESPONSE_BODY (DONE at end of stream, or refused)
    START/BODY --response_headers/body--> same state   (Envoy answered the client itself)
    START/DECIDING --shed--> DONE          (admission control: refused 503 overloaded)
    START/DECIDING --shed--> UNCHECKED     (... on a fail-open route: let through unchecked)
    UNCHECKED --any message--> UNCHECKED   (passed as it comes; Envoy was told to send no more)
    any --trailers--> same state
    any --failed--> DONE                   (an error, deliberately answered and audited)
    any --closed--> DONE                   (the stream ended or was reset: a request not decided
                                            yet is audited: stream_cancelled, or envoy_gave_up
                                            past Envoy's deadline)
    anything else: a protocol error, answered with a deliberate 500 and audited.

A large body is examined in a worker process; before its answer the servicer sends Envoy an
``override_message_timeout`` (``extension``). Each message arms a deadline (Envoy's message
timeout, or the time asked for): a decision reached after it is refused as envoy_gave_up.

DESIGN.md s8: an exception must never close the stream with an error status (Envoy would fail
the request with its own 500); every failure here becomes a reply we chose.

The machine still calls the engine's synchronous methods (begin, early_refusal, refuse, the
response watch, finish): they compute and put their I/O in the exchange's outbox; they take
the records' timestamps and latency from the clock the engine was given (``clock.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..errors import EnvoyGaveUp, PolicyExtprocError, ProtocolError, StreamCancelled
from . import answers, observe
from .effects import Effect
from .engine import Engine
from .envoy_replies import Continue, Immediate
from .exchange import Exchange
from .stream_events import (
    Closed,
    Decide,
    Decided,
    EnvoyLocalReply,
    Failed,
    Input,
    Output,
    Shed,
)
from .translate import Event

_DEADLINE_MARGIN_S = 0.05


class State(enum.Enum):
    START = "start"
    BODY = "body"
    DECIDING = "deciding"  # the request's decision was asked for (``Decide``), not yet fed back
    RESPONSE = "response"
    RESPONSE_BODY = "response_body"
    UNCHECKED = "unchecked"  # shed on a fail-open route: what comes passes unexamined
    DONE = "done"


_Handler = Callable[["ExtProcMachine", Any], tuple[Output, State]]

_PHASES = ("request_headers", "request_body", "response_headers", "response_body")
_TRAILERS = ("request_trailers", "response_trailers")


def _kind(ev: Input) -> str:
    if isinstance(ev, Event):
        return ev.phase or "unknown"
    return {Decided: "decided", Failed: "failed", Closed: "closed", Shed: "shed"}[type(ev)]


class ExtProcMachine:
    """Protocol state of one request's ext_proc stream: events in, replies and actions out."""

    def __init__(self, engine: Engine, *, trace_context: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.trace_context = trace_context or {}
        self.state = State.START
        self.exchange: Exchange | None = None
        self.claims: Any = None
        self._granted_s: float | None = None  # the override asked for the message in hand
        self._received_ns: int | None = None  # when the message in hand arrived
        self._spoofed: tuple[str, ...] = ()  # x-policy-* headers the client sent
        self._decide_phase = "request_body"

    # -- the driver's entry points ---------------------------------------------------------

    def extension(self, ev: Event) -> float | None:
        """Seconds to ask Envoy for before answering ``ev`` (a large body), or None."""
        self._granted_s = None
        if ev.phase == "request_body" and self.state is State.BODY:
            self._granted_s = self.engine.extension_s(len(ev.body))
        return self._granted_s

    def receive(self, ev: Input, *, received_ns: int | None = None) -> Output:
        """The answer to ``ev``: a reply for Envoy, a ``Decide`` to perform, or None.

        ``received_ns`` (``clock.monotonic_ns()`` when Envoy's message arrived) arms Envoy's
        deadline for it; without it no deadline is kept (the machine reads no clock).

        Raises only what the handler of a message raises; the driver feeds that back as
        ``Failed``, whose handler answers deliberately.
        """
        if isinstance(ev, Event):
            self._received_ns = received_ns
            self._arm()
        return self._step(ev)

    def _step(self, ev: Input) -> Output:
        kind = _kind(ev)
        row = TRANSITIONS.get((self.state, kind))
        if row is None:
            shown = kind if kind != "unknown" else "unknown message"
            raise ProtocolError(f"unexpected {shown} in state {self.state.value}")
        handler, allowed = row
        out, nxt = handler(self, ev)
        assert nxt in allowed, f"{self.state.value} --{kind}--> {nxt.value} is not in the table"
        self.state = nxt
        return out

    def _arm(self) -> None:
        # Envoy's timer started when it sent the message, a little before we got it: the
        # margin keeps a decision that Envoy would no longer take from being recorded as taken.
        ex = self.exchange
        if ex is None or self._received_ns is None:
            return
        granted = self._granted_s or self.engine.config.message_timeout_s
        ex.deadline_ns = self._received_ns + int((granted - _DEADLINE_MARGIN_S) * 1e9)

    # -- handlers: each returns (output, next state) ------------------------------------------

    def _trailers(self, ev: Event) -> tuple[Output, State]:
        return Continue(phase=ev.phase), self.state  # type: ignore[arg-type]

    def _request_headers(self, ev: Event) -> tuple[Output, State]:
        self.exchange = ex = self._begin(ev)
        self.claims = ev.claims
        self._arm()
        # x-policy-* headers are ours: one a client sent (x-policy-provider picks the route)
        # is dropped, and the route chosen with it forgotten.
        self._spoofed = spoofed = tuple(h for h in ev.headers if h.startswith("x-policy-"))
        if ev.end_of_stream:
            self._decide_phase = "request_headers"
            return Decide(b"", complete=True), State.DECIDING
        early = self.engine.early_refusal(ex)
        if early is not None:
            return answers.refusal(early, ex.request_id, self.version()), State.DONE
        reply = Continue(
            phase="request_headers",
            remove_headers=spoofed,
            clear_route_cache=bool(spoofed),
            skip_response=not self.engine.needs_response(ex),
        )
        return reply, State.BODY

    def _begin(self, ev: Event) -> Exchange:
        headers = ev.headers
        if self.trace_context:
            # Envoy's own span (the ext_proc call's, from the gRPC metadata) is the parent,
            # ahead of a traceparent the client sent: the decision sits under Envoy's span.
            headers = {**headers, **self.trace_context}
        return self.engine.begin(headers, ev.claims)

    def _shed(self, ev: Shed) -> tuple[Output, State]:
        """Shed by admission control: refused (503 overloaded, retry-after), or on a fail-open
        route let through unchecked; audited either way (``Engine.shed``)."""
        first = ev.headers
        if self.exchange is None:
            assert first is not None, "shed before the request headers"
            self.exchange = self._begin(first)
            self._spoofed = tuple(h for h in first.headers if h.startswith("x-policy-"))
        ex = self.exchange
        decision = self.engine.shed(ex, ev.error)
        if decision.action != "allow":
            return answers.refusal(decision, ex.request_id, self.version()), State.DONE
        phase = "request_headers" if first is not None else self._decide_phase
        on_headers = phase == "request_headers"
        # x-policy-* headers stay ours (they pick the route) even unchecked.
        dropped = self._spoofed if on_headers else ()
        reply = Continue(
            phase=phase,  # type: ignore[arg-type]
            remove_headers=dropped,
            clear_route_cache=bool(dropped),
            skip_rest=on_headers,
            metadata=answers.metadata(decision, ex.request_id, self.version()),
        )
        return reply, State.UNCHECKED

    def _unchecked(self, ev: Event) -> tuple[Output, State]:
        return Continue(phase=ev.phase), State.UNCHECKED  # type: ignore[arg-type]

    def _request_body(self, ev: Event) -> tuple[Output, State]:
        self._decide_phase = "request_body"
        return Decide(ev.body, complete=ev.end_of_stream), State.DECIDING

    def _decided(self, ev: Decided) -> tuple[Output, State]:
        ex = self.exchange
        assert ex is not None
        decision = ev.decision
        if decision.action in ("block", "throttle", "escalate"):
            return answers.refusal(decision, ex.request_id, self.version()), State.DONE
        phase = self._decide_phase
        reply = answers.proceed(
            decision, ex.request_id, new_body=ev.new_body, version=self.version(), phase=phase
        )
        if ex.held.expected:
            reply = observe.mark(reply, ex)  # the observe filter reads the answer
        if phase == "request_headers" and self._spoofed:
            # A request without a body is decided here: drop the spoofed headers too, but
            # not one we set ourselves (a reroute's x-policy-provider).
            ours = {k for k, _ in reply.set_headers}
            dropped = tuple(h for h in self._spoofed if h not in ours)
            reply = replace(
                reply, remove_headers=(*reply.remove_headers, *dropped), clear_route_cache=True
            )
        return reply, State.RESPONSE

    def _local_reply(self, ev: Event) -> tuple[Output, State]:
        """Envoy answered the client itself before we decided: a filter ahead of ours refused
        (jwt_authn's 401, the health check), or Envoy's own limit hit (a body over the buffer
        limit: 413). Nothing of ours to add or decide; a request we had seen is audited with
        the status it got."""
        ex = self.exchange
        if ev.phase == "response_headers" and ex is not None and ex.decision is None:
            status = ev.headers.get(":status", "0")
            self.engine.refuse(
                ex,
                EnvoyLocalReply(
                    f"Envoy answered {status} before the request reached the policies",
                    int(status) if status.isdigit() else 500,
                ),
            )
        return Continue(phase=ev.phase), self.state  # type: ignore[arg-type]

    def _response_headers(self, ev: Event) -> tuple[Output, State]:
        ex = self.exchange
        assert ex is not None and ex.decision is not None
        self.engine.response_started(ex, ev.headers)
        if ev.end_of_stream:
            self.engine.finish(ex)
            mode, nxt = None, State.DONE
        else:
            # Envoy buffers response bodies by default; an SSE stream must flow chunk by chunk
            # (mode_override needs allow_mode_override in the filter configuration).
            mode, nxt = ("STREAMED" if ex.response.streaming else None), State.RESPONSE_BODY
        reply = answers.response_headers(
            ex.decision, ex.request_id, body_mode=mode, drop_length=ex.response.streaming
        )
        return reply, nxt

    def _response_body(self, ev: Event) -> tuple[Output, State]:
        ex = self.exchange
        assert ex is not None and ex.decision is not None
        body, refusal = self.engine.response_chunk(ex, ev.body, ev.end_of_stream)
        nxt = State.DONE if ev.end_of_stream else State.RESPONSE_BODY
        if refusal is not None:
            # A buffered answer a rule refuses: the client gets the policy error instead. The
            # response headers are still held by Envoy in BUFFERED mode, so this replaces all.
            return answers.refusal(refusal, ex.request_id, self.version()), State.DONE
        if body is None:
            return Continue(phase="response_body"), nxt
        if ex.response.streaming:
            return Continue(phase="response_body", body=body), nxt
        headers = [("content-length", str(len(body)))]
        found = ex.response.findings
        if found is not None and found.redactions:
            counts = {**ex.decision.redactions, **found.redactions}
            headers.append(("x-policy-redactions", ",".join(f"{k}={v}" for k, v in counts.items())))
        return Continue(phase="response_body", body=body, set_headers=tuple(headers)), nxt

    def _failed(self, ev: Failed) -> tuple[Output, State]:
        """A deliberate answer for a failure: refuse the request with the error's code."""
        if self.exchange is None:
            self.exchange = self.engine.begin({})
        ex = self.exchange
        decision = self.engine.refuse(ex, ev.error)
        return answers.refusal(decision, ex.request_id, self.version()), State.DONE

    def _closed(self, ev: Closed) -> tuple[Output, State]:
        """The stream ended (cleanly, cancelled, or the client went away).

        A request not decided yet gets its record now, saying what the client got: Envoy's
        504 when the decision was still being made past Envoy's deadline, otherwise a reset
        stream (the client went away, or Envoy gave up for its own reasons).
        """
        ex = self.exchange
        if ex is None or self.state is State.DONE:
            return None, State.DONE
        if ex.decision is not None:
            self.engine.finish(ex, cut=True)
            return None, State.DONE
        deciding = self.state is State.DECIDING
        late = ex.deadline_ns is not None and ev.now_ns > ex.deadline_ns
        exc: PolicyExtprocError
        if deciding and late:
            exc = EnvoyGaveUp("Envoy stopped waiting for the decision (message timeout)")
        elif deciding:
            exc = StreamCancelled("the stream was reset while the request was being decided")
        else:
            exc = StreamCancelled("the stream ended before the request body arrived")
        self.engine.refuse(ex, exc)
        return None, State.DONE

    def effects(self) -> list[Effect]:
        """The I/O asked for since the last call (audit records, follow-ups), in order."""
        return self.exchange.take_effects() if self.exchange is not None else []

    def version(self) -> str:
        ex = self.exchange
        return ex.snapshot.version if ex is not None and ex.snapshot is not None else ""

    def __repr__(self) -> str:
        return f"ExtProcMachine({self.state.value})"


S = State
# (state, event kind) -> (handler, the states it may lead to). The only transitions there are.
TRANSITIONS: dict[tuple[State, str], tuple[_Handler, frozenset[State]]] = {
    (S.START, "request_headers"): (
        ExtProcMachine._request_headers,
        frozenset({S.BODY, S.DECIDING, S.DONE}),
    ),
    (S.BODY, "request_body"): (ExtProcMachine._request_body, frozenset({S.DECIDING})),
    (S.DECIDING, "decided"): (ExtProcMachine._decided, frozenset({S.RESPONSE, S.DONE})),
    (S.RESPONSE, "response_headers"): (
        ExtProcMachine._response_headers,
        frozenset({S.RESPONSE_BODY, S.DONE}),
    ),
    (S.RESPONSE_BODY, "response_body"): (
        ExtProcMachine._response_body,
        frozenset({S.RESPONSE_BODY, S.DONE}),
    ),
    **{
        (s, phase): (ExtProcMachine._local_reply, frozenset({s}))
        for s in (S.START, S.BODY)
        for phase in ("response_headers", "response_body")
    },
    **{
        (s, "shed"): (ExtProcMachine._shed, frozenset({S.DONE, S.UNCHECKED}))
        for s in (S.START, S.DECIDING)
    },
    **{(S.UNCHECKED, p): (ExtProcMachine._unchecked, frozenset({S.UNCHECKED})) for p in _PHASES},
    **{(s, t): (ExtProcMachine._trailers, frozenset({s})) for s in S for t in _TRAILERS},
    **{(s, "failed"): (ExtProcMachine._failed, frozenset({S.DONE})) for s in S},
    **{(s, "closed"): (ExtProcMachine._closed, frozenset({S.DONE})) for s in S},
}
del S


__all__ = [
    "TRANSITIONS",
    "Closed",
    "Decide",
    "Decided",
    "ExtProcMachine",
    "Failed",
    "Immediate",
    "State",
]
