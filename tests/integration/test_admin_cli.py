"""The admin CLI (``policy-extproc policies ...``, ``policy-extproc approvals ...``) against a
real sidecar: an in-process ``Sidecar`` with its admin API on port 0 and a token, driven
through ``policy_extproc.cli:main`` as a user would type it.

The CLI is a blocking gRPC client, so each command runs in a thread while the sidecar serves on
the test's event loop. Envoy's side of a request is played as in test_extproc_grpc.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from policy_extproc.admin import cli as admin_cli
from policy_extproc.admin.auth import TOKEN_ENV
from policy_extproc.cli import main
from tests.integration.admin_policies import BAD, TEAM
from tests.integration.helpers import (
    Running,
    chat_body,
    full_request,
    immediate_json,
    metadata,
    run_exchange,
    running_sidecar,
)

TOKEN = "s3cret-admin-token"
ID = "x-approval-id"  # how a resent request presents its approval (DESIGN.md s7)

BASE = """policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
    final: true
  - type: approval
    id: big-models
    models: ["gpt-4.5*"]
    ttl: 1h
"""


@dataclass
class Admin:
    running: Running
    address: str

    async def cli(self, *args: str, token: str | None = TOKEN, **env: str) -> Result:
        """``policy-extproc ARGS --admin <this sidecar>`` with the token (None: unset)."""
        return await cli(*args, "--admin", self.address, token=token, **env)

    async def decide(
        self, text: str, rid: str, *, model: str = "gpt-4o-mini", **headers: str
    ) -> dict[str, Any]:
        """Send one request through the ext_proc stream: its decision's fields."""
        hdrs = {"x-team-id": "ml", "x-user-id": "alice", **headers}
        messages = full_request(chat_body(text, model=model), request_id=rid, headers=hdrs)
        answers = await run_exchange(self.running.stub, messages)
        if answers[1].WhichOneof("response") == "immediate_response":
            return immediate_json(answers[1])
        return metadata(answers[1])


async def cli(*args: str, token: str | None = TOKEN, **env: str) -> Result:
    # env None removes the variable, so a token in the developer's shell cannot leak in.
    environ: dict[str, str | None] = {TOKEN_ENV: token, "POLICY_EXTPROC_ADMIN": None, **env}
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, list(args), env=environ)


def lines(text: str) -> list[str]:
    return text.splitlines()


def table(result: Result) -> dict[str, dict[str, str]]:
    """A printed table as {first cell: {column: cell}}, cut where the header's columns start."""
    assert result.exit_code == 0, result.output
    header, *rows = lines(result.stdout)
    names = header.split()
    starts = [header.index(name) for name in names]
    ends = [*starts[1:], None]
    cells = [
        {n: row[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)} for row in rows
    ]
    return {c[names[0]]: c for c in cells}


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    # The token's holder is bob: the approver recorded is the token's name.
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"bob:admin:{TOKEN}\n")
    async with running_sidecar(
        tmp_path, BASE, admin_listen="127.0.0.1:0", admin_tokens=str(tokens)
    ) as running:
        yield Admin(running, f"127.0.0.1:{running.sidecar.admin_port}")


# -- policies ----------------------------------------------------------------------------------


async def test_push_list_get_enforce_delete(admin: Admin, tmp_path: Path) -> None:
    team = tmp_path / "team.yaml"
    team.write_text(TEAM)
    assert (await admin.decide("a classified memo", "r-1"))["decision"] == "allow"

    pushed = await admin.cli("policies", "push", str(team))
    assert pushed.exit_code == 0, pushed.output
    version = admin.running.sidecar.store.current.version
    assert lines(pushed.stdout) == [f"pushed acme_ml: version {version} (repository version 1)"]

    listed = await admin.cli("policies", "list")
    rows = table(listed)
    assert rows["acme_ml"] == {
        "NAME": "acme_ml",
        "SOURCE": "pushed",
        "SCOPE": "org=acme,team=ml",
        "RULES": "1",
        "MODE": "enforce",
        "FILE": "pushed:acme_ml",
    }
    base = rows["acme_base"]
    assert (base["SOURCE"], base["SCOPE"], base["RULES"]) == ("file", "org=acme", "2")
    assert base["FILE"] == f"{admin.running.policy_dir / 'policies.yaml'}:1"
    assert f"version {version}: 2 policies, repository version 1" in listed.stderr

    got = await admin.cli("policies", "get", "acme_ml")
    assert (got.exit_code, got.stdout) == (0, TEAM)
    got = await admin.cli("policies", "get", "acme_base")
    assert (got.exit_code, got.stdout) == (0, BASE)
    assert "acme_base is defined in" in got.stderr

    # Now enforced: the pushed team rule blocks, for its team only.
    blocked = await admin.decide("a classified memo", "r-2")
    assert [blocked[k] for k in ("decision", "policy", "rule")] == ["block", "acme_ml", "words"]
    other = await admin.decide("a classified memo", "r-3", **{"x-team-id": "other"})
    assert other["decision"] == "allow"

    deleted = await admin.cli("policies", "delete", "acme_ml")
    assert deleted.exit_code == 0, deleted.output
    assert lines(deleted.stdout)[0].startswith("deleted acme_ml: version ")
    assert "acme_ml" not in table(await admin.cli("policies", "list"))
    gone = await admin.cli("policies", "get", "acme_ml")
    assert gone.exit_code == 1
    assert lines(gone.stderr) == ["policy-extproc: not_found: no policy 'acme_ml'"]
    assert (await admin.decide("a classified memo", "r-4"))["decision"] == "allow"


async def test_push_from_stdin(admin: Admin) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["policies", "push", "-", "--admin", admin.address],
        input=TEAM,
        env={TOKEN_ENV: TOKEN},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("pushed acme_ml: version ")
    assert (await admin.decide("classified", "r-1"))["decision"] == "block"


async def test_a_bad_push_prints_the_lines_of_check(admin: Admin, tmp_path: Path) -> None:
    bad = tmp_path / "team.yaml"
    bad.write_text(BAD)
    before = admin.running.sidecar.store.current
    # What `check` says of the server's policies with this file added: the same lines.
    checked = await cli("check", str(admin.running.policy_dir), str(bad))
    assert checked.exit_code == 1
    expected = lines(checked.stdout)
    assert len(expected) == 2
    assert expected[0].startswith(
        f"{bad}:5: policy 'acme_ml' rule 1: unknown rule type 'telepathy'"
    )
    assert expected[1].startswith(f"{bad}:11: policy 'acme_dev' rule 1 (content_filter): ")

    pushed = await admin.cli("policies", "push", str(bad))
    assert pushed.exit_code == 1
    assert lines(pushed.stdout) == expected
    assert lines(pushed.stderr) == ["2 problems found"]
    assert "Traceback" not in pushed.output
    assert admin.running.sidecar.store.current is before
    assert "acme_ml" not in table(await admin.cli("policies", "list"))


# -- refusals a user can act on ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("wrong-token", f"rejected the token in {TOKEN_ENV}"),
        (None, f"wants a token: {TOKEN_ENV} is not set"),
        ("", f"wants a token: {TOKEN_ENV} is not set"),
    ],
)
async def test_a_wrong_or_missing_token_is_one_clear_line(
    admin: Admin, token: str | None, says: str
) -> None:
    result = await admin.cli("policies", "list", token=token)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert lines(result.stderr) == [f"policy-extproc: the admin API at {admin.address} {says}"]


async def test_a_token_read_with_its_newline_still_works(admin: Admin) -> None:
    # export POLICY_EXTPROC_ADMIN_TOKEN="$(cat token)" keeps no newline; a Secret mounted as
    # an environment variable, or `read -r` on a CRLF file, does.
    result = await admin.cli("policies", "list", token=f"{TOKEN}\r\n")
    assert result.exit_code == 0, result.output
    assert "acme_base" in table(result)


async def test_a_token_gRPC_cannot_send_is_named(admin: Admin) -> None:
    result = await admin.cli("policies", "list", token="s3cret-tökén")
    assert result.exit_code == 1
    assert lines(result.stderr) == [
        f"policy-extproc: {TOKEN_ENV} holds characters a bearer token cannot carry "
        "(printable ASCII only)"
    ]


@pytest.fixture
def dead_address() -> Iterator[str]:
    """A port bound but not listening for as long as the test runs: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    "args",
    [
        ("policies", "list"),
        ("policies", "get", "acme_base"),
        ("approvals", "list"),
        ("approvals", "approve", "apr_x"),
    ],
)
async def test_an_unreachable_admin_api_is_one_clear_line(
    dead_address: str, args: tuple[str, ...]
) -> None:
    result = await cli(*args, "--admin", dead_address)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = lines(result.stderr)
    assert line.startswith(f"policy-extproc: cannot reach the admin API at {dead_address}")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1", ":50052", ""])
async def test_a_malformed_admin_address_is_a_usage_error(address: str) -> None:
    # gRPC itself would dial port 99999 modulo 65536: someone else's port.
    result = await cli("policies", "list", "--admin", address)
    assert result.exit_code == 2
    assert f"Invalid value for '--admin': {address!r} is not HOST:PORT" in result.stderr


async def test_a_server_that_never_answers_is_named_after_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin_cli, "TIMEOUT_S", 0.5)
    with socket.socket() as s:  # accepts connections (the kernel does) but never speaks HTTP/2
        s.bind(("127.0.0.1", 0))
        s.listen()
        address = f"127.0.0.1:{s.getsockname()[1]}"
        result = await cli("approvals", "list", "--admin", address)
    assert result.exit_code == 1
    assert lines(result.stderr) == [
        f"policy-extproc: no answer from the admin API at {address} within 0.5 s"
    ]


async def test_the_ext_proc_port_is_not_taken_for_the_admin_api(admin: Admin) -> None:
    wrong = f"127.0.0.1:{admin.running.sidecar.port}"
    result = await cli("policies", "list", "--admin", wrong)
    assert result.exit_code == 1
    [line] = lines(result.stderr)
    assert line.startswith(f"policy-extproc: {wrong} does not serve the admin API")


async def test_the_admin_address_can_come_from_the_environment(admin: Admin) -> None:
    result = await cli("policies", "list", POLICY_EXTPROC_ADMIN=admin.address)
    assert result.exit_code == 0, result.output
    assert "acme_base" in table(result)


async def test_refusals_of_the_server_are_one_line(admin: Admin) -> None:
    result = await admin.cli("policies", "delete", "acme_base")
    assert result.exit_code == 1
    [line] = lines(result.stderr)
    assert line.startswith("policy-extproc: failed_precondition: ")
    assert "acme_base" in line


# -- approvals ---------------------------------------------------------------------------------


async def escalate(admin: Admin, text: str, rid: str) -> str:
    """A request for a model that needs approval; the id of the approval it opened."""
    answer = await admin.decide(text, rid, model="gpt-4.5-preview")
    assert (answer["decision"], answer["error"]["code"]) == ("escalate", "approval_required")
    return str(answer["approval_id"])


async def test_approvals_list_approve_deny(admin: Admin) -> None:
    first = await escalate(admin, "summarise the quarter", "r-1")
    second = await escalate(admin, "write a novel", "r-2")

    listed = await admin.cli("approvals", "list")
    assert lines(listed.stdout)[0].split() == [
        "ID", "ORG", "USER", "STATUS", "EXPIRES", "BY", "DETAILS"
    ]  # fmt: skip
    rows = table(listed)
    assert list(rows) == [first, second]  # oldest first
    row = rows[first]
    assert (row["ORG"], row["USER"], row["STATUS"], row["BY"]) == ("acme", "alice", "pending", "-")
    assert "model=gpt-4.5-preview" in row["DETAILS"] and "rule=big-models" in row["DETAILS"]

    approved = await admin.cli("approvals", "approve", first, "--reason", "quarterly report")
    assert approved.exit_code == 0, approved.output
    assert lines(approved.stdout) == [f"{first}: approved by bob (org acme, user alice)"]
    denied = await admin.cli("approvals", "deny", second, "--reason", "no")
    assert lines(denied.stdout) == [f"{second}: denied by bob (org acme, user alice)"]

    pending = await admin.cli("approvals", "list", "--status", "pending")
    assert table(pending) == {}
    decided = table(await admin.cli("approvals", "list"))
    assert (decided[first]["STATUS"], decided[first]["BY"]) == ("approved", "bob")
    assert (decided[second]["STATUS"], decided[second]["BY"]) == ("denied", "bob")

    # The approved request passes once when resent with the id; the denied one stays refused.
    big = "gpt-4.5-preview"
    retried = await admin.decide("summarise the quarter", "r-3", model=big, **{ID: first})
    assert retried["decision"] == "allow"
    refused = await admin.decide("write a novel", "r-4", model=big, **{ID: second})
    assert refused["error"]["code"] == "approval_invalid"
    assert "denied by bob: no" in str(refused["reason"])
    assert table(await admin.cli("approvals", "list", "--status", "consumed")).keys() == {first}

    verdicts = [r for r in admin.running.sink.records if r.phase == "approval"]
    assert [(r.decision, r.reason, r.request_id) for r in verdicts] == [
        ("allow", "approved by bob: quarterly report", "r-1"),
        ("block", "denied by bob: no", "r-2"),
    ]


async def test_deciding_twice_or_an_unknown_id_is_refused(admin: Admin) -> None:
    approval_id = await escalate(admin, "hello", "r-1")
    ok = await admin.cli("approvals", "deny", approval_id)
    assert ok.exit_code == 0, ok.output
    again = await admin.cli("approvals", "approve", approval_id)
    assert again.exit_code == 1
    assert lines(again.stderr) == [
        f"policy-extproc: failed_precondition: approval '{approval_id}' is already denied by bob"
    ]
    unknown = await admin.cli("approvals", "approve", "apr_nobody")
    assert unknown.exit_code == 1
    assert lines(unknown.stderr) == [
        "policy-extproc: not_found: no approval 'apr_nobody' (unknown or expired)"
    ]


async def test_with_a_token_the_approver_is_the_tokens_name(admin: Admin) -> None:
    approval_id = await escalate(admin, "hello", "r-1")
    named = await admin.cli("approvals", "approve", approval_id, "--approver", "dana")
    assert named.exit_code == 1
    assert "with a token, the approver recorded is the token's name" in named.stderr
    result = await admin.cli("approvals", "approve", approval_id, LOGNAME="dana")
    assert result.exit_code == 0, result.output
    assert lines(result.stdout) == [f"{approval_id}: approved by bob (org acme, user alice)"]
