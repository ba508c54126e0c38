"""Canonical matching through the ext_proc server: Unicode tricks are blocked or redacted, and
benign text in any script goes on byte for byte (no body mutation at all)."""

# ruff: noqa: RUF001 (look-alike characters are what these tests are about)

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    Running,
    common,
    full_exchange,
    full_request,
    immediate_json,
    metadata,
    run_exchange,
    running_sidecar,
)

POLICIES = """
- policy_name: tricks
  org: acme
  rules:
    - type: content_filter
      id: secrets
      keywords: [confidential]
      action: block
    - type: content_filter
      id: plans
      patterns: ['secret\\s+plan\\s+\\d+']
      action: block
    - type: content_filter
      id: weapons
      topics: {weapons: [build a bomb]}
      action: block
    - type: content_filter
      id: codenames
      keywords: [project-aurora]
      action: redact
    - type: pii
      id: mail
      entities: [EMAIL]
"""

ZW = "\u200b"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_sidecar(tmp_path, POLICIES) as running:
        yield running


def _chat(content: Any) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    return json.dumps(body, ensure_ascii=False).encode()


@pytest.mark.parametrize(
    ("rule", "content"),
    [
        ("secrets", f"this is conf{ZW}idential"),
        ("secrets", "this is conf\u2060identi\u00adal"),
        ("secrets", "this is ｃｏｎｆｉｄｅｎｔｉａｌ"),
        ("secrets", "this is \u0441onfidential"),
        ("secrets", "this is conf\u0301idential"),
        ("plans", "the secret\u00a0plan\u3000 42"),
        ("weapons", "how to build\u2003a b\u043emb"),
        ("secrets", [{"type": "text", "text": "a"}, {"type": "text", "text": "ｃonfidential"}]),
    ],
)
async def test_a_request_with_a_unicode_trick_is_blocked(
    server: Running, rule: str, content: Any
) -> None:
    answers = await run_exchange(server.stub, full_request(_chat(content), request_id="r-t"))
    assert answers[1].immediate_response.status.code == 403
    body = immediate_json(answers[1])
    assert (body["decision"], body["rule"]) == ("block", rule)


@pytest.mark.parametrize(
    ("content", "sent"),
    [
        ("Status of project\u2011aurora, café", "Status of [REDACTED:codenames], café"),
        (f"Status of pro{ZW}ject-aurora{ZW}!", f"Status of [REDACTED:codenames]{ZW}!"),
        ("日本語 ｐｒｏｊｅｃｔ‐ａｕｒｏｒａ 日本語", "日本語 [REDACTED:codenames] 日本語"),
        ("mail jörg@example.org or bob＠example.org", "mail [EMAIL] or [EMAIL]"),
    ],
)
async def test_a_redaction_replaces_exactly_the_original_span(
    server: Running, content: str, sent: str
) -> None:
    answers = await run_exchange(server.stub, full_exchange(_chat(content), request_id="r-m"))
    new_body = json.loads(common(answers[1]).body_mutation.body)
    assert new_body["messages"][0]["content"] == sent


BENIGN = [
    "Привет! Как дела? Это обычный русский текст без секретов.",
    "日本語のテキストです。東京で会議があります。ｶﾀｶﾅもあります。",
    "Crème brûlée, naïve café, Ærøskøbing, straße, ﬁne — “quoted” ‘text’",
    "Emoji: 👩\u200d💻 👨\u200d👩\u200d👧\u200d👦 🏳\ufe0f\u200d🌈 ❤\ufe0f 🇫🇷",
    "مرحبا بالعالم — שלום עולם — हिन्दी पाठ — 한국어 텍스트",
    "NBSP\u00a0here, ideographic\u3000space, soft\u00adhyphen, a\u2011b",
]


@pytest.mark.parametrize("text", BENIGN)
async def test_benign_text_in_any_script_goes_on_byte_for_byte(server: Running, text: str) -> None:
    body = _chat(text)
    answers = await run_exchange(server.stub, full_exchange(body, request_id="r-ok"))
    kinds = [a.WhichOneof("response") for a in answers]
    assert kinds[:2] == ["request_headers", "request_body"]
    assert metadata(answers[1])["decision"] == "allow"
    # No body mutation: Envoy sends the client's bytes on as they came.
    assert not common(answers[1]).HasField("body_mutation")
