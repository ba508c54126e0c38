"""Response accounting off the answer path: ``serve --response-accounting observe``.

When the only rules that need a request's answer are budgets and token limits (no output
guardrail, no breaker), the inline ext_proc filter skips the response phases (mode_override)
and a second ext_proc filter, in Envoy's ``observability_mode``, reads the answer instead:
Envoy sends it the response headers and body chunks and waits for nothing, so the client's
bytes are never held. Output guardrails, which rewrite or refuse the answer, stay inline.

The two streams meet in the state backend (memory or Redis, so any replica or worker may get
the observe stream)::

    inline stream, at the decision        state backend             observe stream
    reserve (admit, as today) ----------> res:<request id>   <----- reconcile / release
    Expect: the pending response -------> pend:<request id>  <----- take, at the answer's end
    reply: metadata {observe, org, request_id, api} ---------------> (Envoy forwards it)

The pending response holds what settling needs (the budget and token keys, the model it is
priced as) and the response audit record to write, less what only the answer tells. It lives
``observe_timeout_s``; the process that reserved keeps the deadline (``Observer.sweep``) and,
when no observe stream took it by then (the filter is missing, the stream was lost or cut,
or the answer is still streaming: its real usage is then not counted),
takes it itself, settles the reservation at its estimate and audits that as
``response_unobserved``. Taking is atomic, so a request is settled once. Should that process
die too, the backend's reservation ttl gives the budget back (state/base.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol

from ..audit.record import AuditRecord, timestamp_ns
from ..audit.record import Usage as RecordUsage
from ..audit.sink import AuditSink
from ..errors import PolicyExtprocError, StateError
from ..llm.apis import BY_API
from ..llm.catalog import Catalog
from ..llm.response import SseParser, Usage, is_stream, parse_response
from ..state.base import StateBackend
from . import limits
from .clock import Clock
from .config import EngineConfig
from .envoy_replies import Continue
from .exchange import Exchange
from .settle import Expect, Seen, apply, settlement
from .translate import Event

log = logging.getLogger(__name__)

UNOBSERVED = "response_unobserved"  # no observe stream settled it: charged at its estimate
# The observe stream's take races the inline stream's put (a background task) only when the
# provider answers faster than one state round trip; a few short waits cover it.
_TAKE_WAITS_S = (0.005, 0.02, 0.05, 0.1, 0.25)


class _Host(Protocol):
    """What the observer needs of the engine."""

    state: StateBackend
    sink: AuditSink
    catalog: Catalog
    config: EngineConfig
    clock: Clock


@dataclass(frozen=True, slots=True)
class Pending:
    """What settling a request's answer needs, and the response record to write."""

    api: str
    model: str  # priced as
    budget_keys: tuple[str, ...]
    token_keys: tuple[str, ...]
    estimated_usd: float
    record: AuditRecord  # the response record, without usage, cost and latency yet
    trace_context: Mapping[str, str] | None
    input_tokens: int = 0  # the prompt as estimated (settling an answer without usage)

    def encode(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "api": self.api,
                "model": self.model,
                "budget_keys": list(self.budget_keys),
                "token_keys": list(self.token_keys),
                "estimated_usd": self.estimated_usd,
                "record": self.record.to_dict(),
                "trace": dict(self.trace_context) if self.trace_context else None,
                "input_tokens": self.input_tokens,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> Pending:
        data = json.loads(text)
        return cls(
            api=data["api"],
            model=data["model"],
            budget_keys=tuple(data["budget_keys"]),
            token_keys=tuple(data["token_keys"]),
            estimated_usd=float(data["estimated_usd"]),
            record=AuditRecord.from_dict(data["record"]),
            trace_context=data.get("trace"),
            input_tokens=int(data.get("input_tokens", 0)),  # absent: kept by an older version
        )


def mark(reply: Continue, ex: Exchange) -> Continue:
    """The decision's reply, marked for the observe filter in our dynamic metadata: what its
    matcher selects on (envoy/envoy.yaml.tmpl) and the key of the pending response."""
    assert ex.request is not None
    md = {**reply.metadata, "observe": True, "org": ex.ctx.org or "-", "api": ex.request.api}
    return replace(reply, metadata=md)


class Observer:
    """The pending responses this process made, and the observe streams it is given."""

    def __init__(self, host: _Host) -> None:
        self.host = host
        # (deadline on the monotonic clock, org, request id), in the order made: one timeout
        # is configured, so that is the order of the deadlines too.
        self._due: deque[tuple[float, str, str]] = deque()
        self.unobserved = 0  # settled at their estimate by the sweep
        self.streams = 0  # observe streams Envoy opened

    @property
    def timeout_s(self) -> float:
        return self.host.config.observe_timeout_s

    def expect(self, ex: Exchange, record: Callable[..., AuditRecord]) -> None:
        """Ask for the pending response of a request just decided, if the observe stream is to
        read its answer (``record``: the engine's, builds its response record)."""
        plan, request, decision = ex.held.plan, ex.request, ex.decision
        if plan is None or request is None or decision is None:
            return  # nothing reserved: nothing to settle
        if decision.action not in ("allow", "modify"):
            return
        template = record(ex, replace(decision, alerts=()), phase="response")
        pending = Pending(
            api=request.api,
            model=ex.ctx.model or request.model,
            budget_keys=tuple(plan.budget_keys),
            token_keys=tuple(plan.token_keys),
            estimated_usd=plan.estimated_usd,
            record=template,
            trace_context=ex.trace_context,
            input_tokens=plan.input_tokens,
        )
        org = ex.ctx.org or "-"
        due = self.host.clock.monotonic_ns() / 1e9 + self.timeout_s
        self._due.append((due, org, ex.request_id))
        # The store keeps it twice our deadline and a minute, so the sweep still finds it
        # (it runs at least every quarter of the deadline, with any number of workers).
        ex.outbox.append(Expect(org, ex.request_id, pending.encode(), 2 * self.timeout_s + 60.0))
        ex.held.expected = True

    async def sweep(self, now: float | None = None) -> int:
        """Settle at their estimate the pending responses no observe stream took in time
        (``now``: on the monotonic clock, tests pass one); returns how many."""
        now, settled = (self.host.clock.monotonic_ns() / 1e9 if now is None else now), 0
        while self._due and self._due[0][0] <= now:
            _, org, request_id = entry = self._due.popleft()
            try:
                text = await self.host.state.pending_take(org, request_id)
            except StateError as exc:
                # The state is out: this one and the rest wait for the next sweep.
                self._due.appendleft(entry)
                log.warning("could not settle the unobserved response of %s: %s", request_id, exc)
                break
            if text is None:
                continue  # an observe stream took it
            try:
                pending = Pending.decode(text)
            except (ValueError, KeyError, TypeError) as exc:  # not a payload we wrote
                log.error("unreadable pending response of %s: %r", request_id, exc)
                continue
            try:
                # Charged at the estimate (a budget not named is; the tokens stay as reserved).
                charged = await self.host.state.reconcile(
                    org, request_id, actual_usd={}, actual_tokens={}
                )
            except StateError as exc:
                # Taken, so audited still; the reservation goes back at its ttl.
                log.warning("could not charge the unobserved response of %s: %s", request_id, exc)
                charged = False
            settled += 1
            self.unobserved += 1
            log.warning(
                "no observe stream reported the answer of %s within %.0f s: charged at its "
                "estimate (is the observe filter in Envoy's configuration?)",
                request_id,
                self.timeout_s,
            )
            # Nothing was left to charge when the reservation was gone already (long expired).
            self._emit(pending, None, pending.estimated_usd if charged else None, UNOBSERVED)
        return settled

    def stream(self) -> ObserveStream:
        self.streams += 1
        return ObserveStream(self)

    def _emit(
        self,
        pending: Pending,
        usage: Usage | None,
        cost: float | None,
        error_code: str | None,
        response: Any = None,
    ) -> None:
        r = pending.record
        latency_us = (self.host.clock.wall_ns() - timestamp_ns(r.timestamp)) // 1000
        record = replace(
            r,
            usage=RecordUsage(usage.input_tokens, usage.output_tokens) if usage else None,
            cost_usd=cost,
            latency_us=max(0, latency_us),
            error_code=error_code or r.error_code,
            response_model=response.model if response is not None else None,
            response_id=response.id if response is not None else None,
            finish_reasons=response.finish_reasons if response is not None else (),
        )
        try:
            self.host.sink.emit(record, trace_context=pending.trace_context)
        except PolicyExtprocError as exc:
            log.error("could not audit the response of %s: %s", r.request_id, exc)


class ObserveStream:
    """One observability-mode stream: the answer of one request, read, never answered."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.key: tuple[str, str] | None = None  # (org, request id)
        self.api = ""
        self.status = 0
        self.streaming = False
        self.sse: SseParser | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False

    async def feed(self, ev: Event, own: Mapping[str, Any] | None) -> bool:
        """Read one message; False when nothing more is wanted (the servicer closes)."""
        try:
            if ev.phase == "response_headers":
                return await self._headers(ev, own)
            if ev.phase == "response_body" and self.key is not None:
                self._body(ev.body)
                if ev.end_of_stream:
                    await self._finish()
                    return False
                return True
        except Exception:  # the answer is out already: log, never fail the stream
            log.exception("observe stream: reading the answer failed")
        return False

    async def _headers(self, ev: Event, own: Mapping[str, Any] | None) -> bool:
        if not (own or {}).get("observe"):
            return False  # not marked: no pending response, nothing of ours to account
        org = str((own or {}).get("org") or "")
        request_id = str((own or {}).get("request_id") or "")
        api = str((own or {}).get("api") or "")
        if not (org and request_id and api in BY_API):
            return False  # no pending response: not ours to account
        self.key, self.api = (org, request_id), api
        status = ev.headers.get(":status", "0")
        self.status = int(status) if status.isdigit() else 0
        self.streaming = is_stream(ev.headers.get("content-type", ""))
        if self.streaming:
            self.sse = SseParser(api)
        if ev.end_of_stream:
            await self._finish()
            return False
        return True

    def _body(self, chunk: bytes) -> None:
        if self.sse is not None:
            self.sse.feed(chunk)
            return
        self.size += len(chunk)
        if self.size <= self.observer.host.config.max_body_bytes:
            self.chunks.append(chunk)
        else:
            self.chunks = []  # over Envoy's own limit: no usage to read, charged at the estimate

    async def _take(self) -> Pending | None:
        assert self.key is not None
        state = self.observer.host.state
        for wait in (*_TAKE_WAITS_S, None):
            text = await state.pending_take(*self.key)
            if text is not None:
                return Pending.decode(text)
            if wait is None:
                return None  # settled by the sweep already, or never kept
            await asyncio.sleep(wait)
        return None

    async def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        pending = await self._take()
        if pending is None:
            return
        usage, counted, info = self._usage()
        host = self.observer.host
        price = partial(limits.price, host.catalog, host.config.limits, pending.model)
        charged = settlement(
            Seen(self.status, usage, counted), input_tokens=pending.input_tokens, price=price
        )
        org, request_id = self.key  # type: ignore[misc]
        try:
            keys = {"budget_keys": pending.budget_keys, "token_keys": pending.token_keys}
            await apply(host.state, org, request_id, charged, **keys)
        except StateError as exc:
            log.warning("could not settle the reservation of %s: %s", request_id, exc)
        cost = charged.charged_usd(pending.estimated_usd)
        if charged.error_code is not None:
            self.observer._emit(pending, None, cost, charged.error_code, info)
        elif usage is not None or info is not None:
            self.observer._emit(pending, usage, cost, None, info)

    def _usage(self) -> tuple[Usage | None, int | None, Any]:
        """The usage reported, the output text counted (None: not read) and the answer's info."""
        if self.sse is not None:
            self.sse.flush()
            return self.sse.usage, self.sse.output_tokens, self.sse.info
        if not self.chunks or not 200 <= self.status < 300:
            return None, None, None  # (over the body limit: not read)
        try:
            resp = parse_response(self.api, b"".join(self.chunks))  # type: ignore[arg-type]
        except PolicyExtprocError:
            return None, None, None
        return resp.usage, resp.output_tokens, resp.info

    def close(self) -> None:
        """The stream ended; an answer not read to its end is left to the sweep."""


__all__ = ["Expect", "ObserveStream", "Observer", "Pending", "mark"]
