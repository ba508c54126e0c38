"""The pending responses of ``MemoryState``: what an observe stream needs to settle a request,
held until it is taken or its ttl passes (``serve --response-accounting observe``)."""

from __future__ import annotations

from policy_extproc.state.base import check_org, clock


class MemoryPending:
    """The pending-response methods of the StateBackend protocol, over ``self._pending``."""

    _pending: dict[tuple[str, str], tuple[str, float]]  # (org, request id) -> (payload, until)

    async def pending_put(
        self, org: str, request_id: str, payload: str, *, ttl_s: float, now: float | None = None
    ) -> None:
        """Keep ``payload`` for the request until it is taken or ``ttl_s`` passes."""
        check_org(org)
        self._pending[(org, request_id)] = (payload, clock(now) + ttl_s)

    async def pending_get(
        self, org: str, request_id: str, *, now: float | None = None
    ) -> str | None:
        """The request's payload, left in place; None if absent or expired."""
        found = self._pending.get((org, request_id))
        if found is None or found[1] <= clock(now):
            return None
        return found[0]

    async def pending_take(
        self, org: str, request_id: str, *, now: float | None = None
    ) -> str | None:
        """The request's payload, removed: only one taker gets it; None if absent or expired."""
        found = self._pending.pop((org, request_id), None)
        if found is None or found[1] <= clock(now):
            return None
        return found[0]

    def _purge_pending(self, now: float) -> None:
        self._pending = {k: v for k, v in self._pending.items() if v[1] > now}
