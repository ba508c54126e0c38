"""The dry run (admin ``Evaluate``, ``eval``, ``policy-extproc test``) decides as the server
does, stateful rules included, and consumes nothing: an approval rule escalates without opening
an approval, an exhausted limit or budget throttles, and the server admits exactly as many
requests after any number of dry runs as it would have without them.

The server is an ``Engine`` over the same ``MemoryState`` the dry runs read, driven through its
ext_proc state machine; no mocks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from policy_extproc.admin.evaluate import dry_run
from policy_extproc.audit.sink import RecordingSink
from policy_extproc.enforce.driver import ExtProcStream
from policy_extproc.enforce.engine import Engine
from policy_extproc.enforce.envoy_replies import Immediate
from policy_extproc.enforce.translate import Event
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.loader import load_sources
from policy_extproc.policytest import Case, check_case
from policy_extproc.sources.catalog import load_catalog
from policy_extproc.sources.store import PolicyStore
from policy_extproc.state.memory import MemoryState

CATALOG = load_catalog()  # the packaged catalog, read once as the server's edge does

POLICIES = """
- policy_name: acme_limits
  org: acme
  rules:
    - {type: rate_limit, id: per_user, per: user, requests: 3, window: day}
    - {type: approval, id: big, models: ["gpt-4.5*"]}
- policy_name: globex_budget
  org: globex
  rules:
    - {type: cost_budget, id: daily, per: user, limit_usd: 0.0001, period: day}
"""

CHAT = "/v1/chat/completions"
ALICE = {"x-org-id": "acme", "x-user-id": "alice"}


def chat(model: str = "gpt-4o-mini", text: str = "hello") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()


@pytest.fixture
def snapshot() -> Snapshot:
    return Snapshot(load_sources([("policies.yaml", POLICIES)]))


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


@pytest.fixture
def engine(snapshot: Snapshot, state: MemoryState) -> Engine:
    return Engine(PolicyStore(snapshot=snapshot), RecordingSink(), catalog=CATALOG, state=state)


async def served(engine: Engine, body: bytes, rid: str, headers: dict[str, str]) -> str:
    """The server's decision for one request: its x-policy-decision, or the refusal's code."""
    stream = ExtProcStream(engine)
    h = {":method": "POST", ":path": CHAT, "x-request-id": rid, **headers}
    h["content-length"] = str(len(body))
    await stream.handle(Event("request_headers", h, b"", False))
    reply = await stream.handle(Event("request_body", {}, body, True))
    stream.close()
    if isinstance(reply, Immediate):
        code: str = json.loads(reply.body)["error"]["code"]
        return code
    return "allow"


async def dry(snapshot: Snapshot, state: MemoryState, body: bytes, headers: Any) -> Any:
    return (await dry_run(snapshot, body, headers, CHAT, state=state)).record


async def test_an_approval_rule_escalates_in_the_dry_run_as_on_the_server(
    snapshot: Snapshot, state: MemoryState, engine: Engine
) -> None:
    big = chat("gpt-4.5-preview")
    rec = await dry(snapshot, state, big, ALICE)
    assert (rec.decision, rec.policy, rec.rule) == ("escalate", "acme_limits", "big")
    assert await state.approval_list() == []  # none opened: nobody could approve a dry run
    # The server, on the same state, escalates and opens one.
    assert await served(engine, big, "srv-1", ALICE) == "approval_required"
    assert len(await state.approval_list()) == 1


async def test_an_exhausted_limit_throttles_in_the_dry_run_and_dry_runs_consume_nothing(
    snapshot: Snapshot, state: MemoryState, engine: Engine
) -> None:
    body = chat()
    for _ in range(5):  # more dry runs than the limit holds
        assert (await dry(snapshot, state, body, ALICE)).decision == "allow"
    # The server still admits its three, and refuses the fourth.
    got = [await served(engine, body, f"srv-{i}", ALICE) for i in range(4)]
    assert got == ["allow", "allow", "allow", "rate_limited"]
    rec = await dry(snapshot, state, body, ALICE)
    assert (rec.decision, rec.error_code, rec.rule) == ("throttle", None, "per_user")
    # Another user's limiter is untouched by all of this.
    bob = {"x-org-id": "acme", "x-user-id": "bob"}
    assert (await dry(snapshot, state, body, bob)).decision == "allow"


async def test_a_spent_budget_throttles_in_the_dry_run(
    snapshot: Snapshot, state: MemoryState, engine: Engine
) -> None:
    carol = {"x-org-id": "globex", "x-user-id": "carol"}
    body = chat(text="hello " * 50)
    first = await dry(snapshot, state, body, carol)
    assert first.decision == "throttle"  # the estimate alone is over $0.0001
    assert await served(engine, body, "srv-b", carol) == "budget_exceeded"


async def test_a_policy_test_expecting_escalate_passes(snapshot: Snapshot) -> None:
    """``policy-extproc test`` runs the same dry run: an approval rule's case says escalate."""
    case = Case(
        "t_test.yaml", 1, "big models need approval", ALICE, CHAT, chat("gpt-4.5-preview"),
        {"decision": "escalate", "rule": "big"},
    )  # fmt: skip
    outcome = await check_case(snapshot, case)
    assert outcome.passed, outcome.failures
