"""The work budget and the worker path's pieces that need no process (enforce/work.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy_extproc.cli.serve_command import serve
from policy_extproc.enforce import translate
from policy_extproc.enforce.envoy_replies import Extend
from policy_extproc.enforce.work import (
    EXTENSION_MARGIN_S,
    WorkRunner,
    WorkSettings,
    _compact,
    check_budget,
    examine,
    scanners,
)
from policy_extproc.errors import WorkBudgetExceeded
from policy_extproc.policy.compiler import Snapshot, compile_read
from policy_extproc.policy.evaluator import Findings
from policy_extproc.policy.loader import read_sources
from policy_extproc.server import ServerConfig
from policy_extproc.sources.catalog import load_catalog

CATALOG = load_catalog()

REPO = Path(__file__).resolve().parents[2]
CHAT = {":path": "/v1/chat/completions", ":method": "POST", "x-org-id": "acme"}

POLICIES = """
- policy_name: everyone
  rules:
    - {type: pii, id: mail, entities: [EMAIL]}
    - {type: pii, id: out, entities: [PHONE], direction: response}
    - {type: content_filter, id: words, keywords: [confidential], action: redact}
- policy_name: acme
  org: acme
  rules:
    - {type: pii, id: cards, entities: [CREDIT_CARD], direction: both}
    - {type: compliance, id: hipaa, framework: HIPAA}
"""


def snapshot(text: str = POLICIES) -> Snapshot:
    return compile_read(*read_sources([("policies.yaml", text)]))


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


def body(text: str) -> bytes:
    return body_of({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})


def test_scanners_count_each_pass_over_the_request_text() -> None:
    snap = snapshot()
    # everyone: mail (request) and the content policy; out reads responses only.
    assert scanners(snap.resolve("", "", "")) == 2
    # acme adds cards (both directions) and HIPAA's data types.
    assert scanners(snap.resolve("acme", "", "")) == 4
    assert scanners(snapshot("policy_name: none\nrules: []\n").resolve("", "", "")) == 1


@pytest.mark.parametrize(("size", "refused"), [(2500, False), (2501, True)])
def test_the_budget_is_body_bytes_times_scanners(size: int, refused: bool) -> None:
    es = snapshot().resolve("acme", "", "")  # four scanners
    settings = WorkSettings(budget=10_000)
    if refused:
        with pytest.raises(WorkBudgetExceeded) as info:
            check_budget(settings, es, size)
        assert info.value.http_status == 413
        assert "10004 units" in info.value.message
    else:
        check_budget(settings, es, size)
    check_budget(WorkSettings(budget=0), es, 10**9)  # 0: no limit


def _random_edits(rng: random.Random, length: int) -> list[tuple[int, int, str]]:
    edits = []
    for _ in range(rng.randint(1, 30)):
        start = rng.randint(0, length)
        end = min(length, start + rng.randint(0, 8))
        edits.append((start, end, rng.choice(["[EMAIL]", "[REDACTED:x]", "", "****1234"])))
    return edits


@pytest.mark.parametrize("seed", range(25))
def test_compacted_findings_rewrite_every_part_alike(seed: int) -> None:
    # Overlapping, touching, empty and repeated edits: the one whole-part edit a worker sends
    # back gives exactly the texts the original edits give.
    rng = random.Random(seed)
    texts = ["".join(rng.choice("ab é@.\u200b") for _ in range(rng.randint(0, 60))) for _ in "xyz"]
    payload = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": t} for t in texts],
    }
    examined = examine(
        snapshot("policy_name: none\nrules: []\n"), CHAT, None, body_of(payload), catalog=CATALOG
    )
    request = examined.request
    assert request is not None
    edits = {
        i: _random_edits(rng, len(p.text))
        for i, p in enumerate(request.parts)
        if rng.random() < 0.8
    }
    original = Findings(edits={i: list(e) for i, e in edits.items()})
    examined.findings = Findings(edits={i: list(e) for i, e in edits.items()})
    ex = _compact(examined)
    assert ex.findings.new_texts(request.parts) == original.new_texts(request.parts)
    assert all(len(e) == 1 for e in ex.findings.edits.values())


def test_examine_is_the_pipeline_the_engine_runs() -> None:
    headers = {**CHAT, "x-org-id": "globex"}  # everyone's rules only
    ex = examine(
        snapshot(), headers, None, body("mail ann@example.org, confidential"), catalog=CATALOG
    )
    assert ex.request is not None and ex.ctx.org == "globex"
    fired = sorted((f.policy, f.rule, f.action) for f in ex.findings.fired)
    assert fired == [("everyone", "mail", "modify"), ("everyone", "words", "modify")]
    assert ex.findings.new_texts(ex.request.parts) == {
        ex.request.parts[0].path: "mail [EMAIL], [REDACTED:words]"
    }


def test_only_a_body_over_the_threshold_asks_for_time() -> None:
    runner = WorkRunner(WorkSettings(offload_bytes=1000, timeout_s=2.0))
    assert runner.extension_s(999) is None
    assert runner.extension_s(1000) == 2.0 + EXTENSION_MARGIN_S
    assert WorkRunner(WorkSettings(workers=0)).extension_s(10**7) is None


def test_an_extension_is_a_message_with_only_the_timeout() -> None:
    msg = translate.extend(Extend(4.5))
    assert msg.override_message_timeout.ToNanoseconds() == 4_500_000_000
    assert msg.WhichOneof("response") is None
    assert not msg.HasField("dynamic_metadata") and not msg.HasField("mode_override")


def _ext_proc_filters(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if node.get("name") == "envoy.filters.http.ext_proc":
            found.append(node["typed_config"])
        for value in node.values():
            found.extend(_ext_proc_filters(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_ext_proc_filters(value))
    return found


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


@pytest.mark.parametrize(
    "path",
    [
        "envoy/envoy.yaml",
        "envoy/envoy-jwt.yaml",
        "envoy/envoy-k8s.yaml",
        "deploy/base/envoy.yaml",
    ],
)
def test_shipped_envoy_timeouts_agree_with_the_work_budget(path: str) -> None:
    config = yaml.safe_load((REPO / path).read_text())
    # The inline filter; the observe filter (observability_mode) is never waited for.
    [ext_proc] = [f for f in _ext_proc_filters(config) if not f.get("observability_mode")]
    defaults = ServerConfig(policies=())
    # The sidecar's idea of Envoy's timeout is Envoy's, and what it asks for Envoy grants.
    assert _seconds(ext_proc["message_timeout"]) == defaults.message_timeout_s
    granted = _seconds(ext_proc["max_message_timeout"])
    assert defaults.work_timeout_s + EXTENSION_MARGIN_S <= granted


def test_serve_flags_default_to_the_server_config() -> None:
    defaults = ServerConfig(policies=())
    flags = {p.name: p.default for p in serve.params}
    assert flags["work_budget"] == defaults.work_budget
    assert flags["work_timeout"] == defaults.work_timeout_s
    assert flags["offload_bytes"] == defaults.offload_bytes
    assert flags["offload_workers"] == defaults.offload_workers
    assert flags["offload_warm"] == defaults.offload_warm
    assert flags["message_timeout"] == defaults.message_timeout_s
    assert flags["response_accounting"] == defaults.response_accounting
    assert flags["observe_timeout"] == defaults.observe_timeout_s


def test_the_server_config_is_validated_when_it_is_made() -> None:
    """ "Validated once, then frozen": a setting the engine refuses fails at construction (and
    ``serve`` turns that into a usage error), not when the server starts."""
    with pytest.raises(ValueError, match="response_accounting"):
        ServerConfig(policies=(), response_accounting="sometimes")
    with pytest.raises(ValueError, match="reservation ttl"):
        ServerConfig(policies=(), response_accounting="observe", observe_timeout_s=500.0)
