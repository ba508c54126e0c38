"""Values of the core <-> messages of ``policy_extproc.v1``: the one place that knows both."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from .._proto import admin_pb2, decision_pb2
from ..audit.record import AuditRecord
from ..policy.model import Policy
from ..sources.store import is_pushed
from ..state.base import Approval

# AuditRecord fields that are None when unknown: proto3 `optional`, left unset for None.
_OPTIONAL = ("policy", "rule", "user", "environment", "request_id", "org", "team", "model",
             "provider", "would_decide", "cost_usd", "error_code", "trace_id")  # fmt: skip


def decision_record(record: AuditRecord) -> Any:
    """An ``AuditRecord`` as a ``DecisionRecord`` message."""
    msg = decision_pb2.DecisionRecord(
        decision=record.decision,
        reason=record.reason,
        timestamp=record.timestamp,
        mode=record.mode,
        compliance=record.compliance,
        fired=[
            decision_pb2.FiredRule(policy=f.policy, rule=f.rule, action=f.action)
            for f in record.fired
        ],
        redactions=dict(record.redactions),
        latency_us=record.latency_us,
        policy_version=record.policy_version,
        alerts=record.alerts,
        degraded=record.degraded,
        phase=record.phase,
    )
    for name in _OPTIONAL:
        value = getattr(record, name)
        if value is not None:
            setattr(msg, name, value)
    if record.usage is not None:
        msg.usage.input_tokens = record.usage.input_tokens
        msg.usage.output_tokens = record.usage.output_tokens
    return msg


def timestamp(epoch_s: float) -> Timestamp:
    """Epoch seconds as a ``google.protobuf.Timestamp``."""
    ts = Timestamp()
    ts.FromNanoseconds(round(epoch_s * 1e9))
    return ts


def approval(a: Approval) -> Any:
    """An ``Approval`` as a message (the request fingerprint stays inside)."""
    msg = admin_pb2.Approval(
        id=a.id,
        org=a.org,
        user=a.user,
        status=a.status,
        created_at=timestamp(a.created_at),
        expires_at=timestamp(a.expires_at),
        details=dict(a.details),
    )
    if a.approver is not None:
        msg.approver = a.approver
    if a.reason is not None:
        msg.reason = a.reason
    return msg


def policy_info(p: Policy) -> Any:
    """What ``policies list`` shows of a policy."""
    msg = admin_pb2.PolicyInfo(
        name=p.name,
        source="pushed" if is_pushed(p) else "file",
        file=p.file,
        line=p.line,
        mode=p.mode,
        rules=len(p.rules),
        description=p.description,
        compliance=p.compliance,
    )
    for key, value in zip(("org", "team", "environment"), p.scope.keys, strict=True):
        if value is not None:
            setattr(msg, key, value)
    return msg
