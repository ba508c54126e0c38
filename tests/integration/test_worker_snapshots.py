"""A worker process keeps the two snapshots it compiled last, and the parent knows which: a
policy set that comes back (A, B, C, then A again: a push undone, a file edit reverted) is
sent to the worker again, not assumed compiled there."""

from __future__ import annotations

import asyncio
import json

from policy_extproc.enforce.work import WorkerPool
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import DEFAULT_IDENTITY
from policy_extproc.policy.loader import load_sources
from policy_extproc.policy.model import Secrets
from policy_extproc.sources.catalog import load_catalog

HEADERS = {":path": "/v1/chat/completions", ":method": "POST", "x-org-id": "acme"}
BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "alpha beta gamma"}]}
).encode()


def _snapshot(keyword: str) -> Snapshot:
    policy = f"""
policy_name: p
org: acme
rules:
  - {{type: content_filter, id: {keyword}, keywords: [{keyword}]}}
"""
    return Snapshot(load_sources([("p.yaml", policy)]), secrets=Secrets(year=2026))


def test_a_snapshot_that_comes_back_is_compiled_again_in_the_worker() -> None:
    a, b, c = _snapshot("alpha"), _snapshot("beta"), _snapshot("gamma")
    judge = load_catalog().judge
    pool = WorkerPool(1, 120.0)

    async def run_all() -> list[list[str]]:
        fired = []
        for snapshot in (a, b, c, a, c, b, b):
            ex = await pool.run(snapshot, (HEADERS, None, BODY, DEFAULT_IDENTITY, judge))
            fired.append([f.rule for f in ex.findings.fired])
        return fired

    try:
        fired = asyncio.run(run_all())
    finally:
        pool.close()
    want = [["alpha"], ["beta"], ["gamma"], ["alpha"], ["gamma"], ["beta"], ["beta"]]
    assert fired == want
    assert pool.started == 1  # one worker all along: nothing failed, nothing was restarted
