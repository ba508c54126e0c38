"""What the Redis scripts return, and approvals as hash fields: the translation between Redis's
replies and the state values of ``state.base`` (the layouts are in ``state/lua/``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from policy_extproc.state.base import (
    Admission,
    Approval,
    ApprovalStatus,
    BreakerState,
    BreakerStatus,
    BudgetSpec,
    BudgetState,
    LimitSpec,
    LimitState,
)


def admission(
    raw: list[str], limits: Sequence[LimitSpec], budgets: Sequence[BudgetSpec]
) -> Admission:
    denied = int(raw[1])
    denied_by: str | None = None
    if denied:
        n = len(limits)
        denied_by = limits[denied - 1].key if denied <= n else budgets[denied - n - 1].key
    states: list[LimitState] = []
    longest = 0.0
    for i, spec in enumerate(limits):
        left, reset, wait = raw[2 + 3 * i : 5 + 3 * i]
        states.append(LimitState(spec.key, spec.limit, int(left), float(reset), float(wait)))
        longest = max(longest, float(wait))
    at = 2 + 3 * len(limits)
    budget_states = tuple(
        BudgetState(
            b.key,
            b.limit_usd,
            int(raw[at + 2 * j]) / 1e6,
            int(raw[at + 2 * j + 1]) / 1e6,
            b.enforce,
        )
        for j, b in enumerate(budgets)
    )
    return Admission(denied == 0, denied_by, longest, tuple(states), budget_states)


def breaker_keys(provider: str) -> list[str]:
    tag = f"pe:{{breaker:{provider}}}"
    return [tag, f"{tag}:failures", f"{tag}:successes"]


def breaker(provider: str, raw: list[Any], now: float, cooldown_s: float) -> BreakerState:
    is_open, failures, opened = int(raw[0]), int(raw[1]), float(raw[2])
    if not is_open:
        return BreakerState(provider, "closed", failures, None, None)
    retry_at = opened + cooldown_s
    status: BreakerStatus = "half_open" if now >= retry_at else "open"
    return BreakerState(provider, status, failures, opened, retry_at)


def approval_fields(a: Approval) -> dict[str, str]:
    fields = {
        "id": a.id,
        "org": a.org,
        "user": a.user,
        "fingerprint": a.fingerprint,
        "created_at": repr(a.created_at),
        "expires_at": repr(a.expires_at),
        "status": a.status,
        "details": json.dumps(dict(a.details), separators=(",", ":")),
    }
    if a.approver is not None:
        fields["approver"] = a.approver
    if a.reason is not None:
        fields["reason"] = a.reason
    return fields


def approval(row: Mapping[str, str], now: float) -> Approval | None:
    if not row or float(row["expires_at"]) <= now:
        return None
    return Approval(
        id=row["id"],
        org=row["org"],
        user=row["user"],
        fingerprint=row["fingerprint"],
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        status=cast(ApprovalStatus, row["status"]),  # written only from an ApprovalStatus
        approver=row.get("approver"),
        reason=row.get("reason"),
        details=json.loads(row.get("details", "{}")),
    )
