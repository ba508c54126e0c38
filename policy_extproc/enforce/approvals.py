"""Human approval of single requests: ``approval`` rules escalate, an approver decides, the same
user's same request then passes once with ``x-approval-id``.

An approval is bound to the request it approves by a fingerprint of its model and prompt text,
and to the user who asked: an altered request, another user, a second use or an expired approval
is refused (``approval_invalid``) and audited. The prompt itself is never stored or sent: the
approver sees who asked, the model, the estimated cost and why.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from ..errors import PolicyExtprocError
from ..llm.request import LlmRequest
from ..policy.compiler import EffectiveRule, EffectiveSet
from ..policy.decision import RequestContext
from ..policy.rules.approval import ApprovalRule
from ..state.base import Approval, StateBackend


class ApprovalInvalid(PolicyExtprocError):
    code = "approval_invalid"
    http_status = 403


@dataclass(frozen=True, slots=True)
class Trigger:
    rule: EffectiveRule[ApprovalRule]
    reason: str


def triggered(es: EffectiveSet, ctx: RequestContext, estimated_usd: float) -> list[Trigger]:
    """The approval rules in force that this request trips, with why."""
    req = ctx.request
    if req is None:
        return []
    out = []
    for e in es.rules_of(ApprovalRule):
        rule = e.rule
        why = []
        # The model as judged (canonical, a deployment resolved), by any of its spellings.
        if rule.models and es.matches_model(rule.models, ctx.model, any_spelling=True):
            why.append(f"model {ctx.model!r} needs approval")
        if rule.min_estimated_cost_usd is not None and estimated_usd >= rule.min_estimated_cost_usd:
            why.append(
                f"estimated cost ${estimated_usd:.2f} is at least "
                f"${rule.min_estimated_cost_usd:.2f}"
            )
        tags = [f"{k}={v}" for k, v in rule.tags.items() if ctx.tags.get(k) == v]
        if tags:
            why.append(f"tagged {', '.join(tags)}")
        if why:
            out.append(Trigger(e, "; ".join(why)))
    return out


def fingerprint(req: LlmRequest) -> str:
    """What an approval is bound to: the model and every piece of prompt text, in order."""
    h = hashlib.sha256(req.model.encode())
    for part in req.parts:
        h.update(b"\0")
        h.update(part.text.encode())
    return h.hexdigest()


async def open_approval(
    state: StateBackend, ctx: RequestContext, trigger: Trigger, estimated_usd: float, *, now: float
) -> Approval:
    """Store a pending approval for this request (``now``: wall-clock seconds) and return it."""
    assert ctx.request is not None
    rule = trigger.rule.rule
    approval = Approval(
        id=f"apr_{secrets.token_urlsafe(12)}",
        org=ctx.org or "-",
        user=ctx.user,
        fingerprint=fingerprint(ctx.request),
        created_at=now,
        expires_at=now + rule.ttl_s,
        # The verdict's audit record takes team, environment, policy, rule, model and
        # request_id from here (admin.approvals.verdict_record): unset ones are left out, so
        # it says None as the escalated request's record does, not "".
        details={
            k: v
            for k, v in {
                "team": ctx.team,
                "environment": ctx.environment,
                "model": ctx.request.model,
                "estimated_cost_usd": f"{estimated_usd:.4f}",
                "reason": trigger.reason,
                "policy": trigger.rule.policy_name,
                "rule": rule.id,
                "request_id": ctx.request_id,
            }.items()
            if v
        },
    )
    await state.approval_put(approval, now=now)
    return approval


async def check_presented(state: StateBackend, ctx: RequestContext) -> Approval:
    """The approved, unused approval this request presents, or ``ApprovalInvalid`` saying why."""
    assert ctx.request is not None and ctx.approval_id is not None
    approval = await state.approval_get(ctx.approval_id)
    if approval is None:
        raise ApprovalInvalid(f"approval {ctx.approval_id} does not exist or has expired")
    if approval.status == "pending":
        raise ApprovalInvalid(f"approval {approval.id} is still waiting for an approver")
    if approval.status == "denied":
        reason = f": {approval.reason}" if approval.reason else ""
        raise ApprovalInvalid(f"approval {approval.id} was denied by {approval.approver}{reason}")
    if approval.status == "consumed":
        raise ApprovalInvalid(f"approval {approval.id} was already used")
    if approval.user != ctx.user or approval.org != (ctx.org or "-"):
        raise ApprovalInvalid(f"approval {approval.id} was granted to another user")
    if approval.fingerprint != fingerprint(ctx.request):
        raise ApprovalInvalid(
            f"approval {approval.id} was granted for a different request (model or prompt changed)"
        )
    return approval


async def consume(state: StateBackend, ctx: RequestContext, approval: Approval) -> None:
    """Use the approval, atomically and once (two replicas racing: one wins)."""
    assert ctx.request is not None
    ok = await state.approval_consume(approval.id, approval.fingerprint, ctx.user)
    if not ok:
        raise ApprovalInvalid(f"approval {approval.id} was already used")
