"""Through the ext_proc server: a forbidden keyword in any field the model reads blocks the
request, PII there is masked in place (base64 documents re-encoded) with the rest of the body
unchanged, bad JSON is a 400 naming the field, and token prompts need a policy's permission."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    Running,
    common,
    full_request,
    immediate_json,
    run_exchange,
    running_sidecar,
)
from tests.llm_fields import COMPLETIONS, EMBEDDINGS, FIELDS, Field, at

POLICIES = """
- policy_name: guard
  rules:
    - {type: content_filter, id: secret, keywords: [zebracorn], action: block}
    - {type: pii, id: pii, entities: [EMAIL], action: mask}
- policy_name: token_prompts_ok
  org: tokens
  allow_token_prompts: true
  rules: []
"""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_sidecar(tmp_path, POLICIES) as running:
        yield running


def _record(server: Running, request_id: str) -> dict[str, Any]:
    (record,) = [r for r in server.records_json() if r["request_id"] == request_id]
    return record


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
async def test_a_keyword_in_the_field_blocks(server: Running, f: Field) -> None:
    body = json.dumps(f.build("tell me about zebracorn")).encode()
    answers = await run_exchange(server.stub, full_request(body, path=f.path, request_id="r-k"))
    assert answers[-1].WhichOneof("response") == "immediate_response"
    assert answers[-1].immediate_response.status.code == 403
    assert _record(server, "r-k")["decision"] == "block"


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
async def test_pii_in_the_field_is_masked_in_place(server: Running, f: Field) -> None:
    body = json.dumps(f.build("write to jane.doe@example.org today")).encode()
    answers = await run_exchange(server.stub, full_request(body, path=f.path, request_id="r-p"))
    sent = json.loads(common(answers[1]).body_mutation.body)
    assert f.decode(at(sent, f.at)) == "write to [EMAIL] today"
    assert sent == f.build("write to [EMAIL] today")  # nothing else changed
    assert _record(server, "r-p")["decision"] == "modify"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"messages":[],"messages":[{"role":"user","content":"x"}]}', "twice"),
        (b'{"model":"\\ud800","messages":[]}', "lone surrogate"),
        (b'{"messages":[],"max_tokens":-5}', "field 'max_tokens'"),
        (b'{"messages":[],"max_tokens":1e400}', "field 'max_tokens'"),
        (b'{"messages":[],"temperature":1e400}', "field 'temperature'"),
        (b'{"messages":[],"stream":"yes"}', "field 'stream'"),
    ],
)
async def test_bad_json_is_a_400_naming_the_problem(
    server: Running, raw: bytes, message: str
) -> None:
    answers = await run_exchange(server.stub, full_request(raw, request_id="r-b"))
    assert answers[-1].immediate_response.status.code == 400
    err = immediate_json(answers[-1])["error"]
    assert err["code"] == "malformed_body" and message in err["message"]
    assert "/" not in err["message"].replace("text/", "")  # no server path
    assert _record(server, "r-b")["error_code"] == "malformed_body"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (COMPLETIONS, {"model": "gpt-3.5-turbo-instruct", "prompt": [1734, 374]}),
        (EMBEDDINGS, {"model": "text-embedding-3-small", "input": [[1734], "text"]}),
    ],
)
async def test_token_prompts_need_a_policy_that_allows_them(
    server: Running, path: str, body: dict[str, Any]
) -> None:
    raw = json.dumps(body).encode()
    answers = await run_exchange(server.stub, full_request(raw, path=path, request_id="r-t"))
    assert answers[-1].immediate_response.status.code == 400
    assert immediate_json(answers[-1])["error"]["code"] == "token_prompt_unsupported"
    assert _record(server, "r-t")["error_code"] == "token_prompt_unsupported"
    answers = await run_exchange(
        server.stub, full_request(raw, path=path, request_id="r-t2", org="tokens")
    )
    assert answers[-1].WhichOneof("response") == "request_body"
    assert _record(server, "r-t2")["decision"] == "allow"
