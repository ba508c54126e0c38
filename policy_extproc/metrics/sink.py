"""Decision metrics counted from the audit records (``MetricsSink``), with bounded labels."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..audit.record import AuditRecord, FiredRule, Redactions

log = logging.getLogger(__name__)

# A decision takes tens to hundreds of microseconds in the pure core, milliseconds with Redis;
# past 100 ms Envoy's default message_timeout (200 ms) is close (DESIGN.md s8).
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)
MAX_LABEL_VALUES = 200
MAX_LABEL_LENGTH = 128
OTHER = "other"
MAX_OPEN_EXCHANGES = 10_000
# Request decisions that let the request through, so a response record may follow.
_CONTINUES = frozenset({"allow", "modify"})
# Degradations that mean the state backend (Redis) failed and the request went on (on_error: open).
_STATE_DEGRADED = frozenset({"state_unavailable", "breaker_unavailable"})


class LabelLimit:
    """Keeps each label to a bounded set of values; values past the bound become ``other``."""

    def __init__(self, max_values: int = MAX_LABEL_VALUES, max_length: int = MAX_LABEL_LENGTH):
        self.max_values = max_values
        self.max_length = max_length
        self._seen: dict[str, set[str]] = {}

    def __call__(self, label: str, value: str | None) -> str:
        value = value or ""
        seen = self._seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) >= self.max_values or len(value) > self.max_length:
            return OTHER
        seen.add(value)
        return value


class MetricsSink:
    """An ``AuditSink`` that counts records into Prometheus metrics; it never raises."""

    def __init__(self, registry: CollectorRegistry, *, limit: LabelLimit | None = None) -> None:
        self.limit = limit or LabelLimit()
        r = registry
        self.decisions = Counter(
            "policy_extproc_decisions_total",
            "Decisions on requests, by action and the policy and rule that decided.",
            ["action", "policy", "rule", "mode"],
            registry=r,
        )
        self.latency = Histogram(
            "policy_extproc_decision_latency_seconds",
            "Time from request headers to the decision (the record's latency_us).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.firings = Counter(
            "policy_extproc_rule_firings_total",
            "Rules that fired; action ends in ':log' for log-mode policies.",
            ["policy", "rule", "action"],
            registry=r,
        )
        self.redactions = Counter(
            "policy_extproc_redactions_total",
            "Values redacted from requests, by type.",
            ["type"],
            registry=r,
        )
        self.errors = Counter(
            "policy_extproc_errors_total",
            "Requests refused for an error, by error code.",
            ["code"],
            registry=r,
        )
        self.degraded = Counter(
            "policy_extproc_degraded_total",
            "Fail-open paths taken, by kind (e.g. state_unavailable:open).",
            ["kind"],
            registry=r,
        )
        self.state_errors = Counter(
            "policy_extproc_state_errors_total",
            "State backend failures met by requests: refused (closed) or let through (open).",
            ["on_error"],
            registry=r,
        )
        self.tokens = Counter(
            "policy_extproc_tokens_total",
            "Tokens the provider reported, by direction (input, output) and model.",
            ["direction", "model"],
            registry=r,
        )
        self.cost = Counter(
            "policy_extproc_cost_usd_total",
            "Cost of responses in US dollars (catalog prices), by model.",
            ["model"],
            registry=r,
        )
        # Sidecars that never see a state failure still show the series, at zero.
        for on_error in ("closed", "open"):
            self.state_errors.labels(on_error)
        # request_id -> (firings, redactions) of a let-through request that had some, oldest
        # first, until its response record says whether it repeats them (module docstring).
        self._open: OrderedDict[str, tuple[tuple[FiredRule, ...], Redactions]] = OrderedDict()

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        """Count ``record``; a failure here is logged, never passed on to the decision."""
        try:
            if record.phase == "request":
                self._request(record)
            elif record.phase == "response":
                self._response(record)
        except Exception:
            log.exception("metrics for request %s not counted", record.request_id)

    def close(self) -> None:
        """Nothing to flush: the registry is read by the endpoint until it stops."""

    def _request(self, record: AuditRecord) -> None:
        label = self.limit
        self.decisions.labels(
            record.decision, label("policy", record.policy), label("rule", record.rule), record.mode
        ).inc()
        self.latency.observe(record.latency_us / 1_000_000)
        self._findings(record)
        if (
            record.request_id
            and (record.fired or record.redactions)
            and record.decision in _CONTINUES
            and not record.error_code
        ):
            self._open[record.request_id] = (record.fired, record.redactions)
            self._open.move_to_end(record.request_id)
            while len(self._open) > MAX_OPEN_EXCHANGES:
                self._open.popitem(last=False)
        if record.error_code:
            self.errors.labels(label("code", record.error_code)).inc()
            if record.error_code == "state_unavailable":
                self.state_errors.labels("closed").inc()
        for kind in record.degraded:
            self.degraded.labels(label("kind", kind)).inc()
            if kind.partition(":")[0] in _STATE_DEGRADED:
                self.state_errors.labels("open").inc()

    def _response(self, record: AuditRecord) -> None:
        request = self._open.pop(record.request_id, ((), ())) if record.request_id else ((), ())
        if (record.fired, record.redactions) != request:  # the output guardrails' decision
            self._findings(record)
        model = self.limit("model", record.model)
        if record.usage is not None:
            self.tokens.labels("input", model).inc(max(0, record.usage.input_tokens))
            self.tokens.labels("output", model).inc(max(0, record.usage.output_tokens))
        if record.cost_usd is not None and record.cost_usd > 0:
            self.cost.labels(model).inc(record.cost_usd)

    def _findings(self, record: AuditRecord) -> None:
        label = self.limit
        for fired in record.fired:
            self.firings.labels(
                label("policy", fired.policy), label("rule", fired.rule), fired.action
            ).inc()
        for kind, count in record.redactions:
            self.redactions.labels(label("type", kind)).inc(count)
