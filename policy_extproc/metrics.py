"""Prometheus metrics: counted from the audit records, read from the running parts at scrape time.

Every decision already produces an ``AuditRecord``, so the decision metrics come from a sink
(``MetricsSink``) beside the JSONL log and the spans: the request path makes one more cheap call
and knows nothing of Prometheus. What is not in a record (open streams, the policy set in force,
alert and span queues) is read when Prometheus scrapes, by ``RuntimeCollector``.

    policy_extproc_decisions_total{action, policy, rule, mode}     request records
    policy_extproc_decision_latency_seconds (histogram)            request records, latency_us
    policy_extproc_rule_firings_total{policy, rule, action}        request records, fired
    policy_extproc_redactions_total{type}                          request records
    policy_extproc_errors_total{code}                              request records, error_code
    policy_extproc_degraded_total{kind}                            request records, degraded
    policy_extproc_state_errors_total{on_error}                    state backend failures
    policy_extproc_tokens_total{direction, model}                  response records, usage
    policy_extproc_cost_usd_total{model}                           response records, cost_usd
    policy_extproc_open_streams, policy_extproc_policies, policy_extproc_policy_rules,
    policy_extproc_policy_info{version}, policy_extproc_policy_loaded_timestamp_seconds,
    policy_extproc_policy_reload_errors,
    policy_extproc_alerts_{sent,failed,dropped,suppressed,silenced}_total,
    policy_extproc_alert_queue_depth, policy_extproc_audit_spans_total{outcome},
    policy_extproc_audit_span_backlog                              read at scrape time

A response record carries either its request's decision again (firings, redactions,
degradations) or, when an output guardrail fired, the guardrails' own decision. Decisions,
errors and degradations are counted from request records only; response records add usage and
cost, and their firings and redactions unless they repeat the request's. To tell, the sink
remembers the firings and redactions of let-through requests that had any, until their response
record comes, for at most ``MAX_OPEN_EXCHANGES`` requests (oldest forgotten first; a repeat of a
forgotten one would be counted again).

Label values that come from a client (a model name can be anything) are bounded: each label
keeps at most ``MAX_LABEL_VALUES`` distinct values and folds the rest, and any value longer
than ``MAX_LABEL_LENGTH``, into ``other``.

The endpoint (``/metrics``, ``/healthz``) is a small HTTP server on a thread of its own, so a
scrape never runs on the event loop that serves Envoy.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .audit.record import AuditRecord, FiredRule, Redactions
from .audit.sink import AuditSink, FanoutSink

if TYPE_CHECKING:
    from .enforce.alerts import AlertNotifier
    from .enforce.servicer import ExternalProcessor
    from .policy.store import PolicyStore

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


@runtime_checkable
class SpanCounts(Protocol):
    """What ``OtelSink`` counts about its span queue (the SDK keeps the queue itself private)."""

    queued: int
    exported: int
    export_failed: int
    failed: int

    @property
    def backlog(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Sources:
    """The running parts a scrape reads; any of them may be absent."""

    store: PolicyStore
    processor: ExternalProcessor | None = None
    alerts: AlertNotifier | None = None
    audit: AuditSink | None = None


class RuntimeCollector(Collector):
    """Gauges and counters kept by the running parts, read when Prometheus scrapes.

    Runs on the endpoint's thread: it only reads plain attributes, each of which the event
    loop replaces or increments whole.
    """

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; collect() reads live objects

    def collect(self) -> Iterator[Metric]:
        yield from self._policies()
        src = self.sources
        if src.processor is not None:
            yield _gauge(
                "policy_extproc_open_streams",
                "ext_proc streams open now.",
                src.processor.open_streams,
            )
        if src.alerts is not None:
            a = src.alerts
            yield _counter("policy_extproc_alerts_sent", "Alerts delivered to the webhook.", a.sent)
            yield _counter(
                "policy_extproc_alerts_failed", "Alerts not delivered after retries.", a.failed
            )
            yield _counter(
                "policy_extproc_alerts_dropped", "Alerts dropped: the queue was full.", a.dropped
            )
            yield _counter(
                "policy_extproc_alerts_suppressed",
                "Alerts held back: the same policy, rule and user alerted within the window.",
                a.suppressed,
            )
            yield _counter(
                "policy_extproc_alerts_silenced", "Alerts of rules with alert: false.", a.silenced
            )
            yield _gauge(
                "policy_extproc_alert_queue_depth", "Alerts waiting for delivery.", a.pending
            )
        spans = [s for s in _sinks(src.audit) if isinstance(s, SpanCounts)]
        if spans:
            outcomes = CounterMetricFamily(
                "policy_extproc_audit_spans",
                "Audit spans: queued for export, exported, failed to export (lost), or not "
                "created.",
                labels=["outcome"],
            )
            outcomes.add_metric(["queued"], sum(s.queued for s in spans))
            outcomes.add_metric(["exported"], sum(s.exported for s in spans))
            outcomes.add_metric(["export_failed"], sum(s.export_failed for s in spans))
            outcomes.add_metric(["not_created"], sum(s.failed for s in spans))
            yield outcomes
            yield _gauge(
                "policy_extproc_audit_span_backlog",
                "Audit spans queued and not yet exported; includes spans the OpenTelemetry SDK "
                "dropped from a full queue, which it does not report.",
                sum(s.backlog for s in spans),
            )

    def _policies(self) -> Iterator[Metric]:
        store = self.sources.store
        if store.ready:
            snapshot = store.current
            yield _gauge("policy_extproc_policies", "Policies in force.", len(snapshot))
            yield _gauge(
                "policy_extproc_policy_rules", "Rules in force, all policies.", snapshot.rule_count
            )
            info = GaugeMetricFamily(
                "policy_extproc_policy_info",
                "The policy set in force (always 1), by version.",
                labels=["version"],
            )
            info.add_metric([snapshot.version], 1)
            yield info
            yield _gauge(
                "policy_extproc_policy_loaded_timestamp_seconds",
                "When the policy set in force was loaded (Unix time).",
                store.loaded_at,
            )
        yield _gauge(
            "policy_extproc_policy_reload_errors",
            "1 while the last policy load was refused (the last good set keeps serving).",
            0 if store.last_error is None else 1,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _sinks(sink: AuditSink | None) -> Sequence[AuditSink]:
    if sink is None:
        return ()
    return sink.sinks if isinstance(sink, FanoutSink) else (sink,)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9090`` for IPv6; port 0 picks a free one) as (host, port)."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics listen address must be HOST:PORT, not {listen!r}")
    return host, int(port)


class Metrics:
    """What ``--metrics-listen`` turns on: a registry of its own, the sink, the endpoint.

    A registry per instance (not prometheus_client's global one), so several sidecars can run
    in one process, as they do in tests.
    """

    def __init__(self, listen: str, *, limit: LabelLimit | None = None) -> None:
        self.host, self.port = parse_listen(listen)
        self.registry = CollectorRegistry()
        self.sink = MetricsSink(self.registry, limit=limit)
        self._http: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def watch(
        self,
        store: PolicyStore,
        *,
        processor: ExternalProcessor | None = None,
        alerts: AlertNotifier | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        """Report these running parts at every scrape (call once)."""
        self.registry.register(RuntimeCollector(Sources(store, processor, alerts, audit)))

    def serve(self) -> int:
        """Start the endpoint; returns the bound port. Raises ``OSError`` if it cannot bind."""
        handler = type("MetricsHandler", (_Handler,), {"registry": self.registry})
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("MetricsServer", (_HttpServer,), {"address_family": family})
        try:
            self._http = server_class((self.host, self.port), handler)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {self.host}:{self.port}: {exc}") from exc
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self.host or "0.0.0.0", self.port)
        return self.port

    async def close(self) -> None:
        """Stop the endpoint (waits for its thread, off the event loop); idempotent."""
        http, thread, self._http, self._thread = self._http, self._thread, None, None
        if http is None:
            return
        await asyncio.to_thread(http.shutdown)
        http.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow scraper must not hold up shutdown


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    server_version = "policy-extproc"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            # Prometheus asks for OpenMetrics in Accept; anything else gets the text format.
            encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
            self._reply(200, content_type, encoder(self.registry))
        elif path == "/healthz":
            self._reply(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found: /metrics or /healthz\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds would drown the sidecar's own log
