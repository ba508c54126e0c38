"""Dry runs: decide one request against a snapshot, as ``policy-extproc eval`` does, and explain.

The server's own pipeline (``enforce/pipeline.py``) decides it, stateful checks included, but
against a read of the state that consumes nothing: limits and budgets say whether they would
throttle (``StateBackend.peek``), an approval rule says it would escalate (no approval is
opened), a presented approval is checked but not used, breakers are read. ``state``, ``catalog``
and the limit ``settings`` are the server's (the admin ``Evaluate`` RPC: the same prices, Azure
deployments and limit options as its request path) or, offline, an empty ``MemoryState`` (full
limiters, nothing spent, no approvals), the packaged catalog and the default settings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass

from ..audit.builder import record_for
from ..audit.record import AuditRecord
from ..enforce import answers, limits, pipeline
from ..enforce.examine import examine
from ..enforce.stateful import StatefulChecks
from ..errors import PolicyExtprocError, RequestError
from ..llm.apis import FORMATS
from ..llm.catalog import Catalog
from ..policy.compiler import Snapshot
from ..policy.explain import explain
from ..sources.catalog import load_catalog
from ..state.base import StateBackend
from ..state.memory import MemoryState


@dataclass(frozen=True, slots=True)
class DryRun:
    """The would-be decision's audit record, its explanation, and the rewritten body if any."""

    record: AuditRecord
    explanation: list[str]
    body: bytes | None


def guess_path(body: bytes) -> str:
    """The path of the first API format whose ``looks_like`` matches the body (Anthropic's
    has 'system' or 'anthropic_version', Gemini's 'contents', ...), else /v1/chat/completions."""
    try:
        data = json.loads(body)
    except ValueError:
        return "/v1/chat/completions"
    if isinstance(data, dict):
        for fmt in FORMATS:
            if fmt.looks_like is not None and fmt.looks_like(data):
                return fmt.example_path
    return "/v1/chat/completions"


async def dry_run(
    snapshot: Snapshot,
    body: bytes,
    headers: Mapping[str, str],
    path: str = "",
    *,
    state: StateBackend | None = None,
    catalog: Catalog | None = None,
    settings: limits.Settings | None = None,
    offload: bool = False,
) -> DryRun:
    """Decide ``body`` without enforcing or consuming anything; raises ``RequestError`` for a
    bad body. ``offload``: parse and scan in a thread, off the caller's event loop (a server)."""
    hdrs = {k.lower(): v for k, v in headers.items()}
    hdrs[":path"] = path or hdrs.get(":path") or guess_path(body)
    hdrs.setdefault(":method", "POST")
    if catalog is None:
        catalog = load_catalog()
    # The server's own request pipeline (parse, identity, token prompts, the request rules).
    if offload:
        examined = await asyncio.to_thread(examine, snapshot, hdrs, None, body, catalog=catalog)
    else:
        examined = examine(snapshot, hdrs, None, body, catalog=catalog)
    ctx = examined.ctx
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    checks = StatefulChecks(
        state if state is not None else MemoryState(), catalog, settings or limits.Settings()
    )
    error_code = None
    try:
        rid = hdrs.get("x-request-id", "")
        ruled = await pipeline.rule(checks, es, examined, rid, consume=False)
    except RequestError:
        raise
    except PolicyExtprocError as exc:  # state unavailable (closed), an approval that does not fit
        decision, new_body, error_code = answers.request_error(exc), None, exc.code
    else:
        decision = ruled.decision
        new_body = pipeline.rewritten(examined.request, decision)
    record = record_for(decision, ctx, policy_version=snapshot.version, error_code=error_code)
    return DryRun(record, explain(es, ctx, decision), new_body)
