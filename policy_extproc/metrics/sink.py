"""Decision metrics counted from the audit records (``MetricsSink``), with bounded labels."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..audit.record import AuditRecord, FiredRule, Redactions
from ..state.redis import OPERATIONS as REDIS_OPERATIONS
from ..state.redis import OUTCOMES as REDIS_OUTCOMES

log = logging.getLogger(__name__)

# The budget alerts enforce/limits.py writes into a record ("budget P/R per team ml: 80% of
# $500.00 reached ...", "blocked by budget P/R per team ml"): counted by threshold, so an
# alert rule can fire when a budget is used up. tests/unit/test_metrics.py feeds it the texts
# limits.outcome really writes.
_BUDGET_ALERT = re.compile(
    r"^(?:budget (?P<policy>[^/\s]+)/(?P<rule>\S+) per .*?: (?P<pct>\d+)% of "
    r"|blocked by budget (?P<bpolicy>[^/\s]+)/(?P<brule>\S+) per )"
)

# A decision takes tens to hundreds of microseconds in the pure core, milliseconds with Redis;
# the shipped Envoy gives up at its message_timeout (0.5 s), and a large body may ask for up to
# max_message_timeout (5 s): the buckets reach that far, so a slow tail is seen, not clipped.
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
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# A Redis call: a fraction of a millisecond on a near Redis, the state timeout (--redis-timeout,
# 100 ms by default) at most; the buckets go past it for a larger timeout.
REDIS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# gen_ai.client.token.usage's advised buckets (OpenTelemetry GenAI metrics conventions).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
MAX_LABEL_VALUES = 200
# Organisations and teams are tenants: a deployment may have thousands. Spend is kept for the
# first MAX_TENANTS (org, team) pairs seen and folded into "other" past that, as models are.
MAX_TENANTS = 100
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

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        limit: LabelLimit | None = None,
        tenants: LabelLimit | None = None,
    ) -> None:
        self.limit = limit or LabelLimit()
        # One label "tenant" holding "org/team", so the cap counts pairs, not orgs and teams apart.
        self.tenants = tenants or LabelLimit(MAX_TENANTS)
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
        self.spend = Counter(
            "policy_extproc_spend_usd_total",
            "Cost of responses in US dollars (catalog prices), by organisation and team.",
            ["org", "team"],
            registry=r,
        )
        self.tenant_tokens = Counter(
            "policy_extproc_tenant_tokens_total",
            "Tokens the provider reported, by organisation, team and direction.",
            ["org", "team", "direction"],
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request (OpenTelemetry gen_ai.client.token.usage), by token type.",
            ["gen_ai_token_type", "gen_ai_request_model", "gen_ai_provider_name"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.budget_alerts = Counter(
            "policy_extproc_budget_alerts_total",
            "Budget thresholds crossed (threshold 50%, 80%, 100%, ...) and budget refusals "
            "(threshold 'blocked'), by policy and rule.",
            ["policy", "rule", "threshold"],
            registry=r,
        )
        self.phase_latency = Histogram(
            "policy_extproc_phase_seconds",
            "Time the sidecar spent answering one ext_proc message, by phase.",
            ["phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_latency = Histogram(
            "policy_extproc_redis_latency_seconds",
            "Time one Redis call took (connection checks and pool waits included), by "
            "operation (admit, reconcile, breaker_state, ...) and outcome (ok, error, timeout).",
            ["operation", "outcome"],
            buckets=REDIS_BUCKETS,
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

    def phase(self, phase: str, seconds: float) -> None:
        """One ext_proc message answered (request_headers, request_body, ...) in ``seconds``."""
        self.phase_latency.labels(phase).observe(seconds)

    def redis(self, operation: str, outcome: str, seconds: float) -> None:
        """One Redis call (``RedisState``'s observer): its operation and outcome, bounded by the
        state module's own lists (anything else is counted as ``other``)."""
        if operation not in REDIS_OPERATIONS:
            operation = OTHER
        if outcome not in REDIS_OUTCOMES:
            outcome = OTHER
        self.redis_latency.labels(operation, outcome).observe(seconds)

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
        for text in record.alerts:
            m = _BUDGET_ALERT.match(text)
            if m is not None:
                policy, rule = m["policy"] or m["bpolicy"], m["rule"] or m["brule"]
                threshold = f"{m['pct']}%" if m["pct"] else "blocked"
                self.budget_alerts.labels(label("policy", policy), label("rule", rule),
                                          label("threshold", threshold)).inc()  # fmt: skip
        for kind in record.degraded:
            self.degraded.labels(label("kind", kind)).inc()
            if kind.partition(":")[0] in _STATE_DEGRADED:
                self.state_errors.labels("open").inc()

    def _response(self, record: AuditRecord) -> None:
        request = self._open.pop(record.request_id, ((), ())) if record.request_id else ((), ())
        if (record.fired, record.redactions) != request:  # the output guardrails' decision
            self._findings(record)
        model = self.limit("model", record.model)
        org, team = self._tenant(record)
        if record.usage is not None:
            provider = self.limit("provider", record.provider)
            for direction, n in (("input", record.usage.input_tokens),
                                 ("output", record.usage.output_tokens)):  # fmt: skip
                n = max(0, n)
                self.tokens.labels(direction, model).inc(n)
                self.tenant_tokens.labels(org, team, direction).inc(n)
                self.token_usage.labels(direction, model, provider).observe(n)
        if record.cost_usd is not None and record.cost_usd > 0:
            self.cost.labels(model).inc(record.cost_usd)
            self.spend.labels(org, team).inc(record.cost_usd)

    def _tenant(self, record: AuditRecord) -> tuple[str, str]:
        org, team = record.org or "", record.team or ""
        if self.tenants("tenant", f"{org}/{team}") == OTHER:
            return OTHER, OTHER
        return org, team

    def _findings(self, record: AuditRecord) -> None:
        label = self.limit
        for fired in record.fired:
            self.firings.labels(
                label("policy", fired.policy), label("rule", fired.rule), fired.action
            ).inc()
        for kind, count in record.redactions:
            self.redactions.labels(label("type", kind)).inc(count)
