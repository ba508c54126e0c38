"""The CPU work of deciding a request and its budget: ``examine`` and ``check_budget``.

``examine`` is the one function that turns a request body into findings: parse, build the
context, resolve the rules in force, run every detector. It runs in the event loop for the
common small body, and in a worker process for a large one (``enforce/work.py``), so that one
tenant's 3 MB of e-mail addresses never holds up the other streams: the loop only moves bytes.
Both paths call the same function on the same compiled policies, so they decide alike.

The work budget, in two parts (``WorkSettings``):

- ``budget``: a unit known before any work, *body bytes x text scanners in force* (each PII
  rule, compliance pack with data types, and policy with request content filters scans the
  text once). A body over it is refused with 413 ``work_budget_exceeded`` on its headers
  (declared length) or on its body.
- ``timeout_s``: the elapsed time one offloaded request may take; past it the worker is killed
  and the request refused with the same 413. The sidecar asks Envoy for this much time, plus a
  margin, with ``override_message_timeout``: it must stay within Envoy's
  ``max_message_timeout`` (5 s in the shipped configurations).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import TokenPrompt, WorkBudgetExceeded
from ..llm.catalog import Catalog, ModelJudge
from ..llm.request import TOKEN_PROMPT_REFUSAL, LlmRequest, parse_request
from ..policy.compiler import EffectiveSet, Snapshot
from ..policy.context import DEFAULT_IDENTITY, IdentityConfig, build_context
from ..policy.decision import RequestContext
from ..policy.evaluator import Findings, check_request
from ..policy.model import allows_token_prompts
from ..policy.rules.compliance import ComplianceRule
from ..policy.rules.pii import PiiRule, detector_of

# Bodies below this many bytes are examined in the loop: a few KB take well under a
# millisecond, less than the round trip to a worker.
DEFAULT_OFFLOAD_BYTES = 32 * 1024
DEFAULT_TIMEOUT_S = 4.0  # + EXTENSION_MARGIN_S = 4.5 s, within Envoy's max_message_timeout: 5s
EXTENSION_MARGIN_S = 0.5  # the override asks Envoy for the time bound plus this
# 4 MiB bodies (the body limit) with 16 scanners, or 64 MiB with one.
DEFAULT_BUDGET = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkSettings:
    """How much work one request may cost, and where large bodies are examined."""

    budget: int = DEFAULT_BUDGET  # body bytes x text scanners; 0: no limit
    timeout_s: float = DEFAULT_TIMEOUT_S  # elapsed bound of an offloaded examination
    offload_bytes: int = DEFAULT_OFFLOAD_BYTES  # bodies at least this large go to a worker
    workers: int = 1  # worker processes; 0: every body is examined in the loop


@dataclass(slots=True)
class Examined:
    """What ``examine`` found: the parsed request, its context, and the rules' findings."""

    request: LlmRequest | None
    ctx: RequestContext
    findings: Findings = field(default_factory=Findings)


def examine(
    snapshot: Snapshot,
    headers: Mapping[str, str],
    claims: Mapping[str, Any] | None,
    body: bytes,
    identity: IdentityConfig = DEFAULT_IDENTITY,
    catalog: Catalog | ModelJudge | None = None,
) -> Examined:
    """Parse the body and run the request-only rules on it; raises ``RequestError``.
    ``catalog`` resolves an Azure deployment to the model the rules judge: required whenever
    there is a body to parse (``build_context`` reads no catalog of its own)."""
    if not body and headers.get(":method", "POST") in ("GET", "HEAD", "OPTIONS"):
        request = None  # model listings, health checks: nothing for a policy to read
    else:
        request = parse_request(headers.get(":path", "/"), body)
    # ``claims`` come from Envoy's jwt_authn filter: verified, so they win over headers.
    ctx = build_context(headers, request, claims=claims, config=identity, catalog=catalog)
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    # Token ids are text no rule can read: refused unless a policy in force allows them.
    tokens = request is not None and request.token_prompts
    if tokens and not allows_token_prompts(cp.policy for cp in es.policies):
        raise TokenPrompt(TOKEN_PROMPT_REFUSAL)
    return Examined(request, ctx, check_request(es, ctx))


def scanners(es: EffectiveSet) -> int:
    """How many times the request's text is scanned in this scope (at least once: parsing)."""
    n = len(es.content["request"])
    n += len([e for e in es.rules_of(PiiRule) if e.rule.direction != "response"])
    n += sum(1 for e in es.rules_of(ComplianceRule) if detector_of(e) is not None)
    return max(1, n)


def check_budget(settings: WorkSettings, es: EffectiveSet, size: int) -> None:
    """Refuse, before any work, a body whose size times its scanners is over the budget."""
    if settings.budget <= 0:
        return
    n = scanners(es)
    if size * n > settings.budget:
        raise WorkBudgetExceeded(
            f"request body of {size} bytes scanned by {n} rules is {size * n} units of work, "
            f"over the limit of {settings.budget} per request (body bytes x scanners)"
        )


def _compact(ex: Examined) -> Examined:
    """The same findings, each part's edits folded into one whole-part replacement (the same
    ``new_texts``): a worker's answer holds one edit per part, not one per e-mail address
    (150,000 tuples to unpickle in the loop would cost more than the work saved)."""
    f = ex.findings
    if ex.request is None or not f.edits:
        return ex
    parts = ex.request.parts
    edits = {}
    for i, part_edits in f.edits.items():
        text = Findings(edits={i: part_edits}).new_texts(parts)[parts[i].path]
        edits[i] = [(0, len(parts[i].text), text)]
    f.edits = edits
    return ex
