"""Alerts on every enforced block and escalation, at a real HTTP receiver.

Deduplicated per (policy, rule, user), silenced per rule with ``alert: false``, never for shadow
decisions or malformed requests, JSON or Slack payloads, and never a word of the prompt.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.envoy_harness import free_port
from tests.integration.helpers import (
    Running,
    chat_body,
    full_request,
    run_exchange,
    running_sidecar,
    wait_for,
)
from tests.webhook_receiver import Webhook

SECRET = "zebra-omega-7"  # text of the prompt: must never reach an alert

POLICIES = """
- policy_name: acme_rules
  org: acme
  rules:
    - {type: content_filter, id: secrets, keywords: [confidential], action: block}
    - {type: content_filter, id: quiet, keywords: [hush], action: block, alert: false}
    - {type: approval, id: big, models: ["gpt-4.5*"]}
- policy_name: acme_shadow
  org: acme
  mode: log
  rules:
    - {type: content_filter, id: trial, keywords: [trialword], action: block}
"""


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    try:
        yield hook
    finally:
        hook.stop()


@pytest.fixture
async def sidecar(
    tmp_path: Path, webhook: Webhook, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    fmt = getattr(request, "param", "json")
    async with running_sidecar(
        tmp_path, POLICIES, alert_webhook=webhook.url, alert_format=fmt
    ) as running:
        yield running


async def send(server: Running, text: str, *, user: str = "alice", rid: str = "r-1",
               model: str = "gpt-4o-mini", body: bytes | None = None) -> None:  # fmt: skip
    data = body if body is not None else chat_body(f"{text} {SECRET}", model=model)
    headers = {"x-user-id": user, "x-team-id": "ml"}
    await run_exchange(server.stub, full_request(data, request_id=rid, headers=headers))


def _no_prompt(alerts: list[dict[str, Any]]) -> None:
    assert SECRET not in json.dumps(alerts)


async def test_an_enforced_block_alerts_once_with_what_the_record_holds(
    sidecar: Running, webhook: Webhook
) -> None:
    await send(sidecar, "the confidential plan", rid="b-1")
    await wait_for(lambda: len(webhook.received) == 1, "the block's alert")
    (alert,) = webhook.received
    assert alert["type"] == "policy_block"
    assert (alert["policy"], alert["rule"], alert["decision"]) == ("acme_rules", "secrets",
                                                                    "block")  # fmt: skip
    assert (alert["org"], alert["team"], alert["user"]) == ("acme", "ml", "alice")
    assert alert["request_id"] == "b-1"
    assert "keyword #1" in alert["reason"]
    _no_prompt(webhook.received)


async def test_alerts_are_deduplicated_per_rule_and_user(
    sidecar: Running, webhook: Webhook
) -> None:
    for i in range(3):
        await send(sidecar, "confidential", rid=f"a-{i}")
    await send(sidecar, "confidential", user="bob", rid="b-0")
    await wait_for(lambda: len(webhook.received) == 2, "one alert per user")
    await sidecar.sidecar.alerts.close()
    assert [a["user"] for a in webhook.received] == ["alice", "bob"]
    assert sidecar.sidecar.alerts.suppressed == 2


async def test_no_alert_for_an_opted_out_rule_a_shadow_policy_or_a_malformed_body(
    sidecar: Running, webhook: Webhook
) -> None:
    await send(sidecar, "hush now", rid="q-1")
    await send(sidecar, "a trialword here", rid="s-1")
    await send(sidecar, "", rid="m-1", body=b"{not json")
    await send(sidecar, "confidential", rid="last")  # alerts: everything before it did not
    await wait_for(lambda: len(webhook.received) == 1, "the last block's alert")
    await sidecar.sidecar.alerts.close()
    assert [a["request_id"] for a in webhook.received] == ["last"]
    assert sidecar.sidecar.alerts.silenced == 1
    decisions = {r["request_id"]: r["decision"] for r in sidecar.records_json()}
    assert decisions == {"q-1": "block", "s-1": "allow", "m-1": "block", "last": "block"}


async def test_an_escalation_alerts_with_its_approval_id(
    sidecar: Running, webhook: Webhook
) -> None:
    await send(sidecar, "hello", model="gpt-4.5-preview", rid="e-1")
    await wait_for(lambda: len(webhook.received) == 1, "the approval alert")
    (alert,) = webhook.received
    assert alert["type"] == "approval_required"
    assert alert["approval_id"] and alert["rule"] == "big"
    _no_prompt(webhook.received)


@pytest.mark.parametrize("sidecar", ["slack"], indirect=True)
async def test_slack_payload(sidecar: Running, webhook: Webhook) -> None:
    await send(sidecar, "the confidential plan", rid="s-9")
    await wait_for(lambda: len(webhook.received) == 1, "the Slack alert")
    (payload,) = webhook.received
    assert list(payload) == ["text"]
    text = payload["text"]
    assert text.startswith("policy-extproc policy_block: policy acme_rules / rule secrets: ")
    assert "user=alice" in text and "request s-9" in text
    _no_prompt(webhook.received)


async def test_a_receiver_that_is_down_is_retried_then_counted(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/alerts"  # nobody listens there
    async with running_sidecar(tmp_path, POLICIES, alert_webhook=url) as server:
        notifier = server.sidecar.alerts
        notifier.backoff_s = 0.01
        await send(server, "confidential", rid="d-1")
        record = server.records_json()[0]
        assert record["decision"] == "block"  # the decision never waits for the webhook
        await wait_for(lambda: notifier.failed == 1, "the alert given up after its retries")
        assert (notifier.sent, notifier.dropped) == (0, 0)
