"""Approving and denying through the admin core: state changes once, every verdict audited."""

from __future__ import annotations

import time

import pytest

from policy_extproc.admin.approvals import Approvals
from policy_extproc.admin.errors import Conflict, NotFound
from policy_extproc.audit.sink import RecordingSink
from policy_extproc.errors import AdminError
from policy_extproc.state.base import Approval
from policy_extproc.state.memory import MemoryState


def pending(approval_id: str, org: str = "acme", **details: str) -> Approval:
    now = time.time()
    return Approval(
        id=approval_id,
        org=org,
        user="alice",
        fingerprint="f" * 16,
        created_at=now,
        expires_at=now + 3600,
        details=details,
    )


@pytest.fixture
async def setup() -> tuple[Approvals, MemoryState, RecordingSink]:
    state, sink = MemoryState(), RecordingSink()
    await state.approval_put(
        pending("ap-1", policy="acme_base", rule="big_models", request_id="req-9", model="o1")
    )
    await state.approval_put(pending("ap-2", org="globex"))
    return Approvals(state, sink, lambda: "v123"), state, sink


async def test_approve_is_stored_and_audited(
    setup: tuple[Approvals, MemoryState, RecordingSink],
) -> None:
    approvals, state, sink = setup
    decided = await approvals.decide("ap-1", True, "bob", "on call, looks fine")
    assert (decided.status, decided.approver) == ("approved", "bob")
    (rec,) = sink.records
    assert (rec.decision, rec.policy, rec.rule) == ("allow", "acme_base", "big_models")
    assert rec.reason == "approved by bob: on call, looks fine"
    assert (rec.request_id, rec.org, rec.user, rec.model) == ("req-9", "acme", "alice", "o1")
    assert (rec.phase, rec.policy_version) == ("approval", "v123")
    # The request side can now use it once.
    assert await state.approval_consume("ap-1", "f" * 16, "alice")


async def test_deny_without_reason_and_deciding_twice(
    setup: tuple[Approvals, MemoryState, RecordingSink],
) -> None:
    approvals, _, sink = setup
    await approvals.decide("ap-2", False, "carol")
    (rec,) = sink.records
    assert (rec.decision, rec.reason, rec.request_id) == ("block", "denied by carol", "ap-2")
    with pytest.raises(Conflict, match="already denied by carol"):
        await approvals.decide("ap-2", True, "dave")
    with pytest.raises(NotFound):
        await approvals.decide("ap-404", True, "dave")
    with pytest.raises(AdminError, match="approver"):
        await approvals.decide("ap-1", True, "  ")
    assert len(sink.records) == 1


async def test_list_by_org_and_status(
    setup: tuple[Approvals, MemoryState, RecordingSink],
) -> None:
    approvals, _, _ = setup
    await approvals.decide("ap-1", True, "bob")
    assert [a.id for a in await approvals.list()] == ["ap-1", "ap-2"]
    assert [a.id for a in await approvals.list(org="globex")] == ["ap-2"]
    assert [a.id for a in await approvals.list(status="pending")] == ["ap-2"]
    with pytest.raises(AdminError, match="unknown status"):
        await approvals.list(status="maybe")
