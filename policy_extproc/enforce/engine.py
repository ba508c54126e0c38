"""Decides requests and watches responses: the core, the state backend and the audit, wired.

The engine is the only async part of the decision path. It runs the request pipeline
(``pipeline.py``: the request-only rules, then the stateful checks of ``stateful.py``), and
refuses what only a live request can be refused for (identity, size, Envoy's deadline). Its
audit records and follow-ups are effects (``effects.py``) put in the exchange's outbox, which
the driver has ``perform``ed before the answer goes back to Envoy (the audit log append is one
``os.write``: a kill -9 after the answer cannot lose the record); follow-ups (settlements,
breaker outcomes) then run off the response path. The response is read by ``watch.py``; the
exchange's data is ``exchange.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from ..audit.builder import record_for
from ..audit.record import AuditRecord
from ..audit.sink import AuditSink
from ..errors import (
    BodyTooLarge,
    EnvoyGaveUp,
    Overloaded,
    PolicyExtprocError,
    RequestError,
)
from ..llm.catalog import Catalog
from ..policy.compiler import EffectiveSet
from ..policy.context import build_context, require_identity
from ..policy.decision import Decision
from ..sources.store import PolicyStore
from ..state.base import StateBackend
from ..state.memory import MemoryState
from . import answers, guard, limits, pipeline, watch
from .alerts import AlertNotifier
from .clock import SYSTEM_CLOCK, Clock
from .config import DEFAULT_MAX_BODY, EngineConfig
from .effects import Audit, Effect
from .exchange import Exchange
from .failover import default_provider
from .observe import Observer
from .settle import Background, RecordOutcome, Release, Seen, Settle
from .stateful import Stateful, StatefulChecks
from .work import WorkRunner, check_budget


class RedactionUnavailable(PolicyExtprocError):
    """ext_authz cannot rewrite a body: a request that must be redacted is refused instead."""

    code = "redaction_unavailable"
    http_status = 403


class Engine:
    """Turns request phases into decisions and audit records."""

    def __init__(
        self,
        store: PolicyStore,
        sink: AuditSink,
        config: EngineConfig | None = None,
        *,
        catalog: Catalog,
        state: StateBackend | None = None,
        alerts: AlertNotifier | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.sink = sink
        self.config = config or EngineConfig()
        self.state: StateBackend = state if state is not None else MemoryState()
        self.catalog = catalog  # read by the edge (sources.catalog), never here
        self.degraded_count = 0  # decisions admitted without the state backend (fail open)
        # Set by the server when it stops: a stream cut from then on gets a response record.
        self.stopping = False
        self.alerts = alerts if alerts is not None else AlertNotifier(None)
        self.background = Background()  # settlements and breaker outcomes, off the answer
        self.work = WorkRunner(self.config.work, self.config.identity, self.catalog)
        self.clock = clock  # the one the driver reads too: deadlines compare like with like
        self.observer = Observer(self)  # response accounting by the observe filter

    @property
    def checks(self) -> StatefulChecks:
        """The stateful checks, with the configuration as it is now (tests replace it)."""
        return StatefulChecks(self.state, self.catalog, self.config.limits, self.clock)

    def begin(
        self, headers: Mapping[str, str], claims: Mapping[str, Any] | None = None
    ) -> Exchange:
        return Exchange(headers=headers, started_ns=self.clock.wall_ns(), claims=claims)

    def needs_response(self, ex: Exchange) -> bool:
        """Whether any rule in the request's scope reads the response (usage, output, status).

        Decided on the request headers, from the identity alone: when nothing does, Envoy is
        told to skip the response phases, and its route configuration adds x-policy-decision
        from our dynamic metadata instead. Usage alone may be left to the observe filter.
        """
        if self.config.record_usage or not self.store.ready:
            return True
        # The scope's snapshot is the one the request is decided on, even if another is
        # swapped in meanwhile.
        es = self._scope(ex)
        if es.reads_response or not limits.needs_usage(es):
            return es.reads_response
        ex.held.observed = self.config.response_accounting == "observe"  # observe.py
        return not ex.held.observed

    def early_refusal(self, ex: Exchange) -> Decision | None:
        """A decision that needs no body: an identity missing or ambiguous, a declared length
        over the limit."""
        refused = self._identity_refusal(ex)
        if refused is not None:
            return refused
        length = ex.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.config.max_body_bytes:
            exc = BodyTooLarge(
                f"request body of {length} bytes is over the limit of "
                f"{self.config.max_body_bytes} bytes"
            )
            return self.refuse(ex, exc)
        if length.isdigit() and self.store.ready and self.config.work.budget:
            try:
                check_budget(self.config.work, self._scope(ex), int(length))
            except RequestError as exc:
                return self.refuse(ex, exc)
        return None

    def _scope(self, ex: Exchange) -> EffectiveSet:
        """The rules in force for the exchange's identity (headers and claims, no body)."""
        if ex.scope is None:
            if ex.snapshot is None:
                ex.snapshot = self.store.current
            ctx = build_context(
                ex.headers, None, claims=ex.claims, config=self.config.identity, strict=False
            )
            ex.scope = ex.snapshot.resolve(ctx.org, ctx.team, ctx.environment)
        return ex.scope

    def extension_s(self, size: int) -> float | None:
        """Seconds to ask Envoy for while a body of ``size`` bytes is examined (None: none)."""
        return self.work.extension_s(size)

    async def decide_request(
        self,
        ex: Exchange,
        body: bytes,
        *,
        complete: bool,
        claims: Mapping[str, Any] | None = None,
        redact: bool = True,
    ) -> tuple[Decision, bytes | None]:
        """The decision for a request whose body (possibly empty) has arrived, and its new body.

        ``redact=False`` (ext_authz, which cannot rewrite a body): a request that a policy
        wants redacted is refused, with one audit record for it.
        """
        if claims is None:
            claims = ex.claims
        elif claims is not ex.claims:
            ex.claims, ex.scope, ex.identity_ok = claims, None, False
        refused = self._identity_refusal(ex)
        if refused is not None:
            return refused, None
        if not complete or len(body) > self.config.max_body_bytes:
            return self.refuse(
                ex,
                BodyTooLarge(
                    f"request body is over the limit of {self.config.max_body_bytes} bytes"
                ),
            ), None
        if ex.snapshot is None:
            ex.snapshot = self.store.current
        snapshot = ex.snapshot
        try:
            if self.config.work.budget:
                check_budget(self.config.work, self._scope(ex), len(body))
            examined = await self.work.examine(snapshot, ex.headers, claims, body)
        except RequestError as exc:
            ex.ctx = build_context(
                ex.headers, None, claims=claims, config=self.config.identity, strict=False
            )
            return self.refuse(ex, exc), None
        ex.request = request = examined.request
        ex.ctx = ctx = examined.ctx
        ex.es = es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
        try:
            ruled = await pipeline.rule(self.checks, es, examined, ex.request_id)
        except PolicyExtprocError as exc:  # missing identity, state unavailable (closed),
            return self.refuse(ex, exc), None  # an approval id that does not fit
        self._hold(ex, ruled.stateful)
        decision = ruled.decision
        fields, ex.held.hide_usage = pipeline.usage_fields(request, ex.held.plan is not None)
        new_body = pipeline.rewritten(request, decision, fields)
        if not redact and decision.action == "modify":
            rule = f"{decision.policy}/{decision.rule}"
            self._unreserve(ex)
            unavailable = RedactionUnavailable(
                f"this request must be redacted ({rule}), which ext_authz cannot do; "
                "route it through the ext_proc filter"
            )
            return self.refuse(ex, unavailable, fired=decision), None
        if ex.deadline_ns is not None and self.clock.monotonic_ns() > ex.deadline_ns:
            # Envoy has stopped waiting: whatever we answer now, the client has its 504 and
            # the request never reaches the provider. Say so, instead of what was decided.
            self._unreserve(ex)
            return self.refuse(
                ex, EnvoyGaveUp("the decision took longer than Envoy waits for it")
            ), None
        ex.decision = decision
        self._audit(ex, decision)
        if ex.held.observed:  # the observe stream settles it, and writes its response record
            self.observer.expect(ex, self._record)
        return decision, new_body

    def _hold(self, ex: Exchange, st: Stateful) -> None:
        """Keep what the stateful checks admitted, and send the alerts they raised."""
        ex.held.plan, ex.held.route = st.plan, st.route
        if st.degraded_admission:
            self.degraded_count += 1
        for notice in st.notices:
            if notice.key is None:
                self.alerts.notify(dict(notice.payload))
            else:
                self.alerts.notify(dict(notice.payload), key=notice.key)

    def _unreserve(self, ex: Exchange) -> None:
        """Give back what was admitted for a request that is refused after all."""
        if ex.held.plan is not None:
            ex.held.plan = None
            ex.outbox.append(Release(ex.ctx.org or "-", ex.request_id))

    def _identity_refusal(self, ex: Exchange) -> Decision | None:
        """Refuse (audited) a request whose identity is ambiguous or names no organisation."""
        if ex.identity_ok:  # checked on the headers already (ext_proc); the body brings none
            return None
        try:
            ctx = build_context(ex.headers, None, claims=ex.claims, config=self.config.identity)
            require_identity(ctx, self.config.identity)
        except RequestError as exc:
            return self.refuse(ex, exc)
        ex.identity_ok = True
        return None

    def refuse(
        self, ex: Exchange, exc: PolicyExtprocError, *, fired: Decision | None = None
    ) -> Decision:
        """Refuse the request for an error, audited with whatever identity it carried.

        ``fired``: the decision the rules took, whose rule and firings the refusal names.
        """
        decision = answers.request_error(exc)
        if fired is not None:
            decision = replace(
                decision,
                policy=fired.policy,
                rule=fired.rule,
                fired=fired.fired,
                compliance=fired.compliance,
            )
        return self._failed(ex, exc, decision)

    def shed(self, ex: Exchange, exc: Overloaded) -> Decision:
        """Shed by admission control: refused (503), or on a fail-open route let through
        unchecked (allow, code overloaded); audited either way."""
        decision = answers.request_error(exc)
        if exc.fail_open:
            decision = replace(decision, action="allow", http_status=200)
        return self._failed(ex, exc, decision)

    def _failed(self, ex: Exchange, exc: PolicyExtprocError, decision: Decision) -> Decision:
        ex.error_code = exc.code
        ex.outcome = getattr(exc, "outcome", None)
        if not ex.ctx.org and not ex.ctx.user and (ex.headers or ex.claims):
            ex.ctx = build_context(
                ex.headers, None, claims=ex.claims, config=self.config.identity, strict=False
            )
        ex.decision = decision
        if ex.snapshot is None and self.store.ready:
            ex.snapshot = self.store.current
        self._audit(ex, decision)
        return decision

    def _audit(self, ex: Exchange, decision: Decision, **extra: Any) -> None:
        ex.outbox.append(Audit(self._record(ex, decision, **extra), ex.trace_context))

    def _record(self, ex: Exchange, decision: Decision, **extra: Any) -> AuditRecord:
        latency_us = (self.clock.wall_ns() - ex.started_ns) // 1000
        ctx = ex.ctx if ex.ctx.request_id else replace(ex.ctx, request_id=ex.request_id)
        trace_id = None
        tp = ex.headers.get("traceparent", "")
        if tp.count("-") >= 3:
            trace_id = tp.split("-")[1]
        if "provider" not in extra:
            # Where the request goes: the route taken, else where Envoy's routes send it.
            if ex.held.route is not None:
                extra["provider"] = ex.held.route.provider
            elif ex.request is not None:
                extra["provider"] = default_provider(ex.request, self.catalog)
        known = self.catalog.provider(decision.reroute or extra.get("provider") or "")
        if known is not None and known.address:
            extra["server"] = (known.address, known.port)  # the spans' server.address / port
        return record_for(
            decision,
            ctx,
            started_ns=ex.started_ns,
            latency_us=latency_us,
            policy_version=ex.snapshot.version if ex.snapshot else "",
            trace_id=trace_id,
            error_code=ex.error_code,
            outcome=ex.outcome,
            **extra,
        )

    # -- responses -------------------------------------------------------------------------

    def response_started(self, ex: Exchange, headers: Mapping[str, str]) -> None:
        w, hide, holdback = ex.response, ex.held.hide_usage, self.config.stream_holdback
        rid = ex.request_id
        watch.start(
            w, headers, ex.request, ex.es, request_id=rid, hide_usage=hide, holdback=holdback
        )
        r = ex.held.route
        if r is not None and r.rule is not None and w.status:
            ex.outbox.append(RecordOutcome(r.rule, r.provider, w.status, self.clock.wall_s()))

    def response_chunk(
        self, ex: Exchange, chunk: bytes, end: bool
    ) -> tuple[bytes | None, Decision | None]:
        """Watch the response body for usage and output rules; finish at its end.

        Returns the bytes to send instead of ``chunk`` (None: unchanged) and, for a buffered
        answer a rule refuses, the decision to answer the client with instead.
        """
        out, refusal = watch.feed(ex.response, ex.request, ex.es, chunk, end)
        if end:
            self.finish(ex)
        return out, refusal

    def finish(self, ex: Exchange, *, cut: bool = False) -> None:
        """The response is over (or the stream closed, ``cut``): record what it cost."""
        w = ex.response
        if w.finished or ex.decision is None or ex.request is None or ex.held.observed:
            return  # (observed: the observe stream settles it and writes its record)
        w.finished = True
        shutdown = cut and self.stopping
        if shutdown:
            ex.error_code = "stream_cut_by_shutdown"  # the record says why no usage came
        watch.conclude(w, ex.request)
        model = ex.ctx.model or ex.request.model  # priced as judged (an Azure deployment's)
        plan, job = ex.held.plan, None
        cost = None if w.usage is None else self.catalog.cost(model, w.usage)
        if plan is not None:
            price = partial(limits.price, self.catalog, self.config.limits, model)
            seen = Seen(w.status, w.usage, None if cut else w.output_tokens)
            job = Settle.of(ex.ctx.org or "-", ex.request_id, plan, seen, price)
            cost = job.settlement.charged_usd(plan.estimated_usd)  # None: not charged
            if job.settlement.error_code is not None and not shutdown:
                ex.error_code = ex.error_code or job.settlement.error_code
        unreported = job is not None and job.settlement.error_code is not None
        if w.usage or w.findings is not None or w.answer is not None or shutdown or unreported:
            # The response record: usage, cost, what the answer said about itself, and the
            # output guardrails' decision (else the request's, without the alerts that were the
            # request record's own). An answer that reported no usage gets one too, saying what
            # it was charged instead (usage_not_reported), as the observe stream's does.
            decision = replace(ex.decision, alerts=())
            if w.findings is not None and ex.es is not None:
                decision = guard.response_decision(w.findings, ex.es)
            usage = (w.usage.input_tokens, w.usage.output_tokens) if w.usage else None
            extra = {"usage": usage, "cost_usd": cost, "response": w.answer}
            self._audit(ex, decision, phase="response", **extra)
        if job is not None:
            ex.outbox.append(job)

    def perform(self, effects: Iterable[Effect]) -> None:
        """Do the I/O an exchange asked for (``Exchange.take_effects``), in order: write its
        audit records, start its follow-ups. A record that cannot be written raises, and what
        was asked after it (which followed from it) is not done, as if the code after a failed
        write had not run."""
        for effect in effects:
            if isinstance(effect, Audit):
                self.sink.emit(effect.record, trace_context=effect.trace_context)
            else:
                self.background.spawn(self.state, effect)

    async def drain(self) -> None:
        """Wait for background settlements (shutdown)."""
        await self.background.drain()

    def close(self) -> None:
        """Stop the worker processes (shutdown, after the streams have drained)."""
        self.work.close()


__all__ = ["DEFAULT_MAX_BODY", "Engine", "EngineConfig", "RedactionUnavailable"]
