"""The one place that knows what a client sees for a decision (DESIGN.md s7).

block and escalate: 403, throttle: 429 with the x-ratelimit-* headers, malformed input: its
error's 4xx; each with a JSON body in the OpenAI error shape plus the decision fields. Everything
that continues carries ``x-policy-decision`` and ``x-request-id`` on the response headers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import PolicyExtprocError
from ..policy.decision import Decision, Throttle
from .envoy_replies import Continue, Immediate

DECISION_HEADER = "x-policy-decision"
# Seconds a shed request (admission.py) is told to wait before retrying.
SHED_RETRY_AFTER_S = 1
PROVIDER_HEADER = "x-policy-provider"
REDACTIONS_HEADER = "x-policy-redactions"
REQUEST_ID_HEADER = "x-request-id"
VERSION_HEADER = "x-policy-version"


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def metadata(decision: Decision, request_id: str, version: str = "") -> dict[str, Any]:
    """Dynamic metadata for Envoy's access log and later filters (namespace policy_extproc)."""
    md: dict[str, Any] = {"decision": decision.action, "request_id": request_id}
    for key in ("policy", "rule", "code", "reroute"):
        value = getattr(decision, key)
        if value:
            md[key] = value
    if decision.redactions:
        # Envoy's route adds x-policy-redactions from this when the response phases are skipped.
        md["redactions"] = ",".join(f"{k}={v}" for k, v in decision.redactions.items())
    if decision.mode == "log":
        md["would_decide"] = decision.would_decide
    if version:
        md["policy_version"] = version
    return md


# What a refusal is when the decision does not say (one built by hand, not by ``combine``).
_REFUSAL_CODES = {"block": "blocked", "throttle": "rate_limited", "escalate": "approval_required"}
_REFUSAL_STATUS = {"block": 403, "throttle": 429, "escalate": 403}


def _code(decision: Decision) -> str:
    if decision.code:
        return decision.code
    if decision.throttle is not None:
        return decision.throttle.code
    return _REFUSAL_CODES.get(decision.action, "blocked")


def _status(decision: Decision) -> int:
    # A refusal answered with a 2xx (Decision's default status) would look like a success.
    if decision.http_status >= 400:
        return decision.http_status
    return _REFUSAL_STATUS.get(decision.action, 403)


def _retry_after(t: Throttle) -> int:
    # Whole seconds (RFC 9110 s10.2.3), at least 1: "0" invites a retry storm. The body says the
    # same as the header, so a client reading either waits alike.
    return max(1, math.ceil(t.retry_after_s))


# What a client reads for a failure of ours. The detailed reason (a file path, a Redis error, an
# exception name) goes to the audit record and the log, which are the operator's; the client
# learns what happened and whether retrying can help, never where or how the server broke.
_PUBLIC_REASONS = {
    "audit_unavailable": "the decision could not be recorded in the audit log, so the request "
    "is refused; retry later",
    "state_unavailable": "limits and budgets cannot be checked right now, so the request is "
    "refused; retry later",
    "envoy_gave_up": "the policy decision took longer than the gateway waits for it",
    "protocol_error": "the gateway sent the policy service an unexpected message",
    "overloaded": "the policy service is overloaded; retry after the time in retry-after",
}
_INTERNAL = "internal error in the policy service"


def public_reason(decision: Decision) -> str:
    """The reason a client is shown: the decision's own, or for a 5xx a fixed sentence."""
    if decision.http_status < 500:
        return decision.reason
    return _PUBLIC_REASONS.get(_code(decision), _INTERNAL)


def error_body(decision: Decision, request_id: str) -> bytes:
    """The JSON body of a refused request: OpenAI's error shape plus the decision fields."""
    reason = public_reason(decision)
    if decision.http_status >= 500:
        kind = "server_error"  # our failure (protocol, internal, audit, state), not a policy's
    elif decision.http_status in (400, 413):
        kind = "invalid_request_error"
    else:
        kind = "policy_violation"
    body: dict[str, Any] = {
        "error": {"type": kind, "code": _code(decision), "message": reason},
        "decision": decision.action,
        "policy": decision.policy,
        "rule": decision.rule,
        "reason": reason,
        "request_id": request_id,
    }
    if decision.approval_id:
        body["approval_id"] = decision.approval_id
    if decision.throttle is not None:
        body["retry_after"] = _retry_after(decision.throttle)
    elif decision.code == "overloaded":
        body["retry_after"] = SHED_RETRY_AFTER_S
    return _json(body)


def refusal(decision: Decision, request_id: str, version: str = "") -> Immediate:
    """The immediate response for block, escalate, throttle and malformed input."""
    headers = [
        ("content-type", "application/json"),
        (DECISION_HEADER, decision.action),
        (REQUEST_ID_HEADER, request_id),
    ]
    t = decision.throttle
    if t is not None:
        headers += [
            ("retry-after", str(_retry_after(t))),
            ("x-ratelimit-limit", str(t.limit)),
            ("x-ratelimit-remaining", str(max(0, t.remaining))),
            ("x-ratelimit-reset", str(max(0, math.ceil(t.reset_s)))),
        ]
    elif decision.code == "overloaded":
        headers.append(("retry-after", str(SHED_RETRY_AFTER_S)))
    return Immediate(
        status=_status(decision),
        body=error_body(decision, request_id),
        headers=tuple(headers),
        metadata=metadata(decision, request_id, version),
        details=f"policy_extproc_{_code(decision)}",
    )


def request_error(exc: PolicyExtprocError) -> Decision:
    """The decision for input we cannot evaluate: refused with the error's status and code."""
    return Decision(action="block", reason=exc.message, code=exc.code, http_status=exc.http_status)


def proceed(
    decision: Decision,
    request_id: str,
    *,
    new_body: bytes | None,
    version: str = "",
    phase: str = "request_body",
) -> Continue:
    """The request goes on: rewritten body (with its content-length), route change if any."""
    headers: list[tuple[str, str]] = []
    if new_body is not None:
        headers.append(("content-length", str(len(new_body))))
    if decision.reroute:
        headers.append((PROVIDER_HEADER, decision.reroute))
    return Continue(
        phase=phase,  # type: ignore[arg-type]
        set_headers=tuple(headers),
        body=new_body,
        clear_route_cache=decision.reroute is not None,
        metadata=metadata(decision, request_id, version),
    )


def response_headers(
    decision: Decision, request_id: str, *, body_mode: str | None, drop_length: bool
) -> Continue:
    """Headers every response through Envoy carries, and how to process the response body."""
    headers = [(DECISION_HEADER, decision.action), (REQUEST_ID_HEADER, request_id)]
    if decision.redactions:
        headers.append(
            (REDACTIONS_HEADER, ",".join(f"{k}={v}" for k, v in decision.redactions.items()))
        )
    if decision.reroute:
        headers.append((PROVIDER_HEADER, decision.reroute))
    return Continue(
        phase="response_headers",
        set_headers=tuple(headers),
        # A streamed body we may rewrite chunk by chunk has no fixed length (DESIGN.md s8).
        remove_headers=("content-length",) if drop_length else (),
        response_body_mode=body_mode,  # type: ignore[arg-type]
    )
