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
    policy_extproc_redis_latency_seconds{operation, outcome}      every Redis call (histogram)
    policy_extproc_tokens_total{direction, model}                  response records, usage
    policy_extproc_cost_usd_total{model}                           response records, cost_usd
    policy_extproc_spend_usd_total{org, team}                      response records, cost_usd
    policy_extproc_tenant_tokens_total{org, team, direction}       response records, usage
    gen_ai_client_token_usage{gen_ai_token_type, ...} (histogram)  response records, usage
    policy_extproc_open_streams, policy_extproc_policies, policy_extproc_policy_rules,
    policy_extproc_policy_info{version}, policy_extproc_policy_loaded_timestamp_seconds,
    policy_extproc_policy_reload_failing, policy_extproc_policy_reload_failures_total,
    policy_extproc_alerts_{sent,failed,dropped,suppressed,silenced}_total,
    policy_extproc_alert_queue_depth, policy_extproc_audit_spans_total{outcome},
    policy_extproc_audit_span_backlog,
    policy_extproc_inflight, policy_extproc_max_inflight,
    policy_extproc_shed_total{reason},
    policy_extproc_observe_streams_total,
    policy_extproc_responses_unobserved_total,
    policy_extproc_h2_limit_violations_total{limit}               read at scrape time

A response record carries either its request's decision again (firings, redactions,
degradations) or, when an output guardrail fired, the guardrails' own decision. Decisions,
errors and degradations are counted from request records only; response records add usage and
cost, and their firings and redactions unless they repeat the request's. To tell, the sink
remembers the firings and redactions of let-through requests that had any, until their response
record comes, for at most ``MAX_OPEN_EXCHANGES`` requests (oldest forgotten first; a repeat of a
forgotten one would be counted again).

Label values that come from a client (a model name can be anything) are bounded: each label
keeps at most ``MAX_LABEL_VALUES`` distinct values and folds the rest, and any value longer
than ``MAX_LABEL_LENGTH``, into ``other``; (org, team) pairs are kept for ``MAX_TENANTS``.
The registry also has the standard process, platform and GC collectors.

The package: ``sink`` counts records, ``runtime`` reads the running parts at scrape time,
``endpoint`` serves ``/metrics`` and ``/healthz`` on a thread of its own (a scrape never runs on
the event loop that serves Envoy); ``Metrics`` here puts them together.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from .endpoint import _Handler, _HttpServer, parse_listen
from .runtime import RuntimeCollector, Sources, SpanCounts
from .sink import (
    MAX_LABEL_LENGTH,
    MAX_LABEL_VALUES,
    MAX_OPEN_EXCHANGES,
    OTHER,
    LabelLimit,
    MetricsSink,
)

if TYPE_CHECKING:
    from ..audit.sink import AuditSink
    from ..enforce.admission import Admission
    from ..enforce.alerts import AlertNotifier
    from ..enforce.servicer import ExternalProcessor
    from ..sources.store import PolicyStore

__all__ = [
    "MAX_LABEL_LENGTH",
    "MAX_LABEL_VALUES",
    "MAX_OPEN_EXCHANGES",
    "OTHER",
    "LabelLimit",
    "Metrics",
    "MetricsSink",
    "RuntimeCollector",
    "Sources",
    "SpanCounts",
    "parse_listen",
]

log = logging.getLogger(__name__)


class Metrics:
    """What ``--metrics-listen`` turns on: a registry of its own, the sink, the endpoint.

    A registry per instance (not prometheus_client's global one), so several sidecars can run
    in one process, as they do in tests.
    """

    def __init__(self, listen: str, *, limit: LabelLimit | None = None) -> None:
        self.host, self.port = parse_listen(listen)
        self.registry = CollectorRegistry()
        # The process itself: CPU, memory, file descriptors, GC, Python version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
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
        admission: Admission | None = None,
        h2_violations: dict[str, int] | None = None,
    ) -> None:
        """Report these running parts at every scrape (call once); ``h2_violations``: the h2
        transport's counts of its abuse limits exceeded, by limit."""
        observer = processor.engine.observer if processor is not None else None
        sources = Sources(store, processor, alerts, audit, admission, observer, h2_violations)
        self.registry.register(RuntimeCollector(sources))

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
