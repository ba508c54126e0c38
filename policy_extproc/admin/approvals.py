"""Approvals seen from the admin side: list them, approve or deny them, audit each verdict.

The request side (an ``approval`` rule escalates, an approved request passes once with
``x-approval-id``) lives in the enforcement layer; both meet only in the ``StateBackend``.
An approval's ``details`` are what the approver is shown; the keys ``policy``, ``rule``,
``request_id``, ``team``, ``environment`` and ``model``, when present, also go into the audit
record of the verdict.
"""

from __future__ import annotations

from collections.abc import Callable

from ..audit.record import AuditRecord, utc_timestamp
from ..audit.sink import AuditSink
from ..errors import AdminError
from ..state.base import Approval, StateBackend
from .errors import Conflict, NotFound

STATUSES = ("pending", "approved", "denied", "consumed")


def verdict_record(approval: Approval, policy_version: str = "") -> AuditRecord:
    """The audit record of an approval's verdict: allow if approved, block if denied."""
    details = approval.details
    approved = approval.status in ("approved", "consumed")
    reason = f"{'approved' if approved else 'denied'} by {approval.approver}"
    if approval.reason:
        reason += f": {approval.reason}"
    return AuditRecord(
        decision="allow" if approved else "block",
        policy=details.get("policy"),
        rule=details.get("rule"),
        reason=reason,
        user=approval.user or None,
        environment=details.get("environment"),
        timestamp=utc_timestamp(),
        # The escalated request's id when the approval names it; else the approval's own id,
        # so the verdict can be found in the log either way.
        request_id=details.get("request_id") or approval.id,
        org=approval.org or None,
        team=details.get("team"),
        model=details.get("model"),
        policy_version=policy_version,
        phase="approval",
    )


class Approvals:
    """List, approve and deny approvals kept by a ``StateBackend``; verdicts go to ``sink``."""

    def __init__(
        self, state: StateBackend, sink: AuditSink, policy_version: Callable[[], str]
    ) -> None:
        self.state = state
        self.sink = sink
        self.policy_version = policy_version

    async def list(self, org: str | None = None, status: str | None = None) -> list[Approval]:
        """Unexpired approvals, oldest first, of one org (or all) and one status (or all)."""
        if status and status not in STATUSES:
            raise AdminError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        found = await self.state.approval_list(org or None)
        return [a for a in found if not status or a.status == status]

    async def decide(
        self, approval_id: str, approve: bool, approver: str, reason: str = ""
    ) -> Approval:
        """Approve or deny a pending approval, and audit it (NotFound, Conflict if decided)."""
        approver = approver.strip()
        if not approver:
            raise AdminError("an approver is required (who decides is audited)")
        current = await self.state.approval_get(approval_id)
        if current is None:
            raise NotFound(f"no approval {approval_id!r} (unknown or expired)")
        if current.status != "pending":
            raise Conflict(_already(current))
        decided = await self.state.approval_decide(approval_id, approve, approver, reason)
        if decided is None:
            raise NotFound(f"no approval {approval_id!r} (expired)")
        wanted = "approved" if approve else "denied"
        if decided.status != wanted or decided.approver != approver:
            raise Conflict(_already(decided))  # someone else decided in between
        # The verdict is stored; a failing durable log raises here and the caller hears of it.
        self.sink.emit(verdict_record(decided, self.policy_version()))
        return decided


def _already(approval: Approval) -> str:
    by = f" by {approval.approver}" if approval.approver else ""
    return f"approval {approval.id!r} is already {approval.status}{by}"
