"""Dry runs: decide one request against a snapshot, as ``policy-extproc eval`` does, and explain.

Only the rules decided from the request alone take part (models, content, PII, approvals by
model or tag); limits and budgets need shared state and are left out, so nothing is consumed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from ..audit.builder import record_for
from ..audit.record import AuditRecord
from ..enforce.work import examine
from ..llm.apis import FORMATS
from ..llm.request import rewrite_request
from ..policy.compiler import Snapshot
from ..policy.evaluator import decide
from ..policy.explain import explain


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


def dry_run(snapshot: Snapshot, body: bytes, headers: Mapping[str, str], path: str = "") -> DryRun:
    """Decide ``body`` without enforcing anything; raises ``RequestError`` for a bad body."""
    hdrs = {k.lower(): v for k, v in headers.items()}
    hdrs[":path"] = path or hdrs.get(":path") or guess_path(body)
    hdrs.setdefault(":method", "POST")
    # The server's own request pipeline (parse, identity, token prompts, the request rules).
    examined = examine(snapshot, hdrs, None, body)
    request, ctx = examined.request, examined.ctx
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    decision = decide(es, ctx, examined.findings)
    new_body = None
    if request is not None and decision.new_texts and decision.action in ("allow", "modify"):
        new_body = rewrite_request(request, decision.new_texts)
    record = record_for(decision, ctx, policy_version=snapshot.version)
    return DryRun(record, explain(es, ctx, decision), new_body)
