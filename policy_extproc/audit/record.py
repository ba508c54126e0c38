"""The audit record: one per decision, the shape of DESIGN.md section 9.

A record holds what was decided and why, never what was said: no prompt text, no response
text and no PII values, only types, counts and positions. ``prev_hash`` and ``hash`` are not
fields: the hash chain (``chain.py``) adds them when it writes the line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Mode = Literal["enforce", "log"]
Redactions = tuple[tuple[str, int], ...]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# RFC 3339, UTC, always six fractional digits: every line of the log sorts and parses alike.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")


@dataclass(frozen=True, slots=True)
class FiredRule:
    """A rule that fired: the policy it came from, its id, and the action it asked for."""

    policy: str
    rule: str
    action: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage as the provider reported it."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One decision, as written to the audit log and exported as a span.

    ``timestamp`` is when the decision started (the request reached the sidecar), as RFC 3339
    UTC with microseconds (see ``utc_timestamp``); the decision took ``latency_us`` from there.
    ``mode`` is ``log`` when a policy in shadow mode (``mode: log``) fired: ``would_decide`` is
    then the decision with the shadow rules enforced too, and ``decision`` what was enforced.
    ``degraded`` names fail-open paths taken, such as ``state_unavailable:open``.
    """

    decision: str
    policy: str | None
    rule: str | None
    reason: str
    user: str | None
    environment: str | None
    timestamp: str
    request_id: str | None
    org: str | None = None
    team: str | None = None
    model: str | None = None
    provider: str | None = None
    mode: Mode = "enforce"
    would_decide: str | None = None
    compliance: tuple[str, ...] = ()
    fired: tuple[FiredRule, ...] = ()
    redactions: Redactions = ()
    usage: Usage | None = None
    cost_usd: float | None = None
    latency_us: int = 0
    policy_version: str = ""
    error_code: str | None = None
    alerts: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()
    trace_id: str | None = None
    # "request": the decision on the request; "response": the same exchange once the response
    # is over (usage, cost, output guardrails). Both carry the request_id.
    phase: str = "request"
    # What the client got when it is not the decision: "envoy_gave_up" (Envoy's message
    # timeout fired first: its 504, nothing reached the provider), "stream_cancelled" (the
    # stream was reset before the request was decided). None: the decision is what it got.
    outcome: str | None = None
    # The API the request spoke (openai.chat, anthropic.messages, ...): the span's
    # gen_ai.operation.name comes from it.
    api: str | None = None
    # What the provider's answer said about itself (response records only): the model that
    # answered, the answer's id, why each choice stopped (the provider's own values).
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    # Where the request goes: the provider's host and port, from the catalog (when it knows).
    server_address: str | None = None
    server_port: int | None = None

    def __post_init__(self) -> None:
        # Checked here, once, so that neither sink can be handed a record it cannot write.
        if self.mode not in ("enforce", "log"):
            raise ValueError(f"mode must be 'enforce' or 'log', not {self.mode!r}")
        if not _TIMESTAMP.match(self.timestamp):
            raise ValueError(
                f"timestamp must be RFC 3339 UTC with microseconds: {self.timestamp!r}"
            )
        if self.latency_us < 0:
            raise ValueError("latency_us must not be negative")
        # NaN and infinity are not JSON: a line holding one could not be read by other tools.
        if self.cost_usd is not None and not math.isfinite(self.cost_usd):
            raise ValueError("cost_usd must be a finite number")

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, keys in field order, absent values as None."""
        usage = self.usage
        return {
            "decision": self.decision,
            "policy": self.policy,
            "rule": self.rule,
            "reason": self.reason,
            "user": self.user,
            "environment": self.environment,
            "timestamp": self.timestamp,
            "request_id": self.request_id,
            "org": self.org,
            "team": self.team,
            "model": self.model,
            "provider": self.provider,
            "mode": self.mode,
            "would_decide": self.would_decide,
            "compliance": list(self.compliance),
            "fired": [{"policy": f.policy, "rule": f.rule, "action": f.action} for f in self.fired],
            "redactions": dict(self.redactions),
            "usage": None
            if usage is None
            else {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            "cost_usd": self.cost_usd,
            "latency_us": self.latency_us,
            "policy_version": self.policy_version,
            "error_code": self.error_code,
            "alerts": list(self.alerts),
            "degraded": list(self.degraded),
            "trace_id": self.trace_id,
            "phase": self.phase,
            "outcome": self.outcome,
            "api": self.api,
            "response_model": self.response_model,
            "response_id": self.response_id,
            "finish_reasons": list(self.finish_reasons),
            "server_address": self.server_address,
            "server_port": self.server_port,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """Read back a dict made by ``to_dict`` (or a log line); chain keys are ignored."""
        usage = data.get("usage")
        return cls(
            decision=data["decision"],
            policy=data["policy"],
            rule=data["rule"],
            reason=data["reason"],
            user=data["user"],
            environment=data["environment"],
            timestamp=data["timestamp"],
            request_id=data["request_id"],
            org=data.get("org"),
            team=data.get("team"),
            model=data.get("model"),
            provider=data.get("provider"),
            mode=data.get("mode", "enforce"),
            would_decide=data.get("would_decide"),
            compliance=tuple(data.get("compliance", ())),
            fired=tuple(
                FiredRule(f["policy"], f["rule"], f["action"]) for f in data.get("fired", ())
            ),
            redactions=redaction_counts(data.get("redactions") or {}),
            usage=None if usage is None else Usage(usage["input_tokens"], usage["output_tokens"]),
            cost_usd=data.get("cost_usd"),
            latency_us=data.get("latency_us", 0),
            policy_version=data.get("policy_version", ""),
            error_code=data.get("error_code"),
            alerts=tuple(data.get("alerts", ())),
            degraded=tuple(data.get("degraded", ())),
            trace_id=data.get("trace_id"),
            phase=data.get("phase", "request"),
            outcome=data.get("outcome"),
            api=data.get("api"),
            response_model=data.get("response_model"),
            response_id=data.get("response_id"),
            finish_reasons=tuple(data.get("finish_reasons", ())),
            server_address=data.get("server_address"),
            server_port=data.get("server_port"),
        )


def redaction_counts(counts: Mapping[str, int]) -> Redactions:
    """Turn a ``type -> count`` mapping into the hashable form a record stores."""
    return tuple(counts.items())


# The last second formatted: (seconds since the epoch, its text up to the seconds). Records
# come many per second: strftime once a second, the microseconds by hand. Replaced whole, so
# threads (approvals, the audit log's callers) read a consistent pair.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def utc_timestamp(epoch_ns: int | None = None) -> str:
    """RFC 3339 UTC with microseconds, for now or for a ``time.time_ns()`` taken earlier."""
    global _last_second
    if epoch_ns is None:
        moment = datetime.now(UTC)
        epoch_us = (moment - _EPOCH) // _MICROSECOND
    else:
        epoch_us = epoch_ns // 1000
    second, micro = divmod(epoch_us, 1_000_000)
    cached = _last_second
    if cached[0] != second:
        text = (_EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = cached = (second, text)
    return f"{cached[1]}.{micro:06d}Z"


def timestamp_ns(timestamp: str) -> int:
    """Nanoseconds since the epoch for a record timestamp, exact to the microsecond."""
    # Integer arithmetic on timedeltas: datetime.timestamp() is a float and would round.
    return (datetime.fromisoformat(timestamp) - _EPOCH) // _MICROSECOND * 1000
