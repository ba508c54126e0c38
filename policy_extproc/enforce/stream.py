"""One ext_proc stream as a state machine: each message in, exactly one reply out, in order.

Every transition lives in ``ExtProcStream.handle``'s table::

    START --request_headers--> BODY        (body to come; refused early if declared too large)
    START --request_headers(eos)--> RESPONSE   (no body: decided on the headers)
    BODY --request_body(eos)--> RESPONSE   (decided; or DONE when refused)
    BODY --request_body(not eos)--> DONE   (BUFFERED_PARTIAL hit the limit: JSON 413)
    RESPONSE --response_headers--> RESPONSE_BODY   (or DONE at end of stream)
    RESPONSE_BODY --response_body--> RESPONSE_BODY (DONE at end of stream)
    any --trailers--> same state
    anything else: a protocol error, answered with a deliberate 500 and audited.
    START/BODY --stream ends or is reset (``close``)--> DONE, audited: stream_cancelled, or
                                                       envoy_gave_up past Envoy's deadline

A large body is examined in a worker process; before its answer the servicer sends Envoy an
``override_message_timeout`` (``extension``). Each message arms a deadline (Envoy's message
timeout, or the time asked for): a decision reached after it is refused as envoy_gave_up.

DESIGN.md s8: an exception must never close the stream with an error status (Envoy would fail
the request with its own 500); every failure here becomes a reply we chose.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import replace
from typing import Any

from ..errors import EnvoyGaveUp, PolicyExtprocError, ProtocolError, StreamCancelled
from . import answers
from .engine import Engine, Exchange
from .envoy_replies import Continue, Immediate, Reply
from .translate import Event

log = logging.getLogger(__name__)


_DEADLINE_MARGIN_S = 0.05


class State(enum.Enum):
    START = "start"
    BODY = "body"
    RESPONSE = "response"
    RESPONSE_BODY = "response_body"
    DONE = "done"


class EnvoyLocalReply(PolicyExtprocError):
    """The client got Envoy's own answer (a 413 over the buffer limit, say), not ours."""

    code = "envoy_local_reply"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status
        if status == 413:
            self.code = "body_too_large"


class InternalError(PolicyExtprocError):
    code = "internal_error"
    http_status = 500


class ExtProcStream:
    """Protocol state of one request's ext_proc stream."""

    def __init__(self, engine: Engine, *, trace_context: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.trace_context = trace_context or {}
        self.state = State.START
        self.exchange: Exchange | None = None
        self.claims: Any = None
        self._granted_s: float | None = None  # the override asked for the message in hand
        self._pending = False  # a message is being answered
        self._received_ns = 0

    def extension(self, ev: Event) -> float | None:
        """Seconds to ask Envoy for before answering ``ev`` (a large body), or None."""
        self._granted_s = None
        if ev.phase == "request_body" and self.state is State.BODY:
            self._granted_s = self.engine.extension_s(len(ev.body))
        return self._granted_s

    def _arm(self) -> None:
        # Envoy's timer started when it sent the message, a little before we got it: the
        # margin keeps a decision that Envoy would no longer take from being recorded as taken.
        ex = self.exchange
        if ex is None:
            return
        granted = self._granted_s or self.engine.config.message_timeout_s
        ex.deadline_ns = self._received_ns + int((granted - _DEADLINE_MARGIN_S) * 1e9)

    async def handle(self, ev: Event) -> Reply:
        """The reply to one message; never raises."""
        self._pending = True
        self._received_ns = time.monotonic_ns()
        self._arm()
        try:
            reply = await self._handle(ev)
            self._pending = False
            return reply
        except PolicyExtprocError as exc:
            self._pending = False
            return self._fail(exc)
        except Exception as exc:  # a bug of ours must not become Envoy's generic 500
            self._pending = False
            log.exception("ext_proc stream failed on %s", ev.phase)
            return self._fail(
                InternalError(f"internal error while processing {ev.phase}: {type(exc).__name__}")
            )

    async def _handle(self, ev: Event) -> Reply:
        phase, state = ev.phase, self.state
        if phase in ("request_trailers", "response_trailers"):
            return Continue(phase=phase)
        if phase == "request_headers" and state is State.START:
            return await self._request_headers(ev)
        if phase == "request_body" and state is State.BODY:
            return await self._decide(ev.body, complete=ev.end_of_stream, phase="request_body")
        if phase == "response_headers" and state is State.RESPONSE:
            return self._response_headers(ev)
        if phase == "response_body" and state is State.RESPONSE_BODY:
            return self._response_body(ev)
        if phase in ("response_headers", "response_body") and state in (State.START, State.BODY):
            return self._local_reply(ev)
        raise ProtocolError(f"unexpected {phase or 'unknown message'} in state {state.value}")

    def _local_reply(self, ev: Event) -> Reply:
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
        return Continue(phase=ev.phase)  # type: ignore[arg-type]

    async def _request_headers(self, ev: Event) -> Reply:
        headers = ev.headers
        if self.trace_context:
            # Envoy's own span (the ext_proc call's, from the gRPC metadata) is the parent,
            # ahead of a traceparent the client sent: the decision sits under Envoy's span.
            headers = {**headers, **self.trace_context}
        self.exchange = ex = self.engine.begin(headers, ev.claims)
        self.claims = ev.claims
        self._arm()
        # x-policy-* headers are ours: one a client sent (x-policy-provider picks the route)
        # is dropped, and the route chosen with it forgotten.
        spoofed = tuple(h for h in ev.headers if h.startswith("x-policy-"))
        if ev.end_of_stream:
            reply = await self._decide(b"", complete=True, phase="request_headers")
            if spoofed and isinstance(reply, Continue):
                # A request without a body is decided here: drop the spoofed headers too, but
                # not one we set ourselves (a reroute's x-policy-provider).
                ours = {k for k, _ in reply.set_headers}
                reply = replace(
                    reply,
                    remove_headers=(*reply.remove_headers, *(h for h in spoofed if h not in ours)),
                    clear_route_cache=True,
                )
            return reply
        early = self.engine.early_refusal(ex)
        if early is not None:
            self.state = State.DONE
            return answers.refusal(early, ex.request_id, self._version())
        self.state = State.BODY
        return Continue(
            phase="request_headers",
            remove_headers=spoofed,
            clear_route_cache=bool(spoofed),
            skip_response=not self.engine.needs_response(ex),
        )

    async def _decide(self, body: bytes, *, complete: bool, phase: str) -> Reply:
        ex = self.exchange
        assert ex is not None
        decision, new_body = await self.engine.decide_request(
            ex, body, complete=complete, claims=self.claims
        )
        if decision.action in ("block", "throttle", "escalate"):
            self.state = State.DONE
            return answers.refusal(decision, ex.request_id, self._version())
        self.state = State.RESPONSE
        return answers.proceed(
            decision, ex.request_id, new_body=new_body, version=self._version(), phase=phase
        )

    def _response_headers(self, ev: Event) -> Reply:
        ex = self.exchange
        assert ex is not None and ex.decision is not None
        self.engine.response_started(ex, ev.headers)
        if ev.end_of_stream:
            self.state = State.DONE
            self.engine.finish(ex)
            mode = None
        else:
            self.state = State.RESPONSE_BODY
            # Envoy buffers response bodies by default; an SSE stream must flow chunk by chunk
            # (mode_override needs allow_mode_override in the filter configuration).
            mode = "STREAMED" if ex.streaming else None
        return answers.response_headers(
            ex.decision, ex.request_id, body_mode=mode, drop_length=ex.streaming
        )

    def _response_body(self, ev: Event) -> Reply:
        ex = self.exchange
        assert ex is not None
        body, refusal = self.engine.response_chunk(ex, ev.body, ev.end_of_stream)
        if ev.end_of_stream:
            self.state = State.DONE
        if refusal is not None:
            # A buffered answer a rule refuses: the client gets the policy error instead. The
            # response headers are still held by Envoy in BUFFERED mode, so this replaces all.
            self.state = State.DONE
            return answers.refusal(refusal, ex.request_id, self._version())
        if body is None:
            return Continue(phase="response_body")
        if ex.streaming:
            return Continue(phase="response_body", body=body)
        headers = [("content-length", str(len(body)))]
        if ex.response_findings is not None and ex.response_findings.redactions:
            counts = {**ex.decision.redactions, **ex.response_findings.redactions}  # type: ignore[union-attr]
            headers.append(("x-policy-redactions", ",".join(f"{k}={v}" for k, v in counts.items())))
        return Continue(phase="response_body", body=body, set_headers=tuple(headers))

    def _fail(self, exc: PolicyExtprocError) -> Reply:
        """A deliberate answer for a failure: refuse the request with the error's code."""
        if self.exchange is None:
            self.exchange = self.engine.begin({})
        ex = self.exchange
        self.state = State.DONE
        try:
            decision = self.engine.refuse(ex, exc)
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
            decision = answers.request_error(cause)
        return answers.refusal(decision, ex.request_id, self._version())

    def _version(self) -> str:
        ex = self.exchange
        return ex.snapshot.version if ex is not None and ex.snapshot is not None else ""

    def close(self) -> None:
        """The stream ended (cleanly, cancelled, or the client went away).

        A request not decided yet gets its record now, saying what the client got: Envoy's
        504 when a message was still being answered past Envoy's deadline, otherwise a reset
        stream (the client went away, or Envoy gave up for its own reasons).
        """
        ex = self.exchange
        if ex is not None and ex.decision is None and self.state is not State.DONE:
            self.state = State.DONE
            late = ex.deadline_ns is not None and time.monotonic_ns() > ex.deadline_ns
            exc: PolicyExtprocError
            if self._pending and late:
                exc = EnvoyGaveUp("Envoy stopped waiting for the decision (message timeout)")
            elif self._pending:
                exc = StreamCancelled("the stream was reset while the request was being decided")
            else:
                exc = StreamCancelled("the stream ended before the request body arrived")
            try:
                self.engine.refuse(ex, exc)
            except Exception:
                log.exception("ext_proc stream: recording the abandoned request failed")
        if self.exchange is not None and self.state is not State.DONE:
            self.state = State.DONE
            try:
                self.engine.finish(self.exchange, cut=True)
            except Exception:
                # Called from the servicer's ``finally``: raising here would turn a clean close
                # into an error status (or mask a cancellation). The answers already went out.
                log.exception("ext_proc stream: recording the end of the exchange failed")
        self.state = State.DONE

    def __repr__(self) -> str:
        return f"ExtProcStream({self.state.value})"


__all__ = ["ExtProcStream", "Immediate", "State"]
