"""Both shared-state reads failing open: the record names both, not only the last."""

from __future__ import annotations

import json
from typing import Any

from policy_extproc.enforce import limits
from policy_extproc.enforce.stateful import StatefulChecks
from policy_extproc.errors import StateError
from policy_extproc.llm.request import parse_request
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.policy.loader import load_sources
from policy_extproc.sources.catalog import load_catalog
from policy_extproc.state.memory import MemoryState

POLICY = """
policy_name: acme
org: acme
rules:
  - type: rate_limit
    id: rpm
    requests: 100
    window: minute
    per: [org]
    on_error: open
  - type: failover
    provider: openai
    fallbacks: [azure-openai]
"""


class Unreachable(MemoryState):
    """Redis gone: every read of the limiters and the breakers fails."""

    async def admit(self, *args: Any, **kwargs: Any) -> Any:
        raise StateError("connection refused")

    async def breaker_state(self, *args: Any, **kwargs: Any) -> Any:
        raise StateError("connection refused")


async def test_limits_and_breakers_unavailable_are_both_recorded() -> None:
    catalog = load_catalog()
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    request = parse_request("/v1/chat/completions", body.encode())
    ctx = build_context({"x-org-id": "acme", "x-user-id": "alice"}, request, catalog=catalog)
    es = Snapshot(load_sources([("p.yaml", POLICY)])).resolve(ctx.org, ctx.team, ctx.environment)
    checks = StatefulChecks(Unreachable(), catalog, limits.Settings())
    result = await checks.run(es, ctx, (), "r-1")
    assert result.outcome.degraded == ("state_unavailable:open", "breaker_unavailable:open")
    assert result.degraded_admission
