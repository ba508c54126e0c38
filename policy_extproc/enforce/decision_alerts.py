"""Alerts on enforced blocks: an audit sink that turns each such record into a webhook alert.

It sees every record, as the durable log does, so no path that blocks (a rule, an output
guardrail, a compliance pack) can forget to alert; shadow decisions (``mode: log``) and
refusals of malformed requests (``error_code`` set) alert nobody. Escalations alert from the
engine, which knows the approval id an approver needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..audit.record import AuditRecord
from ..policy.compiler import Snapshot
from .alerts import AlertNotifier


class BlockAlertSink:
    """An ``AuditSink`` that sends an alert for every enforced block; never raises."""

    def __init__(self, notifier: AlertNotifier) -> None:
        self.notifier = notifier

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        if record.decision != "block" or record.error_code is not None or not record.policy:
            return
        alert = {
            "type": "policy_block",
            "decision": record.decision,
            "policy": record.policy,
            "rule": record.rule,
            "reason": record.reason,
            "phase": record.phase,
            "org": record.org,
            "team": record.team,
            "user": record.user,
            "environment": record.environment,
            "model": record.model,
            "compliance": list(record.compliance),
            "request_id": record.request_id,
            "timestamp": record.timestamp,
        }
        key = (record.policy, record.rule or "", record.user or "")
        self.notifier.notify({k: v for k, v in alert.items() if v not in (None, "")}, key=key)

    def close(self) -> None:
        """Nothing to flush: the notifier delivers and is closed by its owner."""


class RuleOptOuts:
    """``(policy, rule) -> bool``: whether the rule in force says ``alert: false``.

    Read from the snapshot in force, and worked out once per snapshot.
    """

    def __init__(self, current: Callable[[], Snapshot | None]) -> None:
        self._current = current
        self._version: str | None = None
        self._off: frozenset[tuple[str, str]] = frozenset()

    def __call__(self, policy: str, rule: str) -> bool:
        snapshot = self._current()
        if snapshot is None:
            return False
        if snapshot.version != self._version:
            self._off = frozenset(
                (cp.policy.name, r.id)
                for cp in snapshot.policies
                for r in cp.policy.rules
                if not r.alert
            )
            self._version = snapshot.version
        return (policy, rule) in self._off
