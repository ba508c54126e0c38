"""The approvals of ``MemoryState``: held in a dict until they expire (the sweep of
``MemoryState`` drops expired ones), each decided once and consumed once."""

from __future__ import annotations

from dataclasses import replace

from policy_extproc.state.base import Approval, ApprovalStatus, clock


class MemoryApprovals:
    """The approval methods of the StateBackend protocol, over ``self._approvals``."""

    _approvals: dict[str, Approval]

    async def approval_put(self, approval: Approval, *, now: float | None = None) -> None:
        """Store an approval until its ``expires_at``."""
        self._approvals[approval.id] = approval

    async def approval_get(self, approval_id: str, *, now: float | None = None) -> Approval | None:
        """The approval, or None if unknown or expired."""
        approval = self._approvals.get(approval_id)
        if approval is None or approval.expires_at <= clock(now):
            return None
        return approval

    async def approval_decide(
        self,
        approval_id: str,
        approved: bool,
        approver: str,
        reason: str = "",
        *,
        now: float | None = None,
    ) -> Approval | None:
        """Approve or deny a pending approval; a decided one is returned unchanged."""
        approval = await self.approval_get(approval_id, now=now)
        if approval is None or approval.status != "pending":
            return approval
        status: ApprovalStatus = "approved" if approved else "denied"
        decided = replace(approval, status=status, approver=approver, reason=reason)
        self._approvals[approval_id] = decided
        return decided

    async def approval_consume(
        self, approval_id: str, fingerprint: str, user: str, *, now: float | None = None
    ) -> bool:
        """Use an approved approval once, for the same request and user; True if it was."""
        approval = await self.approval_get(approval_id, now=now)
        if (
            approval is None
            or approval.status != "approved"
            or approval.fingerprint != fingerprint
            or approval.user != user
        ):
            return False
        self._approvals[approval_id] = replace(approval, status="consumed")
        return True

    async def approval_list(
        self, org: str | None = None, *, now: float | None = None
    ) -> list[Approval]:
        """Unexpired approvals, oldest first, of one org or all."""
        now = clock(now)
        found = [
            a
            for a in self._approvals.values()
            if a.expires_at > now and (org is None or a.org == org)
        ]
        return sorted(found, key=lambda a: (a.created_at, a.id))
