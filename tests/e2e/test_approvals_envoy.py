"""Human approval through a real Envoy (DESIGN.md s7, ``escalate``): a request for a model that
needs approval gets a 403 ``approval_required`` with an ``approval_id``; an approver approves it
with ``policy-extproc approvals approve``; the same user resending the same request with
``x-approval-id`` reaches the provider, once. A denied approval keeps its request refused.

The admin commands run as a user types them (click's CliRunner on ``policy_extproc.cli:main``,
``--admin`` pointed at the sidecar's admin listener, the token in the environment).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from policy_extproc.admin.auth import TOKEN_ENV
from policy_extproc.cli import main
from policy_extproc.mockprovider import MockProvider
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import EnvoyProcess, Response, http_request

TOKEN = "e2e-admin-token"
POLICY = """
policy_name: acme_ml
org: acme
rules:
  # The largest models need a human's approval, request by request (examples/policies).
  - type: approval
    id: big-models
    models: ["gpt-4.5*", "claude-opus-*"]
    ttl: 1h
"""
BIG = "gpt-4.5-preview"
ALICE = {"x-org-id": "acme", "x-team-id": "ml", "x-user-id": "alice", "x-environment": "prod"}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    workdir = tmp_path_factory.mktemp("approvals")
    tokens = workdir / "admin-tokens"  # bob holds the token: the approver recorded is bob
    tokens.write_text(f"bob:approver:{TOKEN}\n")
    with running_sidecar(
        POLICY, workdir, admin_listen="127.0.0.1:0", admin_tokens=str(tokens)
    ) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(envoy_factory: Callable[..., EnvoyProcess], sidecar: RunningSidecar) -> EnvoyProcess:
    return envoy_factory(sidecar.port)


def admin(sidecar: RunningSidecar, *args: str) -> Result:
    """``policy-extproc ARGS --admin <the sidecar's admin API>``, the token in the environment."""
    address = f"127.0.0.1:{sidecar.sidecar.admin_port}"
    env: dict[str, str | None] = {TOKEN_ENV: TOKEN, "POLICY_EXTPROC_ADMIN": None}
    result = CliRunner().invoke(main, [*args, "--admin", address], env=env)
    assert "Traceback" not in result.output
    return result


def approvals(sidecar: RunningSidecar, *args: str) -> dict[str, dict[str, str]]:
    """``approvals list ARGS`` as {id: {column: value}}, cut where the header's columns start."""
    result = admin(sidecar, "approvals", "list", *args)
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    names = header.split()
    assert names == ["ID", "ORG", "USER", "STATUS", "EXPIRES", "BY", "DETAILS"]
    starts = [header.index(name) for name in names]
    cells = [
        {n: row[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
        for row in rows
    ]
    return {c["ID"]: c for c in cells}


def chat(
    proxy: EnvoyProcess, text: str, *, model: str = BIG, user: str = "alice", **headers: str
) -> Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    hdrs = {**ALICE, "x-user-id": user, **headers}
    return http_request(proxy.url, "/v1/chat/completions", body, headers=hdrs)


def escalated(resp: Response) -> dict[str, Any]:
    """The refusal body of an escalated request, checked against DESIGN.md s7."""
    assert resp.status == 403, resp.body
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-policy-decision"] == "escalate"
    body: dict[str, Any] = resp.json()
    assert body["error"]["type"] == "policy_violation"
    assert body["error"]["code"] == "approval_required"
    assert (body["decision"], body["policy"], body["rule"]) == ("escalate", "acme_ml", "big-models")
    assert body["request_id"] == resp.headers["x-request-id"]
    assert body["approval_id"].startswith("apr_")
    assert f"model {BIG!r} needs approval" in body["reason"]
    return body


def refused(resp: Response) -> str:
    """The message of a request whose x-approval-id does not let it through."""
    assert resp.status == 403, resp.body
    body = resp.json()
    assert body["error"]["code"] == "approval_invalid"
    assert resp.headers["x-policy-decision"] == "block"
    return str(body["error"]["message"])


def test_approve_then_the_same_request_passes_once(
    proxy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider
) -> None:
    prompt = "summarise the quarterly figures"
    first = chat(proxy, prompt)
    body = escalated(first)
    approval_id = body["approval_id"]
    assert mock_provider.stats()["total"] == 0  # an escalated request never leaves Envoy

    row = approvals(sidecar, "--status", "pending")[approval_id]
    assert (row["ORG"], row["USER"], row["STATUS"], row["BY"]) == ("acme", "alice", "pending", "-")
    assert f"model={BIG}" in row["DETAILS"] and "rule=big-models" in row["DETAILS"]

    # Before anyone decides, presenting the id does not help.
    assert "still waiting for an approver" in refused(
        chat(proxy, prompt, **{"x-approval-id": approval_id})
    )

    result = admin(sidecar, "approvals", "approve", approval_id, "--reason", "Q3 report")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{approval_id}: approved by bob (org acme, user alice)\n"
    row = approvals(sidecar)[approval_id]
    assert (row["STATUS"], row["BY"]) == ("approved", "bob")

    # The approval is bound to its user and its request: neither another user nor an altered
    # prompt can use it (and trying does not use it up).
    assert "granted to another user" in refused(
        chat(proxy, prompt, user="mallory", **{"x-approval-id": approval_id})
    )
    assert "different request" in refused(
        chat(proxy, prompt + " and the salaries", **{"x-approval-id": approval_id})
    )
    assert mock_provider.stats()["total"] == 0

    passed = chat(proxy, prompt, **{"x-approval-id": approval_id})
    assert passed.status == 200, passed.body
    assert passed.headers["x-policy-decision"] == "allow"
    assert passed.json()["choices"][0]["message"]["content"] == f"echo: {prompt}"
    stats = mock_provider.stats()
    assert stats["total"] == 1
    assert (stats["last_body"]["model"], stats["last_body"]["messages"][0]["content"]) == (
        BIG,
        prompt,
    )

    # Once: the second use is refused, and the approval shows as consumed.
    assert "already used" in refused(chat(proxy, prompt, **{"x-approval-id": approval_id}))
    assert mock_provider.stats()["total"] == 1
    assert approvals(sidecar, "--status", "consumed")[approval_id]["STATUS"] == "consumed"

    # The audit: escalate, the verdict (allow, by bob, naming the escalated request), allow.
    escalated_id, passed_id = first.headers["x-request-id"], passed.headers["x-request-id"]
    trail = [
        r
        for r in sidecar.sink.records
        if r.request_id in (escalated_id, passed_id) and r.phase in ("request", "approval")
    ]
    assert [(r.request_id, r.phase, r.decision) for r in trail] == [
        (escalated_id, "request", "escalate"),
        (escalated_id, "approval", "allow"),
        (passed_id, "request", "allow"),
    ]
    assert trail[0].reason and "needs approval" in trail[0].reason
    assert trail[1].reason == "approved by bob: Q3 report"
    assert (trail[1].policy, trail[1].rule, trail[1].user) == ("acme_ml", "big-models", "alice")
    # The verdict is about the escalated request: the same who, where and what.
    for field in ("org", "team", "environment", "model"):
        assert getattr(trail[1], field) == getattr(trail[0], field), field
    assert (trail[1].team, trail[1].environment) == ("ml", "prod")
    # The request that used the approval names the rule that let it through.
    assert [(f.policy, f.rule, f.action) for f in trail[2].fired] == [
        ("acme_ml", "big-models", "allow")
    ]
    assert (trail[2].user, trail[2].model) == ("alice", BIG)
    assert (trail[2].policy, trail[2].rule) == ("acme_ml", "big-models")
    assert trail[2].reason and "approved by bob" in trail[2].reason


def test_a_denied_request_stays_refused(
    proxy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider
) -> None:
    prompt = "draft a press release about the merger"
    approval_id = escalated(chat(proxy, prompt))["approval_id"]
    result = admin(sidecar, "approvals", "deny", approval_id, "--reason", "not public")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{approval_id}: denied by bob (org acme, user alice)\n"

    resp = chat(proxy, prompt, **{"x-approval-id": approval_id})
    assert f"approval {approval_id} was denied by bob: not public" in refused(resp)
    # Without the id, the request escalates again: a new approval, not the denied one.
    again = escalated(chat(proxy, prompt))
    assert again["approval_id"] != approval_id
    assert mock_provider.stats()["total"] == 0

    # A verdict is final.
    twice = admin(sidecar, "approvals", "approve", approval_id)
    assert twice.exit_code == 1
    assert twice.stderr == (
        f"policy-extproc: failed_precondition: approval '{approval_id}' is already denied by bob\n"
    )
    verdicts = [r for r in sidecar.sink.records if r.phase == "approval"]
    assert (verdicts[-1].decision, verdicts[-1].reason) == ("block", "denied by bob: not public")


def test_models_without_the_rule_pass_untouched(
    proxy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    resp = chat(proxy, "hello", model="gpt-4o-mini")
    assert resp.status == 200, resp.body
    assert resp.headers["x-policy-decision"] == "allow"
    assert mock_provider.stats()["total"] == 1
