"""Prometheus metrics: the sink fed audit records, the scrape-time collector, the endpoint.

The sink is fed ``AuditRecord`` values directly and read back from its registry; the endpoint
runs on port 0 and is scraped over HTTP.
"""

from __future__ import annotations

import logging
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from policy_extproc.audit.record import AuditRecord, FiredRule, Usage, redaction_counts
from policy_extproc.audit.sink import FanoutSink, RecordingSink
from policy_extproc.metrics import (
    MAX_LABEL_LENGTH,
    MAX_LABEL_VALUES,
    MAX_OPEN_EXCHANGES,
    OTHER,
    LabelLimit,
    Metrics,
    MetricsSink,
    RuntimeCollector,
    Sources,
    parse_listen,
)
from policy_extproc.sources.store import PolicyStore

POLICIES = """
- policy_name: acme_base
  org: acme
  rules:
    - type: content_filter
      id: secrets
      keywords: [confidential]
      action: block
    - type: content_filter
      id: codenames
      keywords: [project-aurora]
      action: redact
"""


def record(**changes: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "decision": "allow",
        "policy": None,
        "rule": None,
        "reason": "no rule fired",
        "user": "alice",
        "environment": "production",
        "timestamp": "2024-05-01T12:00:00.000001Z",
        "request_id": "req-1",
        "org": "acme",
        "model": "gpt-4o-mini",
        "latency_us": 300,
        "policy_version": "v1",
    }
    fields.update(changes)
    return AuditRecord(**fields)


BLOCKED = {
    "decision": "block",
    "policy": "acme_base",
    "rule": "secrets",
    "reason": "keyword",
    "fired": (FiredRule("acme_base", "secrets", "block"),),
}
BLOCK_DECISION = {"action": "block", "policy": "acme_base", "rule": "secrets", "mode": "enforce"}
REDACTED = {
    "decision": "modify",
    "policy": "acme_base",
    "rule": "pii",
    "reason": "redacted",
    "fired": (FiredRule("acme_base", "pii", "modify"),),
    "redactions": redaction_counts({"EMAIL": 2, "US_SSN": 1}),
}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def sink(registry: CollectorRegistry) -> MetricsSink:
    return MetricsSink(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist."""
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called ``name``."""
    return [s.labels for family in registry.collect() for s in family.samples if s.name == name]


# -- request records -----------------------------------------------------------------------------


def test_decisions_are_counted_by_action_policy_rule_and_mode(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    sink.emit(record(request_id="a"))
    sink.emit(record(request_id="b", **BLOCKED))
    sink.emit(record(request_id="c", **BLOCKED))
    sink.emit(
        record(
            request_id="d",
            mode="log",
            would_decide="block",
            fired=(FiredRule("acme_shadow", "secrets", "block:log"),),
        )
    )
    decisions = "policy_extproc_decisions_total"
    assert value(registry, decisions, action="allow", policy="", rule="", mode="enforce") == 1
    assert (
        value(
            registry, decisions, action="block", policy="acme_base", rule="secrets", mode="enforce"
        )
        == 2
    )
    assert value(registry, decisions, action="allow", policy="", rule="", mode="log") == 1
    assert len(series(registry, decisions)) == 3


def test_latency_goes_into_the_histogram_in_seconds(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    sink.emit(record(latency_us=300))  # 0.0003 s
    sink.emit(record(latency_us=2_000_000))  # 2 s: past every bucket
    name = "policy_extproc_decision_latency_seconds"
    assert value(registry, f"{name}_count") == 2
    assert value(registry, f"{name}_sum") == pytest.approx(2.0003)
    assert value(registry, f"{name}_bucket", le="0.00025") == 0
    assert value(registry, f"{name}_bucket", le="0.0005") == 1
    assert value(registry, f"{name}_bucket", le="0.1") == 1
    assert value(registry, f"{name}_bucket", le="+Inf") == 2


def test_rule_firings_and_redactions_by_type(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    sink.emit(record(request_id="a", **REDACTED))
    sink.emit(record(request_id="b", redactions=redaction_counts({"EMAIL": 3})))
    sink.emit(
        record(
            request_id="c",
            fired=(
                FiredRule("acme_base", "secrets", "block"),
                FiredRule("acme_shadow", "secrets", "block:log"),
            ),
            **{k: v for k, v in BLOCKED.items() if k != "fired"},
        )
    )
    firings = "policy_extproc_rule_firings_total"
    assert value(registry, firings, policy="acme_base", rule="pii", action="modify") == 1
    assert value(registry, firings, policy="acme_base", rule="secrets", action="block") == 1
    assert value(registry, firings, policy="acme_shadow", rule="secrets", action="block:log") == 1
    assert value(registry, "policy_extproc_redactions_total", type="EMAIL") == 5
    assert value(registry, "policy_extproc_redactions_total", type="US_SSN") == 1


def test_errors_by_code_and_state_failures_closed(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    # Both state_errors series exist before any failure, so a rate() over them starts at zero.
    assert value(registry, "policy_extproc_state_errors_total", on_error="closed") == 0
    assert {s["on_error"] for s in series(registry, "policy_extproc_state_errors_total")} == {
        "closed",
        "open",
    }
    sink.emit(record(request_id="a", decision="block", error_code="malformed_body"))
    sink.emit(record(request_id="b", decision="block", error_code="state_unavailable"))
    sink.emit(record(request_id="c", decision="block", error_code="state_unavailable"))
    assert value(registry, "policy_extproc_errors_total", code="malformed_body") == 1
    assert value(registry, "policy_extproc_errors_total", code="state_unavailable") == 2
    assert value(registry, "policy_extproc_state_errors_total", on_error="closed") == 2
    assert value(registry, "policy_extproc_state_errors_total", on_error="open") == 0


def test_fail_open_paths_are_counted_as_degraded_and_state_failures_open(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    sink.emit(record(request_id="a", degraded=("state_unavailable:open",)))
    sink.emit(record(request_id="b", degraded=("breaker_unavailable:open",)))
    sink.emit(record(request_id="c", degraded=("something_else:open",)))
    degraded = "policy_extproc_degraded_total"
    assert value(registry, degraded, kind="state_unavailable:open") == 1
    assert value(registry, degraded, kind="breaker_unavailable:open") == 1
    assert value(registry, degraded, kind="something_else:open") == 1
    assert value(registry, "policy_extproc_state_errors_total", on_error="open") == 2
    assert value(registry, "policy_extproc_state_errors_total", on_error="closed") == 0
    assert series(registry, "policy_extproc_errors_total") == []


# -- response records ----------------------------------------------------------------------------


def test_response_records_add_tokens_and_cost_by_model(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    sink.emit(record(request_id="a"))
    sink.emit(record(request_id="a", phase="response", usage=Usage(120, 30), cost_usd=0.25))
    sink.emit(record(request_id="b", model="claude-3-haiku"))
    sink.emit(
        record(
            request_id="b",
            model="claude-3-haiku",
            phase="response",
            usage=Usage(10, 5),
            cost_usd=0.5,
        )
    )
    sink.emit(record(request_id="c", phase="response", usage=Usage(1, 1), cost_usd=0.125))
    tokens = "policy_extproc_tokens_total"
    assert value(registry, tokens, direction="input", model="gpt-4o-mini") == 121
    assert value(registry, tokens, direction="output", model="gpt-4o-mini") == 31
    assert value(registry, tokens, direction="input", model="claude-3-haiku") == 10
    assert value(registry, tokens, direction="output", model="claude-3-haiku") == 5
    cost = "policy_extproc_cost_usd_total"
    assert value(registry, cost, model="gpt-4o-mini") == pytest.approx(0.375)
    assert value(registry, cost, model="claude-3-haiku") == pytest.approx(0.5)


def test_spend_and_tokens_per_tenant_and_the_token_usage_histogram(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    sink.emit(record(phase="response", team="ml", provider="openai", usage=Usage(100, 20),
                     cost_usd=0.5))  # fmt: skip
    sink.emit(record(phase="response", team="ml", usage=Usage(10, 2), cost_usd=0.25))
    sink.emit(record(phase="response", org="globex", usage=Usage(1, 1), cost_usd=0.125))
    spend = "policy_extproc_spend_usd_total"
    assert value(registry, spend, org="acme", team="ml") == pytest.approx(0.75)
    assert value(registry, spend, org="globex", team="") == pytest.approx(0.125)
    tokens = "policy_extproc_tenant_tokens_total"
    assert value(registry, tokens, org="acme", team="ml", direction="input") == 110
    assert value(registry, tokens, org="acme", team="ml", direction="output") == 22
    usage = "gen_ai_client_token_usage"
    labels = {"gen_ai_token_type": "input", "gen_ai_request_model": "gpt-4o-mini"}
    assert value(registry, f"{usage}_count", **labels, gen_ai_provider_name="openai") == 1
    assert value(registry, f"{usage}_sum", **labels, gen_ai_provider_name="openai") == 100
    assert value(registry, f"{usage}_bucket", **labels, gen_ai_provider_name="openai",
                 le="256.0") == 1  # fmt: skip
    assert value(registry, f"{usage}_bucket", **labels, gen_ai_provider_name="openai",
                 le="64.0") == 0  # fmt: skip


def test_tenants_past_the_cap_count_as_other(registry: CollectorRegistry) -> None:
    sink = MetricsSink(registry, tenants=LabelLimit(2))
    for org in ("a", "b", "c", "d"):
        sink.emit(record(phase="response", org=org, team="t", usage=Usage(1, 1), cost_usd=1.0))
    spend = "policy_extproc_spend_usd_total"
    assert {(s["org"], s["team"]) for s in series(registry, spend)} == {
        ("a", "t"), ("b", "t"), ("other", "other")}  # fmt: skip
    assert value(registry, spend, org="other", team="other") == 2.0


def test_latency_buckets_reach_envoys_largest_timeout(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    sink.emit(record(latency_us=3_000_000))
    hist = "policy_extproc_decision_latency_seconds_bucket"
    assert value(registry, hist, le="2.5") == 0
    assert value(registry, hist, le="5.0") == 1


def test_a_response_without_usage_or_price_adds_no_series(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    sink.emit(record(phase="response"))
    sink.emit(record(phase="response", usage=Usage(5, 0), cost_usd=None))
    sink.emit(record(phase="response", usage=Usage(-3, 2), cost_usd=0.0))
    tokens = "policy_extproc_tokens_total"
    assert value(registry, tokens, direction="input", model="gpt-4o-mini") == 5
    assert value(registry, tokens, direction="output", model="gpt-4o-mini") == 2
    assert series(registry, "policy_extproc_cost_usd_total") == []


def test_a_response_record_repeating_its_request_counts_nothing_twice(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    # The engine's response record repeats the request's decision when no output rule fired.
    fields = {**REDACTED, "degraded": ("state_unavailable:open",)}
    sink.emit(record(request_id="a", **fields))
    sink.emit(record(request_id="a", phase="response", usage=Usage(10, 5), cost_usd=0.1, **fields))
    decision = {"action": "modify", "policy": "acme_base", "rule": "pii", "mode": "enforce"}
    assert value(registry, "policy_extproc_decisions_total", **decision) == 1
    assert value(registry, "policy_extproc_decision_latency_seconds_count") == 1
    firing = {"policy": "acme_base", "rule": "pii", "action": "modify"}
    assert value(registry, "policy_extproc_rule_firings_total", **firing) == 1
    assert value(registry, "policy_extproc_redactions_total", type="EMAIL") == 2
    assert value(registry, "policy_extproc_degraded_total", kind="state_unavailable:open") == 1
    assert value(registry, "policy_extproc_state_errors_total", on_error="open") == 1
    tokens = "policy_extproc_tokens_total"
    assert value(registry, tokens, direction="input", model="gpt-4o-mini") == 10


def test_output_guardrail_firings_on_a_response_record_are_counted(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    # When an output rule fires, the response record carries the guardrails' decision instead.
    output = {
        "decision": "modify",
        "policy": "acme_base",
        "rule": "contacts",
        "reason": "redacted",
        "fired": (FiredRule("acme_base", "contacts", "modify"),),
        "redactions": redaction_counts({"EMAIL": 4}),
    }
    sink.emit(record(request_id="plain"))
    sink.emit(record(request_id="plain", phase="response", usage=Usage(1, 1), **output))
    sink.emit(record(request_id="both", **REDACTED))
    sink.emit(record(request_id="both", phase="response", usage=Usage(1, 1), **output))
    firings = "policy_extproc_rule_firings_total"
    assert value(registry, firings, policy="acme_base", rule="contacts", action="modify") == 2
    assert value(registry, firings, policy="acme_base", rule="pii", action="modify") == 1
    assert value(registry, "policy_extproc_redactions_total", type="EMAIL") == 2 + 4 + 4
    assert value(registry, "policy_extproc_redactions_total", type="US_SSN") == 1
    # Output decisions are not request decisions: only the two request records count there.
    assert value(registry, "policy_extproc_decision_latency_seconds_count") == 2


def test_requests_waiting_for_their_response_are_remembered_within_a_bound(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    for i in range(MAX_OPEN_EXCHANGES + 1):
        sink.emit(record(request_id=f"r-{i}", **REDACTED))
    assert len(sink._open) == MAX_OPEN_EXCHANGES  # the oldest is forgotten
    assert "r-0" not in sink._open
    # The newest request is remembered: its repeated response record adds nothing.
    last = f"r-{MAX_OPEN_EXCHANGES}"
    sink.emit(record(request_id=last, phase="response", usage=Usage(1, 1), **REDACTED))
    assert value(registry, "policy_extproc_redactions_total", type="EMAIL") == 2 * (
        MAX_OPEN_EXCHANGES + 1
    )
    # Refused requests get no response record, so they are not remembered at all.
    sink.emit(record(request_id="refused", **BLOCKED))
    sink.emit(record(request_id="failed", error_code="state_unavailable", **REDACTED))
    assert "refused" not in sink._open
    assert "failed" not in sink._open
    assert len(sink._open) == MAX_OPEN_EXCHANGES - 1  # the answered one is forgotten too


# -- label bounds --------------------------------------------------------------------------------


def test_each_label_keeps_at_most_max_label_values_then_folds_into_other(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    models = [f"model-{i}" for i in range(MAX_LABEL_VALUES + 5)]
    for i, model in enumerate(models):
        sink.emit(record(request_id=f"r-{i}", phase="response", model=model, usage=Usage(1, 0)))
    kept = {s["model"] for s in series(registry, "policy_extproc_tokens_total")}
    assert kept == {*models[:MAX_LABEL_VALUES], OTHER}
    tokens = "policy_extproc_tokens_total"
    assert value(registry, tokens, direction="input", model=OTHER) == 5
    # A value seen before the bound keeps its own series.
    sink.emit(record(phase="response", model=models[0], usage=Usage(7, 0)))
    assert value(registry, tokens, direction="input", model=models[0]) == 8
    # The bound is per label: the policy label still has room.
    sink.emit(record(**BLOCKED))
    assert value(registry, "policy_extproc_decisions_total", **BLOCK_DECISION) == 1


def test_an_overlong_value_folds_into_other(registry: CollectorRegistry, sink: MetricsSink) -> None:
    longest = "m" * MAX_LABEL_LENGTH
    sink.emit(record(phase="response", model=longest, usage=Usage(1, 0)))
    sink.emit(record(phase="response", model=longest + "m", usage=Usage(2, 0)))
    tokens = "policy_extproc_tokens_total"
    assert value(registry, tokens, direction="input", model=longest) == 1
    assert value(registry, tokens, direction="input", model=OTHER) == 2


def test_label_limit_with_small_bounds() -> None:
    limit = LabelLimit(max_values=2, max_length=5)
    assert [limit("model", v) for v in ("a", "b", "c", "a", "toolong", None)] == [
        "a",
        "b",
        OTHER,
        "a",
        OTHER,
        OTHER,  # None would be a third value
    ]
    assert limit("type", "EMAIL") == "EMAIL"


# -- never raises --------------------------------------------------------------------------------


def test_the_sink_never_raises_and_keeps_counting(
    registry: CollectorRegistry, sink: MetricsSink, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [
        record(request_id="neg", redactions=(("EMAIL", -1),)),  # a counter cannot go down
        record(request_id="str", redactions=(("EMAIL", "2"),)),  # not a count
        record(request_id="usage", phase="response", usage=Usage("x", 1)),  # type: ignore[arg-type]
        record(request_id="phase", phase="something-else"),
    ]
    with caplog.at_level(logging.ERROR, logger="policy_extproc.metrics"):
        for r in bad:
            sink.emit(r)
    assert sum("not counted" in m for m in caplog.messages) == 3
    sink.emit(record(request_id="good", **BLOCKED))
    assert value(registry, "policy_extproc_decisions_total", **BLOCK_DECISION) == 1


def test_a_fanout_with_the_sink_delivers_to_the_other_sinks(registry: CollectorRegistry) -> None:
    recording = RecordingSink()
    fanout = FanoutSink([MetricsSink(registry), recording])
    fanout.emit(record(redactions=(("EMAIL", -1),)))
    assert len(recording.records) == 1


# -- scrape-time collector -----------------------------------------------------------------------


@dataclass
class FakeProcessor:
    open_streams: int = 0


@dataclass
class FakeAlerts:
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    pending: int = 0
    suppressed: int = 0
    silenced: int = 0


class CountingSpans(RecordingSink):
    """A sink with the span counts OtelSink keeps."""

    def __init__(self, queued: int, exported: int, export_failed: int, failed: int) -> None:
        super().__init__()
        self.queued, self.exported = queued, exported
        self.export_failed, self.failed = export_failed, failed

    @property
    def backlog(self) -> int:
        return self.queued - self.exported - self.export_failed


def loaded_store(tmp_path: Path, text: str = POLICIES) -> PolicyStore:
    (tmp_path / "policies.yaml").write_text(text)
    store = PolicyStore([str(tmp_path)])
    store.load()
    return store


def collected(sources: Sources) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(sources))
    return registry


def test_the_collector_reads_the_running_parts(tmp_path: Path) -> None:
    store = loaded_store(tmp_path)
    spans = CountingSpans(queued=10, exported=6, export_failed=1, failed=2)
    registry = collected(
        Sources(
            store,
            processor=FakeProcessor(open_streams=3),  # type: ignore[arg-type]
            alerts=FakeAlerts(4, 1, 2, 5, suppressed=7, silenced=8),  # type: ignore[arg-type]
            audit=FanoutSink([RecordingSink(), spans]),
        )
    )
    assert value(registry, "policy_extproc_policies") == 1
    assert value(registry, "policy_extproc_policy_rules") == 2
    assert value(registry, "policy_extproc_policy_info", version=store.current.version) == 1
    assert value(registry, "policy_extproc_policy_loaded_timestamp_seconds") == store.loaded_at
    assert value(registry, "policy_extproc_policy_reload_failing") == 0
    assert value(registry, "policy_extproc_policy_reload_failures_total") == 0
    assert value(registry, "policy_extproc_open_streams") == 3
    assert value(registry, "policy_extproc_alerts_sent_total") == 4
    assert value(registry, "policy_extproc_alerts_failed_total") == 1
    assert value(registry, "policy_extproc_alerts_dropped_total") == 2
    assert value(registry, "policy_extproc_alerts_suppressed_total") == 7
    assert value(registry, "policy_extproc_alerts_silenced_total") == 8
    assert value(registry, "policy_extproc_alert_queue_depth") == 5
    spans_total = "policy_extproc_audit_spans_total"
    assert value(registry, spans_total, outcome="queued") == 10
    assert value(registry, spans_total, outcome="exported") == 6
    assert value(registry, spans_total, outcome="export_failed") == 1
    assert value(registry, spans_total, outcome="not_created") == 2
    assert value(registry, "policy_extproc_audit_span_backlog") == 3


def test_the_collector_reads_live_values_at_each_scrape(tmp_path: Path) -> None:
    processor = FakeProcessor(open_streams=1)
    registry = collected(Sources(loaded_store(tmp_path), processor=processor))  # type: ignore[arg-type]
    assert value(registry, "policy_extproc_open_streams") == 1
    processor.open_streams = 7
    assert value(registry, "policy_extproc_open_streams") == 7


def test_the_h2_transports_limit_violations_are_counted_by_limit(tmp_path: Path) -> None:
    counts = {"early_resets": 2}
    registry = collected(Sources(loaded_store(tmp_path), h2_violations=counts))
    name = "policy_extproc_h2_limit_violations_total"
    assert value(registry, name, limit="early_resets") == 2
    assert value(registry, name, limit="control_frames") == 0  # every limit, from the start
    counts["control_frames"] = 1  # the live dict, read at each scrape
    assert value(registry, name, limit="control_frames") == 1


def test_absent_parts_report_nothing(tmp_path: Path) -> None:
    registry = collected(Sources(loaded_store(tmp_path), audit=RecordingSink()))
    names = {s.name for family in registry.collect() for s in family.samples}
    assert names == {
        "policy_extproc_policies",
        "policy_extproc_policy_rules",
        "policy_extproc_policy_info",
        "policy_extproc_policy_loaded_timestamp_seconds",
        "policy_extproc_policy_reload_failing",
        "policy_extproc_policy_reload_failures_total",
    }


def test_a_store_not_loaded_reports_only_the_reload_failures(tmp_path: Path) -> None:
    (tmp_path / "policies.yaml").write_text("policy_name: [not, a, name]\n")
    store = PolicyStore([str(tmp_path)])
    with pytest.raises(Exception, match="policy"):
        store.load()
    registry = collected(Sources(store))
    names = {s.name for family in registry.collect() for s in family.samples}
    assert names == {
        "policy_extproc_policy_reload_failing",
        "policy_extproc_policy_reload_failures_total",
    }
    assert value(registry, "policy_extproc_policy_reload_failing") == 1
    assert value(registry, "policy_extproc_policy_reload_failures_total") == 1


# -- the endpoint --------------------------------------------------------------------------------


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def test_the_endpoint_serves_metrics_and_healthz(tmp_path: Path) -> None:
    metrics = Metrics("127.0.0.1:0")
    metrics.watch(loaded_store(tmp_path))
    port = metrics.serve()
    try:
        assert port != 0
        assert metrics.port == port
        metrics.sink.emit(record(**BLOCKED))
        base = f"http://127.0.0.1:{port}"
        status, ctype, text = get(f"{base}/metrics")
        assert status == 200
        assert ctype.startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        (sample,) = families["policy_extproc_decisions"].samples
        assert sample.labels["action"] == "block"
        assert sample.value == 1
        assert "policy_extproc_policy_info" in families
        # Prometheus asks for OpenMetrics; it gets it, with its end marker.
        status, ctype, text = get(f"{base}/metrics", accept="application/openmetrics-text")
        assert status == 200
        assert ctype.startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")
        assert get(f"{base}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        assert get(f"{base}/other")[0] == 404
    finally:
        await metrics.close()
    await metrics.close()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)


async def test_two_endpoints_keep_their_own_registries(tmp_path: Path) -> None:
    a, b = Metrics("127.0.0.1:0"), Metrics("127.0.0.1:0")
    a.sink.emit(record(**BLOCKED))
    pa, pb = a.serve(), b.serve()
    try:
        assert "policy_extproc_decisions_total{" in get(f"http://127.0.0.1:{pa}/metrics")[2]
        assert "policy_extproc_decisions_total{" not in get(f"http://127.0.0.1:{pb}/metrics")[2]
    finally:
        await a.close()
        await b.close()


async def test_a_port_in_use_is_an_os_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = Metrics(f"127.0.0.1:{port}")
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics.serve()
        await metrics.close()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_the_endpoint_listens_on_ipv6() -> None:
    metrics = Metrics("[::1]:0")
    port = metrics.serve()
    try:
        assert get(f"http://[::1]:{port}/healthz")[0] == 200
    finally:
        await metrics.close()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9090", ("127.0.0.1", 9090)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        (":9090", ("", 9090)),
        ("[::1]:9090", ("::1", 9090)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen_accepts_host_and_port(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    "listen", ["9090", "localhost", "localhost:", "host:http", "host:65536", "host:-1", "[::1]"]
)
def test_parse_listen_refuses_anything_else(listen: str) -> None:
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        parse_listen(listen)
