"""The alert notifier's pure parts: deduplication windows and payload formats."""

from __future__ import annotations

import json

from policy_extproc.enforce.alerts import Deduper, render, slack_text


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_alert_per_key_per_window_then_the_count_of_those_held_back() -> None:
    clock = Clock()
    d = Deduper(60.0, clock)
    key = ("p", "r", "alice")
    assert d.admit(key) == 0
    clock.now += 10
    assert d.admit(key) is None
    assert d.admit(key) is None
    assert d.admit(("p", "r", "bob")) == 0  # another user: its own window
    assert d.admit(("p", "other", "alice")) == 0  # another rule too
    clock.now += 51
    assert d.admit(key) == 2  # window over: sent, saying two were suppressed
    clock.now += 1
    assert d.admit(key) is None


def test_a_zero_window_sends_everything() -> None:
    d = Deduper(0.0, Clock())
    assert [d.admit(("p", "r", "u")) for _ in range(3)] == [0, 0, 0]


def test_slack_text_and_json_payloads() -> None:
    alert = {"type": "policy_block", "policy": "acme", "rule": "secrets", "reason": "prompt "
             "matches keyword #1", "org": "acme", "user": "alice", "request_id": "r1",
             "suppressed": 3}  # fmt: skip
    assert slack_text(alert) == (
        "policy-extproc policy_block: policy acme / rule secrets: prompt matches keyword #1 "
        "(org=acme user=alice) request r1; 3 similar alerts suppressed"
    )
    assert json.loads(render(alert, "slack")) == {"text": slack_text(alert)}
    assert json.loads(render(alert, "json")) == alert
    budget = {"alert": "team budget at 80% of 500.00 USD", "org": "acme"}
    assert slack_text(budget) == (
        "policy-extproc alert: team budget at 80% of 500.00 USD (org=acme)"
    )
