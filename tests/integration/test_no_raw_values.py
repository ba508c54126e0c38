"""Compliance-grade hygiene: raw matched values never reach the audit log, spans or logs.

Requests and answers full of PII and filtered content go through the sidecar (masked, blocked,
streamed, shadowed); then everything it wrote -- the audit log file, every span exported over
OTLP, every log record at DEBUG -- is searched for each raw value. Only types, counts and rule
names may appear.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.integration.helpers import (
    chat_body,
    full_exchange,
    full_request,
    response_body,
    response_headers,
    run_exchange,
    running_sidecar,
)
from tests.otlp_receiver import OtlpReceiver

POLICIES = """
- policy_name: privacy
  org: acme
  rules:
    - {type: pii, id: mask-all}
    - {type: pii, id: no-secrets, entities: [API_SECRET], action: block}
    - {type: content_filter, id: codenames, keywords: [bluebird], action: redact, direction: both}
    - {type: content_filter, id: leaks, patterns: ["launch code [0-9]{4}"], action: block}
- policy_name: shadow
  org: acme
  mode: log
  rules:
    - {type: pii, id: shadow-pii, entities: [IBAN], action: block}
"""
VALUES = {
    "email": "dana.secret@example.org",
    "ssn": "123-45-6789",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "secret": "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd",
    "codename": "bluebird",
    "launch": "launch code 7391",
}
HEADERS = {"x-org-id": "acme", "x-user-id": "u1"}


def _sse(texts: list[str]) -> bytes:
    chunks = [{"choices": [{"index": 0, "delta": {"content": t}}]} for t in texts]
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


@pytest.mark.timeout(60)
async def test_no_raw_value_is_written_anywhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    audit = tmp_path / "audit.jsonl"
    with OtlpReceiver() as receiver:
        async with running_sidecar(
            tmp_path, POLICIES, audit_log=str(audit), otlp_endpoint=receiver.endpoint
        ) as running:
            v = VALUES
            prompts = [
                f"mail {v['email']}, ssn {v['ssn']}, card {v['card']}, about {v['codename']}",
                f"my key is {v['secret']}",  # blocked
                f"the {v['launch']} please",  # blocked
                f"iban {v['iban']}",  # masked, and shadow-blocked
            ]
            for prompt in prompts:
                answer = json.dumps({"choices": [{"index": 0, "message": {
                    "role": "assistant", "content": f"echo: {prompt}"}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 5}}).encode()  # fmt: skip
                await run_exchange(running.stub, full_exchange(chat_body(prompt), response=answer,
                                                               headers=HEADERS))  # fmt: skip
            # A streamed answer with values split across chunks.
            stream = _sse(["write to dana.sec", "ret@example.org about blue", "bird now"])
            await run_exchange(running.stub, [
                *full_request(chat_body("hi", stream=True), headers=HEADERS),
                response_headers(content_type="text/event-stream"),
                response_body(stream),
            ])  # fmt: skip
            records = running.records_json()
        receiver.wait_for_spans(len(records))
        spans = receiver.spans
    assert records and spans
    written = {
        "audit log": audit.read_text(),
        "records": json.dumps(records),
        "spans": json.dumps(
            [{"name": s.name, "attributes": s.attributes} for s in spans], default=str
        ),
        "logs": "\n".join(r.getMessage() for r in caplog.records),
    }
    for where, text in written.items():
        for name, value in VALUES.items():
            assert value not in text, f"raw {name} found in the {where}"
            assert value.replace(" ", "") not in text, f"raw {name} found in the {where}"
    # ... while what was found is accounted for by type and count.
    kinds = {k for r in records for k in r["redactions"]}
    assert {"EMAIL", "US_SSN", "CREDIT_CARD", "IBAN", "codenames"} <= kinds
    assert any(r["rule"] == "no-secrets" and r["decision"] == "block" for r in records)
    assert any(r["would_decide"] == "block" for r in records)
