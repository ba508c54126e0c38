"""What is not in a record, read from the running parts when Prometheus scrapes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..audit.sink import AuditSink, FanoutSink
from ..transport.limits import NAMES

if TYPE_CHECKING:
    from ..enforce.admission import Admission
    from ..enforce.alerts import AlertNotifier
    from ..enforce.observe import Observer
    from ..enforce.servicer import ExternalProcessor
    from ..sources.store import PolicyStore


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
    admission: Admission | None = None
    observer: Observer | None = None  # response accounting (--response-accounting observe)
    h2_violations: dict[str, int] | None = None  # --transport h2: its abuse limits exceeded


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
        if src.observer is not None:
            observer = src.observer
            yield _counter(
                "policy_extproc_observe_streams",
                "Observability-mode streams of the observe filter (response accounting).",
                observer.streams,
            )
            yield _counter(
                "policy_extproc_responses_unobserved",
                "Answers no observe stream reported in time: charged at their estimate.",
                observer.unobserved,
            )
        if src.admission is not None:
            yield from _admission(src.admission)
        if src.h2_violations is not None:
            yield _violations(src.h2_violations)
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
            "policy_extproc_policy_reload_failing",
            "1 while the last policy load was refused (the last good set keeps serving).",
            0 if store.last_error is None else 1,
        )
        yield _counter(
            "policy_extproc_policy_reload_failures",
            "Policy loads refused since start (a bad file or push; the last good set served).",
            store.load_failures,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _sinks(sink: AuditSink | None) -> Sequence[AuditSink]:
    if sink is None:
        return ()
    return sink.sinks if isinstance(sink, FanoutSink) else (sink,)


def _admission(adm: Admission) -> Iterator[Metric]:
    yield _gauge(
        "policy_extproc_inflight",
        "Requests being decided now (admitted, not yet decided).",
        adm.inflight,
    )
    yield _gauge(
        "policy_extproc_max_inflight",
        "serve --max-inflight: the bound (0: unbounded).",
        adm.settings.max_inflight,
    )
    shed = CounterMetricFamily(
        "policy_extproc_shed",
        "Requests shed by admission control (503 overloaded, or let through on a fail-open "
        "route), by reason: inflight or queue_age.",
        labels=["reason"],
    )
    for reason, count in adm.shed.items():
        shed.add_metric([reason], count)
    yield shed


def _violations(counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "policy_extproc_h2_limit_violations",
        "Times an HTTP/2 peer went past one of the h2 transport's abuse limits, by limit "
        "(a refused stream each, or the GOAWAY that closed its connection).",
        labels=["limit"],
    )
    for name in NAMES:  # every limit, 0 until one is exceeded
        family.add_metric([name], counts.get(name, 0))
    return family
