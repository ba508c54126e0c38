"""``max_prompt_tokens`` through the ext_proc server: 403 or 429 as the rule says, audited with
the estimate and the limit, never the prompt; a prompt under the limit goes on untouched."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.helpers import (
    Running,
    chat_body,
    common,
    full_request,
    immediate_json,
    metadata,
    run_exchange,
    running_sidecar,
)

POLICIES = """
- policy_name: sizes
  org: acme
  rules:
    - {type: max_prompt_tokens, id: chat-size, max_tokens: 200, models: ["gpt-4o*"]}
    - {type: max_prompt_tokens, id: claude-size, max_tokens: 200, models: ["claude-*"],
       action: throttle}
"""

LONG = "tell me about the moon " * 100  # about 575 estimated tokens


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_sidecar(tmp_path, POLICIES) as running:
        yield running


async def test_a_long_chat_prompt_is_blocked(server: Running) -> None:
    answers = await run_exchange(server.stub, full_request(chat_body(LONG), request_id="r-b"))
    immediate = answers[1].immediate_response
    assert immediate.status.code == 403
    body = immediate_json(answers[1])
    assert (body["decision"], body["rule"], body["error"]["code"]) == (
        "block", "chat-size", "blocked"
    )  # fmt: skip
    assert "tokens (estimated) is over the limit of 200" in body["reason"]
    (record,) = server.records_json()
    assert (record["decision"], record["rule"]) == ("block", "chat-size")
    assert "moon" not in json.dumps(record)


async def test_a_long_anthropic_prompt_is_throttled(server: Running) -> None:
    raw = json.dumps({"model": "claude-3-haiku", "max_tokens": 50,
                      "messages": [{"role": "user", "content": LONG}]}).encode()  # fmt: skip
    answers = await run_exchange(
        server.stub, full_request(raw, path="/v1/messages", request_id="r-t")
    )
    immediate = answers[1].immediate_response
    assert immediate.status.code == 429
    body = immediate_json(answers[1])
    assert (body["decision"], body["rule"], body["error"]["code"]) == (
        "throttle", "claude-size", "rate_limited"
    )  # fmt: skip


async def test_a_short_prompt_goes_on_untouched(server: Running) -> None:
    answers = await run_exchange(server.stub, full_request(chat_body("hi"), request_id="r-ok"))
    assert answers[1].WhichOneof("response") == "request_body"
    assert metadata(answers[1])["decision"] == "allow"
    assert not common(answers[1]).HasField("body_mutation")
