"""deploy/grafana: the dashboard and the alert rules parse, and name only metrics the sidecar has.

Every PromQL expression is parsed by a real PromQL parser (promql-parser, the Rust crate
Prometheus-compatible projects use); every metric it names must be one the sidecar serves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from policy_extproc.audit.sink import RecordingSink
from policy_extproc.metrics import Metrics, RuntimeCollector, Sources
from policy_extproc.sources.store import PolicyStore

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
METRIC = re.compile(r"\b((?:policy_extproc|gen_ai|process|python)_[a-z0-9_]+)\b")
# Prometheus' own series.
BUILTIN = {"up"}


class _Parts:
    """Stand-ins with the counters the runtime collector reads."""

    open_streams = sent = failed = dropped = pending = suppressed = silenced = 0
    queued = exported = export_failed = backlog = 0


def served_names(tmp_path: Path) -> set[str]:
    """Every sample name the sidecar's registry can serve (histogram and counter suffixes too)."""
    (tmp_path / "p.yaml").write_text("policy_name: p\nrules: []\n")
    store = PolicyStore([str(tmp_path)])
    store.load()
    metrics = Metrics("127.0.0.1:0")
    parts: Any = _Parts()
    spans: Any = type("Spans", (RecordingSink,), dict(vars(_Parts)))()
    metrics.registry.register(
        RuntimeCollector(Sources(store, processor=parts, alerts=parts, audit=spans))
    )
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def _expressions() -> list[tuple[str, str]]:
    dash = json.loads((GRAFANA / "policy-extproc-dashboard.json").read_text())
    out = [(f"panel {p['title']!r}", t["expr"]) for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load((GRAFANA / "prometheus-rules.yaml").read_text())
    for group in rules["spec"]["groups"]:
        out += [(f"alert {r['alert']}", r["expr"]) for r in group["rules"]]
    return out


@pytest.mark.parametrize(("where", "expr"), _expressions())
def test_every_expression_parses_and_names_served_metrics(
    where: str, expr: str, tmp_path: Path
) -> None:
    promql_parser.parse(expr)  # ValueError with the parser's message if it does not parse
    unknown = set(METRIC.findall(expr)) - served_names(tmp_path) - BUILTIN
    assert not unknown, f"{where} names metrics the sidecar does not serve: {sorted(unknown)}"


def test_the_dashboard_has_what_operators_look_for() -> None:
    dash = json.loads((GRAFANA / "policy-extproc-dashboard.json").read_text())
    titles = {p["title"] for p in dash["panels"]}
    assert {"Decisions by action", "Latency by phase (p99)", "Spend by team (USD / hour)",
            "Top rules firing (last hour)", "Redis health", "Redis latency by operation (p99)",
            "Redis calls by outcome"} <= titles  # fmt: skip
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] and isinstance(dash["schemaVersion"], int)
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["w"] <= 24


def test_the_alert_rules_are_a_prometheus_rule() -> None:
    doc = yaml.safe_load((GRAFANA / "prometheus-rules.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    alerts = [r for g in doc["spec"]["groups"] for r in g["rules"]]
    names = {r["alert"] for r in alerts}
    wanted = {"PolicyExtprocFailingClosed", "PolicyExtprocAuditBacklog",
              "PolicyExtprocPolicyReloadFailing", "PolicyExtprocBudgetExhausted",
              "PolicyExtprocRedisSlow", "PolicyExtprocRedisFailing"}  # fmt: skip
    assert wanted <= names
    for r in alerts:
        assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning", "info")
        assert r["annotations"]["summary"]
