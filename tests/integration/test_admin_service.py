"""PolicyAdmin over real gRPC: an in-process sidecar with its admin API on port 0.

Envoy's side is played as in test_extproc_grpc.py; the admin side by a plain stub, as grpcurl
or the CLI would call it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from policy_extproc._proto import admin_pb2, admin_pb2_grpc
from policy_extproc.admin.errors import PROBLEMS_KEY
from policy_extproc.errors import AdminError, PolicyError
from policy_extproc.server import ServerConfig, Sidecar
from policy_extproc.sources.files import compile_paths
from policy_extproc.state.base import Approval
from tests.integration.admin_policies import BAD, TEAM
from tests.integration.helpers import (
    Running,
    chat_body,
    full_request,
    immediate_json,
    metadata,
    run_exchange,
    running_sidecar,
    wait_for,
)

TOKEN = "s3cret-admin-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)

POLICIES = """
policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
    final: true
"""


@dataclass
class Admin:
    running: Running
    stub: Any
    channel: grpc.aio.Channel

    async def decision(self, text: str, rid: str, team: str = "ml") -> str:
        messages = full_request(chat_body(text), request_id=rid, headers={"x-team-id": team})
        answers = await run_exchange(self.running.stub, messages)
        if answers[1].WhichOneof("response") == "immediate_response":
            return str(immediate_json(answers[1])["decision"])
        return str(metadata(answers[1])["decision"])


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    # The token's holder is bob: the approver recorded is the token's name, whatever the
    # request's approver field says.
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"bob:admin:{TOKEN}\n")
    async with running_sidecar(
        tmp_path, POLICIES, admin_listen="127.0.0.1:0", admin_tokens=str(tokens)
    ) as running:
        port = running.sidecar.admin_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Admin(running, admin_pb2_grpc.PolicyAdminStub(channel), channel)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


# -- auth and reflection -----------------------------------------------------------------------


async def test_calls_need_the_bearer_token(admin: Admin) -> None:
    err = await refused(admin.stub.ListPolicies(admin_pb2.ListPoliciesRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    wrong = (("authorization", "Bearer nope"),)
    err = await refused(admin.stub.ListPolicies(admin_pb2.ListPoliciesRequest(), metadata=wrong))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # Streams too.
    watch = admin.stub.WatchDecisions(admin_pb2.WatchDecisionsRequest())
    err = await refused(watch.read())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = await admin.stub.ListPolicies(admin_pb2.ListPoliciesRequest(), metadata=AUTH)
    assert [p.name for p in ok.policies] == ["acme_base"]


async def test_reflection_describes_the_admin_api_as_grpcurl_asks(admin: Admin) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(admin.channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in (await call.read()).list_services_response.service}
    await call.write(
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="policy_extproc.v1.PolicyAdmin"
        )
    )
    described = (await call.read()).file_descriptor_response.file_descriptor_proto
    await call.done_writing()
    assert "policy_extproc.v1.PolicyAdmin" in names
    assert described


async def test_without_a_token_a_non_loopback_listener_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "base.yaml").write_text(POLICIES)
    config = ServerConfig(
        policies=(str(tmp_path / "p"),),
        listen="127.0.0.1:0",
        audit_log=None,
        admin_listen="0.0.0.0:0",
    )
    sidecar = Sidecar(config)
    with pytest.raises(AdminError, match="without a token"):
        await sidecar.start()
    await sidecar.stop()


async def test_without_a_token_loopback_calls_need_no_metadata(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path, POLICIES, admin_listen="127.0.0.1:0") as running:
        port = running.sidecar.admin_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = admin_pb2_grpc.PolicyAdminStub(channel)
            resp = await stub.ListPolicies(admin_pb2.ListPoliciesRequest())
    assert resp.version == running.sidecar.store.current.version


# -- policies ----------------------------------------------------------------------------------


async def test_push_get_list_delete_and_enforcement_follows(admin: Admin) -> None:
    assert await admin.decision("a classified memo", "r-1") == "allow"
    pushed = await admin.stub.PutPolicies(
        admin_pb2.PutPoliciesRequest(text=TEAM, file_name="team.yaml"), metadata=AUTH
    )
    assert list(pushed.names) == ["acme_ml"]
    assert pushed.version == admin.running.sidecar.store.current.version
    assert await admin.decision("a classified memo", "r-2") == "block"
    assert await admin.decision("a classified memo", "r-3", team="other") == "allow"

    listed = await admin.stub.ListPolicies(admin_pb2.ListPoliciesRequest(), metadata=AUTH)
    rows = {p.name: p for p in listed.policies}
    assert (rows["acme_ml"].source, rows["acme_ml"].file) == ("pushed", "pushed:acme_ml")
    assert (rows["acme_ml"].org, rows["acme_ml"].team, rows["acme_ml"].rules) == ("acme", "ml", 1)
    assert not rows["acme_ml"].HasField("environment")
    assert rows["acme_base"].source == "file" and rows["acme_base"].file.endswith(".yaml")
    assert listed.repository_version == 1 and not listed.last_error

    got = await admin.stub.GetPolicy(admin_pb2.GetPolicyRequest(name="acme_ml"), metadata=AUTH)
    assert got.text == TEAM
    got = await admin.stub.GetPolicy(admin_pb2.GetPolicyRequest(name="acme_base"), metadata=AUTH)
    assert got.text == POLICIES and got.policy.source == "file"

    await admin.stub.DeletePolicy(admin_pb2.DeletePolicyRequest(name="acme_ml"), metadata=AUTH)
    assert await admin.decision("a classified memo", "r-4") == "allow"
    versions = {r.request_id: r.policy_version for r in admin.running.sink.records}
    assert versions["r-1"] == versions["r-4"] != versions["r-2"] == versions["r-3"]


async def test_a_bad_policy_is_refused_with_the_lines_of_check(
    admin: Admin, tmp_path: Path
) -> None:
    before = admin.running.sidecar.store.current
    bad = tmp_path / "team.yaml"
    bad.write_text(BAD)
    with pytest.raises(PolicyError) as check:
        compile_paths([str(admin.running.policy_dir), str(bad)])
    expected = [str(p) for p in check.value.problems]
    assert len(expected) == 2

    err = await refused(
        admin.stub.PutPolicies(
            admin_pb2.PutPoliciesRequest(text=BAD, file_name=str(bad)), metadata=AUTH
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").splitlines() == expected
    assert dict(err.trailing_metadata() or ())[PROBLEMS_KEY] == "2"
    assert admin.running.sidecar.store.current is before


@pytest.mark.parametrize(
    ("call", "request_", "code"),
    [
        ("GetPolicy", admin_pb2.GetPolicyRequest(name="nobody"), grpc.StatusCode.NOT_FOUND),
        ("DeletePolicy", admin_pb2.DeletePolicyRequest(name="nobody"), grpc.StatusCode.NOT_FOUND),
        (
            "DeletePolicy",
            admin_pb2.DeletePolicyRequest(name="acme_base"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            "PutPolicies",
            admin_pb2.PutPoliciesRequest(text=POLICIES),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "DecideApproval",
            admin_pb2.DecideApprovalRequest(id="x", approver="bob"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_refusals_have_status_codes_and_plain_messages(
    admin: Admin, call: str, request_: Any, code: grpc.StatusCode
) -> None:
    err = await refused(getattr(admin.stub, call)(request_, metadata=AUTH))
    assert err.code() == code
    assert "Traceback" not in (err.details() or "") and err.details()


# -- dry runs ----------------------------------------------------------------------------------


async def test_evaluate_explains_without_enforcing_or_storing(admin: Admin) -> None:
    body = chat_body("a classified memo")
    headers = {"x-org-id": "acme", "x-team-id": "ml", "x-user-id": "alice"}
    now = await admin.stub.Evaluate(
        admin_pb2.EvaluateRequest(body=body, headers=headers), metadata=AUTH
    )
    assert now.decision.decision == "allow"
    maybe = await admin.stub.Evaluate(
        admin_pb2.EvaluateRequest(body=body, headers=headers, policies=TEAM), metadata=AUTH
    )
    assert (maybe.decision.decision, maybe.decision.policy) == ("block", "acme_ml")
    assert maybe.explanation[0].startswith("decision: block (policy 'acme_ml', rule 'words')")
    assert not maybe.HasField("body")
    assert admin.running.sink.records == []  # a dry run is not a decision
    listed = await admin.stub.ListPolicies(admin_pb2.ListPoliciesRequest(), metadata=AUTH)
    assert [p.name for p in listed.policies] == ["acme_base"]
    err = await refused(
        admin.stub.Evaluate(admin_pb2.EvaluateRequest(body=b"{not json"), metadata=AUTH)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("malformed_body:")


async def test_evaluate_judges_with_the_sidecars_own_catalog(tmp_path: Path) -> None:
    # serve --catalog maps the Azure deployment o1-prod to o1: the dry run must judge the same
    # model as the request path, not the packaged catalog (which knows no such deployment).
    catalog = tmp_path / "catalog.yaml"
    default = (Path(__file__).parents[2] / "policy_extproc/llm/default_catalog.yaml").read_text()
    catalog.write_text(default.replace("deployments: {}", "deployments: {O1-Prod: o1}"))
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"bob:admin:{TOKEN}\n")
    policies = (
        POLICIES
        + """  - type: model_access
    id: no-reasoning
    deny_models: ["o1*"]
"""
    )
    async with running_sidecar(
        tmp_path, policies, admin_listen="127.0.0.1:0", admin_tokens=str(tokens),
        catalog=str(catalog),
    ) as running:  # fmt: skip
        port = running.sidecar.admin_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = admin_pb2_grpc.PolicyAdminStub(channel)
            result = await stub.Evaluate(
                admin_pb2.EvaluateRequest(
                    body=json.dumps(
                        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
                    ).encode(),
                    headers={"x-org-id": "acme", "x-team-id": "ml", "x-user-id": "alice"},
                    path="/openai/deployments/o1-prod/chat/completions?api-version=2024-10-21",
                ),
                metadata=AUTH,
            )
    assert (result.decision.decision, result.decision.rule) == ("block", "no-reasoning")
    assert result.decision.model == "o1"


# -- approvals and the live stream -------------------------------------------------------------


async def put_approval(running: Running, approval_id: str) -> None:
    now = time.time()
    assert running.sidecar.state is not None
    await running.sidecar.state.approval_put(
        Approval(
            id=approval_id,
            org="acme",
            user="alice",
            fingerprint="f" * 16,
            created_at=now,
            expires_at=now + 600,
            details={"policy": "acme_base", "rule": "big", "model": "o1"},
        )
    )


async def read_records(call: Any, n: int) -> Sequence[Any]:
    out = []
    async with asyncio.timeout(10):  # a safety net, not a claim about speed
        while len(out) < n:
            out.append(await call.read())
    return out


async def test_approvals_listed_decided_audited_and_streamed(admin: Admin) -> None:
    await put_approval(admin.running, "ap-1")
    await put_approval(admin.running, "ap-2")
    watch = admin.stub.WatchDecisions(admin_pb2.WatchDecisionsRequest(org="acme"), metadata=AUTH)
    live = admin.running.sidecar.control.live
    await wait_for(lambda: live.subscribers == 1, "the subscription")

    listed = await admin.stub.ListApprovals(
        admin_pb2.ListApprovalsRequest(status="pending"), metadata=AUTH
    )
    assert [a.id for a in listed.approvals] == ["ap-1", "ap-2"]
    assert listed.approvals[0].details["model"] == "o1"
    # Organisations compare canonically, as requests and records hold them.
    by_org = await admin.stub.ListApprovals(
        admin_pb2.ListApprovalsRequest(org=" ACME", status="pending"), metadata=AUTH
    )
    assert [a.id for a in by_org.approvals] == ["ap-1", "ap-2"]

    approve = admin_pb2.DecideApprovalRequest(
        id="ap-1", verdict=admin_pb2.VERDICT_APPROVE, approver="bob", reason="ok for today"
    )
    decided = await admin.stub.DecideApproval(approve, metadata=AUTH)
    assert (decided.status, decided.approver, decided.reason) == ("approved", "bob", "ok for today")
    deny = admin_pb2.DecideApprovalRequest(
        id="ap-2", verdict=admin_pb2.VERDICT_DENY, approver="bob"
    )
    assert (await admin.stub.DecideApproval(deny, metadata=AUTH)).status == "denied"
    err = await refused(admin.stub.DecideApproval(deny, metadata=AUTH))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    audited = [r for r in admin.running.sink.records if r.phase == "approval"]
    assert [(r.decision, r.reason) for r in audited] == [
        ("allow", "approved by bob: ok for today"),
        ("block", "denied by bob"),
    ]
    assert await admin.decision("hello", "r-live") == "allow"
    streamed = await read_records(watch, 3)
    watch.cancel()
    assert [m.record.decision for m in streamed] == ["allow", "block", "allow"]
    assert [m.record.phase for m in streamed] == ["approval", "approval", "request"]
    live = streamed[2].record
    assert (live.request_id, live.org) == ("r-live", "acme")
    assert live.policy_version == admin.running.sidecar.store.current.version
    assert not live.HasField("policy") and streamed[2].dropped == 0
    assert json.loads(json.dumps(list(live.fired))) == []


async def test_stopping_the_sidecar_ends_live_streams(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path, POLICIES, admin_listen="127.0.0.1:0") as running:
        port = running.sidecar.admin_port
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        watch = admin_pb2_grpc.PolicyAdminStub(channel).WatchDecisions(
            admin_pb2.WatchDecisionsRequest()
        )
        live = running.sidecar.control.live
        await wait_for(lambda: live.subscribers == 1, "the subscription")
        await running.sidecar.stop()
        async with asyncio.timeout(10):
            assert await watch.read() == grpc.aio.EOF
        assert await watch.code() == grpc.StatusCode.OK
        await channel.close()
