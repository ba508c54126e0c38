"""Human-readable explanation of a decision: policies applied, each rule's origin, firings."""

from __future__ import annotations

from .compiler import EffectiveSet
from .decision import Decision, RequestContext


def _origin(es: EffectiveSet, index: int) -> str:
    e = es.rules[index]
    most_specific = es.policies[-1].policy.name if es.policies else ""
    parts = []
    if e.overrode:
        parts.append(f"overrides {', '.join(repr(p) for p in e.overrode)}")
    elif e.policy_name != most_specific:
        parts.append(f"inherited from '{e.policy_name}'")
    else:
        parts.append("own")
    if e.rule.final:
        parts.append("locked (final)")
    if e.policy.policy.mode == "log":
        parts.append("shadow (mode: log)")
    return ", ".join(parts)


def explain(es: EffectiveSet, ctx: RequestContext, decision: Decision) -> list[str]:
    """Lines explaining ``decision`` for a person at a terminal."""
    lines = []
    head = f"decision: {decision.action}"
    if decision.policy:
        head += f" (policy '{decision.policy}', rule '{decision.rule}')"
    lines.append(f"{head}: {decision.reason}")
    if decision.would_decide:
        lines.append(f"shadow: log-mode policies would decide {decision.would_decide}")
    req = ctx.request
    roles = ",".join(sorted(ctx.roles)) or "-"
    who = (f"org={ctx.org or '-'} team={ctx.team or '-'} user={ctx.user or '-'} "
           f"environment={ctx.environment or '-'} roles={roles}")  # fmt: skip
    if req is not None:
        who += f" api={req.api} model={req.model or '-'} prompt_parts={len(req.parts)}"
    lines.append(f"request: {who}")
    lines.append("policies applied (least to most specific):")
    if not es.policies:
        lines.append("  (none)")
    for n, cp in enumerate(es.policies, 1):
        p = cp.policy
        extra = f", mode {p.mode}" if p.mode != "enforce" else ""
        lines.append(f"  {n}. {p.name} [{p.scope}] {p.file}:{p.line}{extra}")
    lines.append("effective rules:")
    if not es.rules:
        lines.append("  (none)")
    fired = {(f.policy, f.rule): f for f in decision.fired}
    for i, e in enumerate(es.rules):
        mark = "*" if (e.policy_name, e.rule.id) in fired else " "
        lines.append(f"  {mark} {e.policy_name}/{e.rule.id} ({e.rule.type}): {_origin(es, i)}")
    lines.append("fired:")
    if not decision.fired:
        lines.append("  (none)")
    for f in decision.fired:
        shadow = " [log only]" if f.mode == "log" else ""
        lines.append(f"  {f.action.upper()} {f.policy}/{f.rule} ({f.type}){shadow}: {f.reason}")
    if decision.redactions:
        counts = ",".join(f"{k}={v}" for k, v in decision.redactions.items())
        lines.append(f"redactions: {counts}")
    if decision.compliance:
        lines.append(f"compliance: {', '.join(decision.compliance)}")
    return lines
