"""Each admin RPC over real gRPC for each role: viewer reads, approver also decides approvals,
admin also pushes and deletes; the approver recorded is the token's name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from policy_extproc._proto import admin_pb2, admin_pb2_grpc
from policy_extproc.state.base import Approval
from tests.integration.helpers import Running, running_sidecar

POLICIES = """
policy_name: acme_base
org: acme
rules:
  - {type: content_filter, id: secrets, keywords: [confidential]}
"""
PUSHED = """
policy_name: acme_ml
scope: {org: acme, team: ml}
rules:
  - {type: content_filter, id: weapons, keywords: [bomb]}
"""
TOKENS = {"vera": "viewer", "artie": "approver", "ada": "admin"}


def token(name: str) -> str:
    return f"tok-{name}-0123456789"


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[tuple[Running, Any]]:
    file = tmp_path / "tokens"
    file.write_text("".join(f"{n}:{r}:{token(n)}\n" for n, r in TOKENS.items()))
    async with running_sidecar(
        tmp_path, POLICIES, admin_listen="127.0.0.1:0", admin_tokens=str(file)
    ) as running:
        port = running.sidecar.admin_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield running, admin_pb2_grpc.PolicyAdminStub(channel)


async def pending(running: Running, approval_id: str) -> None:
    assert running.sidecar.state is not None
    await running.sidecar.state.approval_put(
        Approval(
            id=approval_id,
            org="acme",
            user="alice",
            fingerprint="f",
            status="pending",
            created_at=0.0,
            expires_at=4e9,
            details={"model": "gpt-4.5-preview"},
        )
    )


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


READS = [
    ("ListPolicies", admin_pb2.ListPoliciesRequest()),
    ("GetPolicy", admin_pb2.GetPolicyRequest(name="acme_base")),
    ("ListApprovals", admin_pb2.ListApprovalsRequest()),
    ("Evaluate", admin_pb2.EvaluateRequest(body=b'{"model":"gpt-4o","messages":[]}')),
]


@pytest.mark.parametrize("name", list(TOKENS))
async def test_every_role_reads(admin: tuple[Running, Any], name: str) -> None:
    _, stub = admin
    auth = (("authorization", f"Bearer {token(name)}"),)
    for method, request in READS:
        assert await code_of(getattr(stub, method)(request, metadata=auth)) == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("name", "decides", "pushes"),
    [("vera", False, False), ("artie", True, False), ("ada", True, True)],
)
async def test_each_role_is_enforced_per_rpc(
    admin: tuple[Running, Any], name: str, decides: bool, pushes: bool
) -> None:
    running, stub = admin
    auth = (("authorization", f"Bearer {token(name)}"),)
    await pending(running, "apr_1")
    decide = admin_pb2.DecideApprovalRequest(
        id="apr_1", verdict=admin_pb2.VERDICT_APPROVE, approver="root", reason="ok"
    )
    denied = grpc.StatusCode.PERMISSION_DENIED
    ok = grpc.StatusCode.OK
    try:
        decided = await stub.DecideApproval(decide, metadata=auth)
    except grpc.aio.AioRpcError as exc:
        assert not decides
        assert exc.code() == denied
        assert exc.details() == f"{name} has the role viewer; DecideApproval needs approver"
    else:
        assert decides
        # The free-text approver of the request is ignored: the token's holder decided.
        assert (decided.status, decided.approver) == ("approved", name)
        verdict = running.sink.records[-1]
        assert (verdict.phase, verdict.reason) == ("approval", f"approved by {name}: ok")
    put = stub.PutPolicies(admin_pb2.PutPoliciesRequest(text=PUSHED), metadata=auth)
    assert await code_of(put) == (ok if pushes else denied)
    delete = stub.DeletePolicy(admin_pb2.DeletePolicyRequest(name="acme_ml"), metadata=auth)
    assert await code_of(delete) == (ok if pushes else denied)


async def test_no_token_or_an_unknown_one_is_unauthenticated(admin: tuple[Running, Any]) -> None:
    _, stub = admin
    request = admin_pb2.ListPoliciesRequest()
    assert await code_of(stub.ListPolicies(request)) == grpc.StatusCode.UNAUTHENTICATED
    wrong = (("authorization", "Bearer tok-nobody-0123456789"),)
    assert await code_of(stub.ListPolicies(request, metadata=wrong)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


async def test_without_tokens_loopback_callers_name_the_approver(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path, POLICIES, admin_listen="127.0.0.1:0") as running:
        await pending(running, "apr_2")
        port = running.sidecar.admin_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = admin_pb2_grpc.PolicyAdminStub(channel)
            decide = admin_pb2.DecideApprovalRequest(
                id="apr_2", verdict=admin_pb2.VERDICT_DENY, approver="dana"
            )
            decided = await stub.DecideApproval(decide)
    assert (decided.status, decided.approver) == ("denied", "dana")


def test_serve_names_a_missing_or_broken_tokens_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from policy_extproc.cli import main

    policies = tmp_path / "p.yaml"
    policies.write_text(POLICIES)
    broken = tmp_path / "broken"
    broken.write_text("alice:root:tok-alice-0123456789\n")
    base = ["serve", "--policies", str(policies), "--listen", "127.0.0.1:0", "--audit-log", ""]
    env = {"POLICY_EXTPROC_ADMIN_TOKEN": None, "POLICY_EXTPROC_ADMIN_TOKEN_FILE": None}
    for path, message in (
        (tmp_path / "missing", "does not exist"),
        (broken, f"{broken}:1: role 'root' of 'alice' is not one of viewer, approver, admin"),
    ):
        result = CliRunner().invoke(main, [*base, "--admin-tokens", str(path)], env=env)
        assert result.exit_code == 1
        assert message in result.output and "not serving" in result.output
