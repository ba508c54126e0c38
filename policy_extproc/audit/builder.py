"""Decision + request context -> the audit record of DESIGN.md s9 (types and counts, no text)."""

from __future__ import annotations

from ..llm.response import ResponseInfo
from ..policy.decision import Decision, RequestContext
from .record import AuditRecord, FiredRule, Usage, redaction_counts, utc_timestamp


def record_for(
    decision: Decision,
    ctx: RequestContext,
    *,
    started_ns: int | None = None,
    latency_us: int = 0,
    policy_version: str = "",
    provider: str | None = None,
    usage: tuple[int, int] | None = None,
    cost_usd: float | None = None,
    trace_id: str | None = None,
    error_code: str | None = None,
    phase: str = "request",
    outcome: str | None = None,
    response: ResponseInfo | None = None,
    server: tuple[str, int | None] | None = None,
) -> AuditRecord:
    """The audit record of one decision."""
    # The model as judged and priced (canonical, an Azure deployment resolved), else as sent.
    model = ctx.model or (ctx.request.model if ctx.request is not None else "") or None
    return AuditRecord(
        decision=decision.action,
        policy=decision.policy,
        rule=decision.rule,
        reason=decision.reason,
        user=ctx.user or None,
        environment=ctx.environment or None,
        timestamp=utc_timestamp(started_ns),
        request_id=ctx.request_id or None,
        org=ctx.org or None,
        team=ctx.team or None,
        model=model,
        provider=decision.reroute or provider,
        mode=decision.mode,
        would_decide=decision.would_decide,
        compliance=decision.compliance,
        fired=tuple(
            FiredRule(f.policy, f.rule, f.action if f.mode == "enforce" else f"{f.action}:log")
            for f in decision.fired
        ),
        redactions=redaction_counts(decision.redactions),
        usage=Usage(*usage) if usage is not None else None,
        cost_usd=cost_usd,
        latency_us=max(0, latency_us),
        policy_version=policy_version,
        # Only failures (malformed input, state unavailable, ...): a policy block is no error.
        error_code=error_code,
        alerts=decision.alerts,
        degraded=decision.degraded,
        trace_id=trace_id,
        phase=phase,
        outcome=outcome,
        api=ctx.request.api if ctx.request is not None else None,
        response_model=response.model if response is not None else None,
        response_id=response.id if response is not None else None,
        finish_reasons=response.finish_reasons if response is not None else (),
        server_address=server[0] if server is not None else None,
        server_port=server[1] if server is not None else None,
    )
