"""Decides requests and watches responses: the core, the state backend and the audit, wired.

The engine is the only async part of the decision path. It asks the pure core for everything it
can decide from the request alone, then the stateful checks, and writes the audit record before
the answer goes back to Envoy (the audit log append is one ``os.write``: a kill -9 after the
answer cannot lose the record).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..audit.builder import record_for
from ..audit.sink import AuditSink
from ..errors import (
    BodyTooLarge,
    EnvoyGaveUp,
    PolicyExtprocError,
    RequestError,
    StateError,
)
from ..llm.apis import BY_API
from ..llm.catalog import Catalog, load_catalog
from ..llm.request import LlmRequest, rewrite_request
from ..llm.response import (
    SseParser,
    Usage,
    UsageChunkFilter,
    is_stream,
    parse_response,
    rewrite_response,
)
from ..policy.compiler import EffectiveRule, EffectiveSet, Snapshot
from ..policy.compliance import PACKS
from ..policy.context import DEFAULT_IDENTITY, IdentityConfig, build_context, require_identity
from ..policy.decision import Decision, Fired, RequestContext
from ..policy.evaluator import Findings, check_response, decide
from ..policy.store import PolicyStore
from ..state.base import StateBackend
from ..state.memory import MemoryState
from . import answers, approvals, failover, guard, limits
from .alerts import AlertNotifier
from .failover import default_provider
from .limits import needs_state, needs_usage
from .work import WorkRunner, WorkSettings, check_budget

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 4 * 1024 * 1024  # agrees with envoy/envoy.yaml's buffer limits (DESIGN s8)
_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_body_bytes: int = DEFAULT_MAX_BODY
    identity: IdentityConfig = DEFAULT_IDENTITY
    limits: limits.Settings = field(default_factory=limits.Settings)
    # Read every response for its usage, even where no rule needs it (audit completeness at
    # the cost of two more ext_proc messages per request).
    record_usage: bool = False
    stream_holdback: int = guard.DEFAULT_HOLDBACK
    # Decide requests that name no organisation (by the policies of empty scope) instead of
    # refusing them with missing_identity; the same switch as ``identity.allow_anonymous``.
    allow_anonymous: bool = False
    # The work budget and where large bodies are examined (enforce/work.py).
    work: WorkSettings = field(default_factory=WorkSettings)
    # Envoy's ext_proc message_timeout (envoy/*.yaml): a decision that would reach Envoy after
    # it gave up is refused and audited as such, never recorded as what the client got.
    message_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        # One setting, two spellings: either turns it on, and both then say so.
        if self.allow_anonymous and not self.identity.allow_anonymous:
            object.__setattr__(self, "identity", replace(self.identity, allow_anonymous=True))
        elif self.identity.allow_anonymous:
            object.__setattr__(self, "allow_anonymous", True)


class RedactionUnavailable(PolicyExtprocError):
    """ext_authz cannot rewrite a body: a request that must be redacted is refused instead."""

    code = "redaction_unavailable"
    http_status = 403


@dataclass(slots=True)
class Exchange:
    """One request and its response as the engine sees them, from headers to the last byte."""

    headers: Mapping[str, str]
    started_ns: int
    # Verified JWT claims (Envoy's jwt_authn metadata): they name the caller in every record of
    # the exchange, refusals included, ahead of the headers a client can set (DESIGN.md s4).
    claims: Mapping[str, Any] | None = None
    ctx: RequestContext = field(default_factory=RequestContext)
    decision: Decision | None = None
    snapshot: Snapshot | None = None
    es: EffectiveSet | None = None
    request: LlmRequest | None = None
    status: int = 0
    streaming: bool = False
    sse: SseParser | None = None
    response_chunks: list[bytes] = field(default_factory=list)
    usage: Usage | None = None
    finished: bool = False
    error_code: str | None = None
    # What the client got when it is not the decision (Envoy gave up, the stream was reset).
    outcome: str | None = None
    # time.monotonic_ns() after which Envoy no longer waits for the message being decided.
    deadline_ns: int | None = None
    scope: EffectiveSet | None = None  # the rules in force for the identity, before the body
    identity_ok: bool = False  # the identity was checked (one org, no ambiguity): not again
    plan: limits.Plan | None = None  # limiters and budgets admitted, to reconcile at the end
    route: failover.Route | None = None  # where it went, and the breaker watching that provider
    guarded: bool = False  # output guardrails apply to this answer
    stream_guard: guard.StreamGuard | None = None  # ... and it is streamed
    # We asked the stream for usage the client did not ask for (_set_fields): the usage-only
    # chunk is removed from what the client gets (usage_filter, once the answer streams).
    hide_usage: bool = False
    usage_filter: UsageChunkFilter | None = None
    response_findings: Findings | None = None
    request_id_fallback: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def request_id(self) -> str:
        # Envoy generates x-request-id (generate_request_id); direct gRPC callers may not.
        return self.headers.get("x-request-id") or self.request_id_fallback

    @property
    def trace_context(self) -> dict[str, str] | None:
        tc = {k: self.headers[k] for k in _TRACE_HEADERS if k in self.headers}
        return tc or None


class Engine:
    """Turns request phases into decisions and audit records."""

    def __init__(
        self,
        store: PolicyStore,
        sink: AuditSink,
        config: EngineConfig | None = None,
        *,
        state: StateBackend | None = None,
        catalog: Catalog | None = None,
        alerts: AlertNotifier | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.config = config or EngineConfig()
        self.state: StateBackend = state if state is not None else MemoryState()
        self.catalog = catalog if catalog is not None else load_catalog()
        self.degraded_count = 0  # decisions admitted without the state backend (fail open)
        # Set by the server when it stops: a stream cut from then on gets a response record.
        self.stopping = False
        self.alerts = alerts if alerts is not None else AlertNotifier(None)
        self._background: set[asyncio.Task[None]] = set()
        self.work = WorkRunner(self.config.work, self.config.identity, self.catalog)

    def begin(
        self, headers: Mapping[str, str], claims: Mapping[str, Any] | None = None
    ) -> Exchange:
        return Exchange(headers=headers, started_ns=time.time_ns(), claims=claims)

    def needs_response(self, ex: Exchange) -> bool:
        """Whether any rule in the request's scope reads the response (usage, output, status).

        Decided on the request headers, from the identity alone: when nothing does, Envoy is
        told to skip the response phases, and its route configuration adds x-policy-decision
        from our dynamic metadata instead.
        """
        if self.config.record_usage or not self.store.ready:
            return True
        # The scope's snapshot is the one the request is decided on, even if another is
        # swapped in meanwhile.
        es = self._scope(ex)
        return (
            needs_usage(es)
            or bool(es.content["response"])
            or es.semantic_response
            or bool(es.rules_of("failover"))
            or bool(es.rules_of("compliance"))
            or any(e.rule.direction != "request" for e in es.rules_of("pii"))  # type: ignore[attr-defined]
        )

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
        findings = examined.findings
        extra: dict[str, Any] = {}
        if request is not None and _passes(findings):
            try:
                extra = await self._stateful(ex, es, ctx, findings)
            except PolicyExtprocError as exc:  # missing identity, state unavailable (closed),
                return self.refuse(ex, exc), None  # an approval id that does not fit
        decision = decide(es, ctx, findings, **extra)
        if decision.action == "throttle" and decision.throttle is not None:
            decision = replace(decision, code=decision.throttle.code)
        new_body = None
        fields = self._set_fields(ex)
        if (
            request is not None
            and (decision.new_texts or decision.reroute_model or fields)
            and decision.action in ("allow", "modify")
        ):
            # A reroute's model mapping rewrites ``model`` too (DESIGN.md s7).
            new_body = rewrite_request(
                request, decision.new_texts, model=decision.reroute_model, set_fields=fields
            )
        if not redact and decision.action == "modify":
            rule = f"{decision.policy}/{decision.rule}"
            self._unreserve(ex)
            unavailable = RedactionUnavailable(
                f"this request must be redacted ({rule}), which ext_authz cannot do; "
                "route it through the ext_proc filter"
            )
            return self.refuse(ex, unavailable, fired=decision), None
        if ex.deadline_ns is not None and time.monotonic_ns() > ex.deadline_ns:
            # Envoy has stopped waiting: whatever we answer now, the client has its 504 and
            # the request never reaches the provider. Say so, instead of what was decided.
            self._unreserve(ex)
            return self.refuse(
                ex, EnvoyGaveUp("the decision took longer than Envoy waits for it")
            ), None
        ex.decision = decision
        self._audit(ex, decision)
        return decision, new_body

    def _unreserve(self, ex: Exchange) -> None:
        """Give back what was admitted for a request that is refused after all."""
        if ex.plan is not None:
            ex.plan = None
            self._spawn(self._release(ex.ctx.org or "-", ex.request_id))

    async def _release(self, org: str, request_id: str) -> None:
        try:
            await self.state.release(org, request_id)
        except StateError as exc:
            log.warning("could not release the reservation of %s: %s", request_id, exc)

    async def _stateful(
        self, ex: Exchange, es: EffectiveSet, ctx: RequestContext, findings: Findings
    ) -> dict[str, Any]:
        """Approvals, limits and budgets, failover: the checks that need shared state."""
        assert ctx.request is not None
        extra: dict[str, Any] = {}
        presented = None
        est = None  # estimated once, for approvals and budgets alike
        if es.rules_of("approval"):
            est = limits.estimate(ctx.request, self.catalog, self.config.limits)
            triggers = approvals.triggered(es, ctx, est.usd)
            for t in triggers:
                if t.rule.policy.policy.mode == "log":
                    findings.fire(t.rule, "escalate", t.reason)  # shadow: would escalate
            enforced = [t for t in triggers if t.rule.policy.policy.mode == "enforce"]
            if enforced and ctx.approval_id:
                presented = await approvals.check_presented(self.state, ctx)
            elif enforced:
                approval = await approvals.open_approval(self.state, ctx, enforced[0], est.usd)
                for t in enforced:
                    findings.fire(t.rule, "escalate", t.reason)
                self.alerts.notify(
                    {
                        "type": "approval_required",
                        "approval_id": approval.id,
                        "org": ctx.org,
                        "user": ctx.user,
                        **approval.details,
                    },
                    key=(enforced[0].rule.policy_name, enforced[0].rule.rule.id, ctx.user),
                )
                return {
                    "approval_id": approval.id,
                    "alerts": (f"approval {approval.id} requested",),
                }
        if needs_state(es):
            extra = await self._admit(ex, es, ctx, findings, est)
        if presented is not None and _passes(findings, also=("throttle",)):
            # Used only by a request that goes through: a throttled one keeps its approval.
            try:
                await approvals.consume(self.state, ctx, presented)
            except PolicyExtprocError:
                if ex.plan is not None:  # admitted, but the approval was used meanwhile
                    await self.state.release(ctx.org or "-", ex.request_id)
                    ex.plan = None
                raise
            findings.fired.append(
                Fired(
                    presented.details.get("policy", ""),
                    presented.details.get("rule", "approval"),
                    "approval",
                    "allow",
                    f"approved by {presented.approver} ({presented.id})",
                )
            )
        if es.rules_of("failover") and _passes(findings):
            extra.update(await self._route(ex, es, ctx, findings))
        self._residency(ex, es, ctx, findings)
        return extra

    def _residency(
        self, ex: Exchange, es: EffectiveSet, ctx: RequestContext, findings: Findings
    ) -> None:
        """GDPR pack: personal data goes only to providers the catalog marks EU-resident."""
        assert ctx.request is not None
        for e in es.rules_of("compliance"):
            if not PACKS[e.rule.framework].eu_only:  # type: ignore[attr-defined]
                continue
            provider = (
                ex.route.provider if ex.route else default_provider(ctx.request, self.catalog)
            )
            info = self.catalog.provider(provider)
            if info is None or not info.eu_resident:
                mode = "log" if e.rule.mode == "log" else None  # type: ignore[attr-defined]
                findings.fire(
                    e,
                    "block",
                    f"{e.rule.framework}: provider {provider} is not "  # type: ignore[attr-defined]
                    "EU-resident (catalog)",
                    mode,
                )

    async def _route(
        self, ex: Exchange, es: EffectiveSet, ctx: RequestContext, findings: Findings
    ) -> dict[str, Any]:
        assert ctx.request is not None
        try:
            r = await failover.route(self.state, es, ctx.request, self.catalog)
        except StateError as exc:
            # Breakers unreadable: send the request where it was going anyway.
            log.warning("circuit breaker state unavailable: %s", exc)
            return {"degraded": ("breaker_unavailable:open",)}
        ex.route = r
        if r.fired is not None:
            findings.fired.append(r.fired)
        return {"reroute": r.reroute, "reroute_model": r.model} if r.reroute else {}

    async def _admit(
        self,
        ex: Exchange,
        es: EffectiveSet,
        ctx: RequestContext,
        findings: Findings,
        est: limits.Estimate | None,
    ) -> dict[str, Any]:
        """Consume every limiter and reserve every budget of the request, all or none."""
        now = time.time()
        p = limits.plan(es, ctx, self.catalog, self.config.limits, now, est)
        if p.empty:
            return {}
        alerts = (
            []
            if p.price_known
            else [
                f"model {ctx.request.model!r} has no price in the "  # type: ignore[union-attr]
                "catalog: cost estimated at the fallback price"
            ]
        )
        try:
            adm = await self.state.admit(
                ctx.org or "-",
                ex.request_id,
                p.limits,
                p.budgets,
                now=now,
                reservation_ttl_s=self.config.limits.reservation_ttl_s,
            )
        except StateError as exc:
            if not p.fail_open:
                raise StateError(
                    f"limits and budgets cannot be checked ({exc.message}); "
                    "failing closed (on_error: closed)"
                ) from exc
            log.warning("state backend unavailable, admitting (on_error: open): %s", exc)
            self.degraded_count += 1
            return {"degraded": ("state_unavailable:open",), "alerts": tuple(alerts)}
        oc = limits.outcome(p, adm, now)
        if adm.admitted:
            ex.plan = p
        alerts.extend(oc.alerts)
        for text in alerts:
            self.alerts.notify(
                {
                    "alert": text,
                    "org": ctx.org,
                    "team": ctx.team,
                    "user": ctx.user,
                    "model": ctx.request.model if ctx.request else None,
                    "request_id": ex.request_id,
                }
            )
        findings.fired.extend(oc.fired)
        return {"alerts": tuple(alerts), "throttle": oc.throttle}

    def _set_fields(self, ex: Exchange) -> dict[str, Any]:
        """Body fields to add: ask a streamed OpenAI answer for its usage when a budget needs it.

        The client did not ask for it, so the usage-only chunk it brings is taken out of the
        stream again (``hide_usage``): the client gets the stream it asked for.
        """
        req = ex.request
        if ex.plan is None or req is None or not req.stream:
            return {}
        if not BY_API[req.api].usage_opt_in:
            return {}  # Anthropic and the Responses API always report usage in the stream
        opts = req.body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage") is True:
            return {}
        ex.hide_usage = True
        return {
            "stream_options": {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        }

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
        latency_us = (time.time_ns() - ex.started_ns) // 1000
        ctx = ex.ctx if ex.ctx.request_id else _with_request_id(ex.ctx, ex.request_id)
        trace_id = None
        tp = ex.headers.get("traceparent", "")
        if tp.count("-") >= 3:
            trace_id = tp.split("-")[1]
        if "provider" not in extra:
            # Where the request goes: the route taken, else where Envoy's routes send it.
            if ex.route is not None:
                extra["provider"] = ex.route.provider
            elif ex.request is not None:
                extra["provider"] = default_provider(ex.request, self.catalog)
        record = record_for(
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
        self.sink.emit(record, trace_context=ex.trace_context)

    # -- responses -------------------------------------------------------------------------

    def response_started(self, ex: Exchange, headers: Mapping[str, str]) -> None:
        status = headers.get(":status", "0")
        ex.status = int(status) if status.isdigit() else 0
        r = ex.route
        if r is not None and r.rule is not None and ex.status:
            self._spawn(self._record_outcome(r.rule, r.provider, ex.status))
        ex.streaming = is_stream(headers.get("content-type", ""))
        ex.guarded = (
            ex.es is not None
            and ex.request is not None
            and 200 <= ex.status < 300
            and guard.has_response_rules(ex.es)
        )
        if ex.streaming and ex.request is not None:
            if ex.guarded:
                assert ex.es is not None
                cap = self.config.stream_holdback
                ex.stream_guard = guard.StreamGuard(
                    ex.es, ex.request.api, ex.request_id, guard.holdback(ex.es, cap)
                )
            else:
                ex.sse = SseParser(ex.request.api)
            if ex.hide_usage:
                ex.usage_filter = UsageChunkFilter(ex.request.api)
                if ex.stream_guard is None:
                    ex.sse = None  # the filter's parser reads the usage: one parse, not two

    def response_chunk(
        self, ex: Exchange, chunk: bytes, end: bool
    ) -> tuple[bytes | None, Decision | None]:
        """Watch the response body for usage and output rules; finish at its end.

        Returns the bytes to send instead of ``chunk`` (None: unchanged) and, for a buffered
        answer a rule refuses, the decision to answer the client with instead.
        """
        out: bytes | None = None
        refusal = None
        if ex.stream_guard is not None:
            out = ex.stream_guard.feed(chunk, end)
        elif ex.sse is not None:
            ex.sse.feed(chunk)
        elif ex.usage_filter is not None:
            pass  # streamed, read by the filter below
        else:
            ex.response_chunks.append(chunk)
            if end and ex.guarded:
                out, refusal = self._guard_buffered(ex)
        if ex.usage_filter is not None:
            # After the guardrails: what they let through, less the chunk we asked for.
            data = out if out is not None else chunk
            filtered = ex.usage_filter.feed(data, end)
            out = None if filtered == chunk else filtered
        if end:
            self.finish(ex)
        return out, refusal

    def _guard_buffered(self, ex: Exchange) -> tuple[bytes | None, Decision | None]:
        assert ex.request is not None and ex.es is not None
        try:
            resp = parse_response(ex.request.api, b"".join(ex.response_chunks))
        except PolicyExtprocError:
            return None, None  # not the JSON the API promises: nothing we can scan or rewrite
        findings = check_response(ex.es, resp.parts)
        if not findings.fired:
            return None, None
        ex.response_findings = findings
        decision = guard.response_decision(findings, ex.es)
        if decision.action == "block":
            return None, decision
        if findings.edits:
            return rewrite_response(resp, findings.new_texts(resp.parts)), None
        return None, None

    def finish(self, ex: Exchange, *, cut: bool = False) -> None:
        """The response is over (or the stream closed, ``cut``): record what it cost."""
        if ex.finished or ex.decision is None or ex.request is None:
            return
        ex.finished = True
        shutdown = cut and self.stopping
        if shutdown:
            ex.error_code = "stream_cut_by_shutdown"  # the record says why no usage came
        if ex.stream_guard is not None:
            ex.usage = ex.stream_guard.usage
            if ex.stream_guard.findings.fired:
                ex.response_findings = ex.stream_guard.findings
        elif ex.sse is not None:
            ex.sse.flush()  # a last event with no blank line after it still counts
            ex.usage = ex.sse.usage
        elif ex.usage_filter is not None:
            ex.usage_filter.feed(b"", True)
            ex.usage = ex.usage_filter.usage
        elif ex.response_chunks and 200 <= ex.status < 300:
            try:
                ex.usage = parse_response(ex.request.api, b"".join(ex.response_chunks)).usage
            except PolicyExtprocError:
                ex.usage = None
        cost = None
        if ex.usage is not None:
            # Priced as the model it was judged as (an Azure deployment's model), as estimated.
            cost = self.catalog.cost(ex.ctx.model or ex.request.model, ex.usage)
            if cost is None and ex.plan is not None:
                cost = limits.fallback_cost(self.config.limits, ex.usage)
        if ex.usage is not None or ex.response_findings is not None or shutdown:
            # The response record: usage, cost and the output guardrails' decision (else the
            # request's, without the alerts that were the request record's own).
            decision = replace(ex.decision, alerts=())
            if ex.response_findings is not None and ex.es is not None:
                decision = guard.response_decision(ex.response_findings, ex.es)
            usage = (ex.usage.input_tokens, ex.usage.output_tokens) if ex.usage else None
            self._audit(ex, decision, usage=usage, cost_usd=cost, phase="response")
        if ex.plan is not None:
            self._spawn(self._settle(ex, ex.plan, ex.usage, cost))

    async def _record_outcome(self, rule: EffectiveRule, provider: str, status: int) -> None:
        try:
            await failover.record(self.state, rule, provider, status)
        except StateError as exc:
            log.warning("could not record %s's response in its breaker: %s", provider, exc)

    async def _settle(
        self, ex: Exchange, p: limits.Plan, usage: Usage | None, cost: float | None
    ) -> None:
        """Replace the reservation with the real cost, or give it back (provider error)."""
        org = ex.ctx.org or "-"
        try:
            if usage is not None and cost is not None and 200 <= ex.status < 300:
                tokens = usage.input_tokens + usage.output_tokens
                await self.state.reconcile(
                    org,
                    ex.request_id,
                    actual_usd=dict.fromkeys(p.budget_keys, cost),
                    actual_tokens=dict.fromkeys(p.token_keys, tokens),
                )
            elif ex.status >= 400 or (ex.status and usage is None and not ex.streaming):
                # The provider refused or failed: nothing was spent.
                await self.state.release(org, ex.request_id)
            # A stream cut short keeps its reservation until it expires: the provider may have
            # charged for what it generated, and the estimate is the better guess.
        except StateError as exc:
            log.warning("could not settle the reservation of %s: %s", ex.request_id, exc)

    def _spawn(self, coro: Any) -> None:
        # Off the response path: the client's bytes never wait for Redis.
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background settlements (shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def close(self) -> None:
        """Stop the worker processes (shutdown, after the streams have drained)."""
        self.work.close()


def _with_request_id(ctx: RequestContext, request_id: str) -> RequestContext:
    from dataclasses import replace

    return replace(ctx, request_id=request_id)


def _passes(findings: Findings, also: tuple[str, ...] = ()) -> bool:
    """Whether nothing enforced refuses the request so far (only then is state consumed)."""
    refusing = ("block", "escalate", *also)
    return not any(f.mode == "enforce" and f.action in refusing for f in findings.fired)
