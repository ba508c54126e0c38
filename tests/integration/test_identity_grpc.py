"""Identity and model spelling through the real ext_proc and ext_authz services (issue 10).

One case per bullet of the issue: a request without x-org-id, ``ACME`` and ``Development``,
two folded values, JWT claims; ``O1-PREVIEW``, ``openai/o1-preview``, ``" o1-preview"`` and an
Azure deployment against a deny list; the usage chunk the sidecar asked for, with and without
output guardrails. Each checks what the client gets and what the audit kept.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as authg
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from tests.integration.helpers import (
    CHAT,
    Exchange,
    Running,
    chat_body,
    common,
    full_request,
    immediate_json,
    request_body,
    request_headers,
    response_body,
    response_headers,
    run_exchange,
    running_sidecar,
)
from tests.integration.test_extauthz_grpc import check_request

POLICIES = """
- policy_name: everyone
  rules:
    - {type: content_filter, id: global-word, keywords: [forbidden], action: block}
- policy_name: acme_base
  org: acme
  rules:
    - {type: content_filter, id: secrets, keywords: [confidential], action: block}
    - {type: model_access, id: no-reasoning, deny_models: ["o1*"]}
- policy_name: acme_dev
  scope: {org: acme, environment: development}
  rules:
    - {type: content_filter, id: dev-secrets, keywords: [staging-key], action: block}
- policy_name: acme_ml
  scope: {org: ACME, team: ML}
  rules:
    - {type: model_access, id: interns, roles: [Intern], models: [gpt-4o-mini]}
- policy_name: metered
  org: metered
  rules:
    - {type: cost_budget, id: monthly, per: org, limit_usd: 1000, period: month}
- policy_name: metered_guarded
  org: metered-guarded
  rules:
    - {type: cost_budget, id: monthly, per: org, limit_usd: 1000, period: month}
    - {type: content_filter, id: codenames, keywords: [aurora], action: redact,
       direction: response}
"""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_sidecar(tmp_path, POLICIES) as running:
        yield running


def records(server: Running, request_id: str) -> list[dict[str, Any]]:
    return [r for r in server.records_json() if r["request_id"] == request_id]


async def decide(
    server: Running,
    text: str,
    *,
    rid: str,
    org: str | None = "acme",
    headers: dict[str, str] | None = None,
    model: str = "gpt-4o-mini",
    path: str = CHAT,
    **kw: Any,
) -> ep.ProcessingResponse:
    """Send a chat request; the last answer (an immediate response, or the body's)."""
    body = chat_body(text, model=model)
    msgs = full_request(body, request_id=rid, org=org, headers=headers or {}, path=path, **kw)
    answers = await run_exchange(server.stub, msgs)
    return answers[-1]


def refused(answer: ep.ProcessingResponse) -> tuple[int, dict[str, Any]]:
    body = immediate_json(answer)
    return answer.immediate_response.status.code, body


# -- identity is required ----------------------------------------------------------------------


async def test_a_request_without_an_organisation_is_refused_at_its_headers(
    server: Running,
) -> None:
    body = chat_body("hello")
    answers = await run_exchange(server.stub, full_request(body, request_id="r-noorg", org=None))
    assert len(answers) == 1  # refused on the headers: the body is never waited for
    status, error = refused(answers[0])
    assert status == 400 and error["error"]["code"] == "missing_identity"
    assert "x-org-id" in error["error"]["message"]
    (record,) = records(server, "r-noorg")
    assert record["decision"] == "block" and record["error_code"] == "missing_identity"
    assert record["org"] is None


@pytest.mark.parametrize(
    ("org", "headers"),
    [(None, {}), ("", {}), (" ", {}), (None, {"x-team-id": "ml", "x-user-id": "u1"})],
)
async def test_every_way_of_naming_no_organisation_is_refused(
    server: Running, org: str | None, headers: dict[str, str]
) -> None:
    answer = await decide(server, "forbidden", rid="r-none", org=org, headers=headers)
    status, error = refused(answer)
    assert (status, error["error"]["code"]) == (400, "missing_identity")
    (record,) = records(server, "r-none")
    assert record["error_code"] == "missing_identity"
    assert record["user"] == headers.get("x-user-id")  # the refusal names who asked


async def test_a_request_without_a_body_and_an_organisation_is_refused(server: Running) -> None:
    answers = await run_exchange(
        server.stub, [request_headers(method="GET", path="/v1/models", org=None)]
    )
    status, error = refused(answers[0])
    assert (status, error["error"]["code"]) == (400, "missing_identity")


async def test_with_allow_anonymous_only_the_policies_of_empty_scope_apply(
    tmp_path: Path,
) -> None:
    async with running_sidecar(tmp_path, POLICIES, allow_anonymous=True) as anon:
        answer = await decide(anon, "confidential plans", rid="r-anon-1", org=None)
        assert answer.WhichOneof("response") == "request_body"  # acme's rules do not apply
        answer = await decide(anon, "forbidden plans", rid="r-anon-2", org=None)
        status, error = refused(answer)
        assert status == 403 and error["rule"] == "global-word"
        assert [r["decision"] for r in anon.records_json()] == ["allow", "block"]


# -- identity is canonical ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("org", "headers", "text", "rule"),
    [
        ("ACME", {}, "confidential", "secrets"),
        ("  Acme ", {}, "confidential", "secrets"),
        ("acme", {"x-environment": "Development"}, "my staging-key", "dev-secrets"),
        ("ACME", {"x-environment": " DEVELOPMENT"}, "my staging-key", "dev-secrets"),
        # The policy says ACME/ML and Intern; the request acme/ml and INTERN.
        ("acme", {"x-team-id": "ml", "x-user-roles": "analyst, INTERN"}, "hi o3", "interns"),
        # Policies of empty scope apply to every identified request too.
        ("Globex", {}, "forbidden", "global-word"),
    ],
)
async def test_identity_values_meet_their_policies_in_any_spelling(
    server: Running, org: str, headers: dict[str, str], text: str, rule: str
) -> None:
    model = "o3" if rule == "interns" else "gpt-4o-mini"
    answer = await decide(server, text, rid="r-spelled", org=org, headers=headers, model=model)
    status, error = refused(answer)
    assert status == 403 and error["rule"] == rule
    (record,) = records(server, "r-spelled")
    assert record["org"] == org.strip().lower()  # the audit keeps the canonical form
    if "x-environment" in headers:
        assert record["environment"] == "development"


# -- one identity, one value ---------------------------------------------------------------------


def repeated_header_request(name: str, values: list[str], body: bytes) -> ep.ProcessingRequest:
    """request_headers with ``name`` sent once per value, as Envoy passes repeated headers."""
    msg = request_headers(body=body, request_id="r-twice", org=None)
    for value in values:
        msg.request_headers.headers.headers.append(
            base_pb2.HeaderValue(key=name, raw_value=value.encode())
        )
    return msg


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("x-org-id", ["acme", "globex"]),
        ("x-org-id", ["acme", "acme"]),
        ("x-org-id", ["acme, x"]),
        ("x-team-id", ["ml", "support"]),
        ("x-environment", ["development,production"]),
    ],
)
async def test_two_values_for_one_identity_header_are_refused(
    server: Running, name: str, values: list[str]
) -> None:
    body = chat_body("confidential")
    first = repeated_header_request(name, values, body)
    if name != "x-org-id":
        first.request_headers.headers.headers.append(
            base_pb2.HeaderValue(key="x-org-id", raw_value=b"acme")
        )
    answers = await run_exchange(server.stub, [first, request_body(body)])
    status, error = refused(answers[0])
    assert (status, error["error"]["code"]) == (400, "ambiguous_identity")
    assert error["error"]["message"].startswith(f"{name} carries")
    (record,) = records(server, "r-twice")
    assert record["decision"] == "block" and record["error_code"] == "ambiguous_identity"


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"sub": "u1", "org": ["acme", "globex"]}, "ambiguous_identity"),
        ({"sub": "u1", "org": "acme,globex"}, "ambiguous_identity"),
        ({"sub": "u1"}, "missing_identity"),
    ],
)
async def test_jwt_claims_follow_the_same_rules(
    server: Running, claims: dict[str, Any], code: str
) -> None:
    answer = await decide(server, "hello", rid="r-jwt", org=None, claims=claims)
    status, error = refused(answer)
    assert (status, error["error"]["code"]) == (400, code)
    (record,) = records(server, "r-jwt")
    assert record["error_code"] == code and record["user"] == "u1"


async def test_a_jwt_claim_in_capitals_meets_its_policy(server: Running) -> None:
    # The claim wins over the header, and is canonical.
    answer = await decide(
        server, "confidential", rid="r-jwt-caps", org="globex", claims={"sub": "u", "org": "ACME"}
    )
    status, error = refused(answer)
    assert status == 403 and error["rule"] == "secrets"
    assert records(server, "r-jwt-caps")[0]["org"] == "acme"


# -- ext_authz -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "claims", "status", "code"),
    [
        ({"x-org-id": ""}, None, 400, "missing_identity"),
        (None, None, 400, "missing_identity"),  # the header removed altogether
        ({"x-org-id": "acme, globex"}, None, 400, "ambiguous_identity"),
        ({"x-org-id": "x"}, {"sub": "u", "org": ["a", "b"]}, 400, "ambiguous_identity"),
        ({"x-org-id": "ACME"}, None, 403, "blocked"),
    ],
)
async def test_ext_authz_applies_the_same_identity_rules(
    server: Running,
    headers: dict[str, str] | None,
    claims: dict[str, Any] | None,
    status: int,
    code: str,
) -> None:
    req = check_request(
        chat_body("confidential"), request_id="az-id", headers=headers, claims=claims
    )
    if headers is None:
        del req.attributes.request.http.headers["x-org-id"]
    resp = await authg.AuthorizationStub(server.channel).Check(req)
    assert resp.denied_response.status.code == status
    assert json.loads(resp.denied_response.body)["error"]["code"] == code
    (record,) = records(server, "az-id")  # one record per request
    assert record["decision"] == "block"


# -- model names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["o1-preview", "O1-PREVIEW", "openai/o1-preview", " o1-preview", "OpenAI/O1-Mini\t"]
)
async def test_a_deny_list_holds_against_every_spelling_of_a_model(
    server: Running, model: str
) -> None:
    answer = await decide(server, "hi", rid="r-model", model=model)
    status, error = refused(answer)
    assert status == 403 and error["rule"] == "no-reasoning"
    assert "is denied" in error["reason"]
    (record,) = records(server, "r-model")
    assert record["model"] == model.strip().lower().removeprefix("openai/")


FORMATS = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"prompt": "hi"}),
    ("/v1/embeddings", {"input": "hi"}),
    ("/v1/responses", {"input": "hi"}),
    ("/v1/messages", {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
]


@pytest.mark.parametrize(("path", "body"), FORMATS, ids=[p for p, _ in FORMATS])
@pytest.mark.parametrize("model", ["O1-PREVIEW", "openai/o1-preview", " o1-preview"])
async def test_every_api_format_judges_the_canonical_model(
    server: Running, path: str, body: dict[str, Any], model: str
) -> None:
    raw = json.dumps({"model": model, **body}).encode()
    answers = await run_exchange(server.stub, full_request(raw, path=path, request_id="r-fmt"))
    status, error = refused(answers[-1])
    assert status == 403 and error["rule"] == "no-reasoning"


async def test_an_azure_deployment_is_judged_as_its_model(tmp_path: Path) -> None:
    path = "/openai/deployments/o1-prod/chat/completions?api-version=2024-10-21"
    catalog = tmp_path / "catalog.yaml"
    default = (Path(__file__).parents[2] / "policy_extproc/llm/default_catalog.yaml").read_text()
    catalog.write_text(default.replace("deployments: {}", "deployments: {O1-Prod: o1}"))
    async with running_sidecar(tmp_path, POLICIES, catalog=str(catalog)) as running:
        # The body names an allowed model; Azure serves the deployment's o1.
        answer = await decide(running, "hi", rid="r-az", model="gpt-4o-mini", path=path)
        status, error = refused(answer)
        assert status == 403 and error["rule"] == "no-reasoning"
        (record,) = records(running, "r-az")
        assert record["model"] == "o1"


# -- the usage chunk the sidecar asked for --------------------------------------------------------


def sse(*payloads: object) -> list[bytes]:
    return [f"data: {json.dumps(p)}\n\n".encode() for p in payloads] + [b"data: [DONE]\n\n"]


USAGE = {"prompt_tokens": 12, "completion_tokens": 9}
STREAM = sse(
    {"choices": [{"index": 0, "delta": {"content": "the aur"}}], "usage": None},
    {"choices": [{"index": 0, "delta": {"content": "ora rises"}}], "usage": None},
    {"choices": [], "usage": USAGE},
)


async def stream_through(
    server: Running, org: str, body: bytes, rid: str
) -> tuple[dict[str, Any], bytes]:
    """A streamed chat through the server: the body the provider got, and what the client got."""
    ex = Exchange(server.stub)
    await ex.send(request_headers(body=body, request_id=rid, org=org))
    answer = await ex.send(request_body(body))
    sent_body = common(answer).body_mutation.body or body
    await ex.send(response_headers(content_type="text/event-stream"))
    out = []
    for i, chunk in enumerate(STREAM):
        answer = await ex.send(response_body(chunk, end_of_stream=i == len(STREAM) - 1))
        c = common(answer)
        out.append(c.body_mutation.body if c.HasField("body_mutation") else chunk)
    assert await ex.close() == grpc.StatusCode.OK
    return json.loads(sent_body), b"".join(out)


def client_events(raw: bytes) -> list[Any]:
    frames = [f.removeprefix(b"data: ") for f in raw.split(b"\n\n") if f]
    return [json.loads(f) if f != b"[DONE]" else "[DONE]" for f in frames]


@pytest.mark.parametrize("org", ["metered", "metered-guarded"])
async def test_the_usage_chunk_the_client_did_not_ask_for_is_removed(
    server: Running, org: str
) -> None:
    sent, got = await stream_through(server, org, chat_body("hi", stream=True), f"r-{org}")
    assert sent["stream_options"] == {"include_usage": True}  # asked for, for the budget
    events = client_events(got)
    assert events[-1] == "[DONE]"
    assert all(e["choices"] for e in events[:-1])  # no usage-only chunk reaches the client
    text = "".join(e["choices"][0]["delta"]["content"] for e in events[:-1])
    if org == "metered-guarded":  # the output guardrail still works across chunks
        assert text == "the [REDACTED:codenames] rises"
    else:
        assert text == "the aurora rises"
    (response,) = [r for r in records(server, f"r-{org}") if r["phase"] == "response"]
    assert response["usage"] == {"input_tokens": 12, "output_tokens": 9}  # the cost is known
    assert response["cost_usd"] > 0


async def test_a_client_that_asked_for_usage_keeps_its_chunk(server: Running) -> None:
    body = json.loads(chat_body("hi", stream=True))
    body["stream_options"] = {"include_usage": True}
    raw = json.dumps(body).encode()
    sent, got = await stream_through(server, "metered", raw, "r-asked")
    assert sent["stream_options"] == {"include_usage": True}
    assert got == b"".join(STREAM)  # byte for byte, usage chunk included


async def test_a_client_that_refused_usage_does_not_get_it(server: Running) -> None:
    body = json.loads(chat_body("hi", stream=True))
    body["stream_options"] = {"include_usage": False}
    sent, got = await stream_through(server, "metered", json.dumps(body).encode(), "r-no")
    assert sent["stream_options"] == {"include_usage": True}
    assert all(e == "[DONE]" or e["choices"] for e in client_events(got))
