"""The ext_authz service over real gRPC: allow as ok_response, refusals as denied_response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as auth
from envoy.service.auth.v3 import external_auth_pb2_grpc as authg

from policy_extproc.audit.chain import AuditLogError
from tests.integration.helpers import (
    CHAT,
    Running,
    chat_body,
    header_map,
    jwt_metadata,
    running_sidecar,
)

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
- policy_name: globex_base
  org: globex
  rules:
    - type: model_access
      id: models
      models: [claude-3-haiku]
"""

OK, PERMISSION_DENIED = 0, 7


@pytest.fixture(params=["grpc", "h2"])
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """The sidecar on each transport (serve --transport): the same answers from both."""
    async with running_sidecar(tmp_path, POLICIES, transport=request.param) as running:
        yield running


def check_request(
    body: bytes,
    *,
    path: str = CHAT,
    method: str = "POST",
    request_id: str = "az-1",
    headers: Mapping[str, str] | None = None,
    declared_length: int | None = None,
    claims: Mapping[str, Any] | None = None,
    raw_headers: bool = False,
) -> auth.CheckRequest:
    """A CheckRequest as Envoy builds it with with_request_body (pack_as_bytes)."""
    h = {"x-org-id": "acme", "content-type": "application/json"}
    h["content-length"] = str(len(body) if declared_length is None else declared_length)
    h.update(headers or {})
    http = ac.AttributeContext.HttpRequest(
        id=request_id, method=method, path=path, host="llm.local", raw_body=body
    )
    if raw_headers:  # encode_raw_headers: true
        http.header_map.CopyFrom(header_map(h))
    else:
        http.headers.update(h)
    attrs = ac.AttributeContext(request=ac.AttributeContext.Request(http=http))
    if claims is not None:
        attrs.metadata_context.CopyFrom(jwt_metadata(claims))
    return auth.CheckRequest(attributes=attrs)


async def check(server: Running, request: auth.CheckRequest) -> auth.CheckResponse:
    stub = authg.AuthorizationStub(server.channel)
    response: auth.CheckResponse = await stub.Check(request)
    return response


def _headers(options: Any) -> dict[str, str]:
    out = {}
    for o in options:
        assert o.header.value == "", "raw_value only"
        out[o.header.key] = o.header.raw_value.decode()
    return out


def _records_for(server: Running, request_id: str) -> list[dict[str, Any]]:
    return [r for r in server.records_json() if r["request_id"] == request_id]


async def test_allow_is_an_ok_response_with_the_decision_header(server: Running) -> None:
    resp = await check(server, check_request(chat_body("hello"), request_id="az-allow"))
    assert resp.status.code == OK
    assert resp.WhichOneof("http_response") == "ok_response"
    headers = _headers(resp.ok_response.response_headers_to_add)
    assert headers == {"x-policy-decision": "allow", "x-request-id": "az-allow"}
    (record,) = _records_for(server, "az-allow")
    assert record["decision"] == "allow"
    assert record["org"] == "acme"


async def test_block_is_a_denied_403_with_the_json_body(server: Running) -> None:
    resp = await check(
        server, check_request(chat_body("a confidential plan"), request_id="az-block")
    )
    assert resp.status.code == PERMISSION_DENIED
    assert resp.WhichOneof("http_response") == "denied_response"
    denied = resp.denied_response
    assert denied.status.code == 403
    body = json.loads(denied.body)
    assert body["error"]["type"] == "policy_violation"
    assert body["error"]["code"] == "blocked"
    assert (body["decision"], body["policy"], body["rule"]) == ("block", "acme_base", "secrets")
    assert body["request_id"] == "az-block"
    assert body["reason"] == body["error"]["message"]
    headers = _headers(denied.headers)
    assert headers["content-type"] == "application/json"
    assert headers["x-policy-decision"] == "block"
    (record,) = _records_for(server, "az-block")
    assert record["decision"] == "block"


async def test_a_body_cut_short_is_refused(server: Running) -> None:
    # with_request_body.allow_partial_message: Envoy cut the body at max_request_bytes.
    body = chat_body("hello there")
    resp = await check(
        server,
        check_request(body[:20], declared_length=len(body), request_id="az-cut"),
    )
    assert resp.status.code == PERMISSION_DENIED
    assert resp.denied_response.status.code == 413
    assert json.loads(resp.denied_response.body)["error"]["code"] == "body_too_large"
    assert _records_for(server, "az-cut")[0]["error_code"] == "body_too_large"


async def test_malformed_body_is_a_400(server: Running) -> None:
    resp = await check(server, check_request(b"{not json", request_id="az-bad"))
    assert resp.denied_response.status.code == 400
    assert json.loads(resp.denied_response.body)["error"]["code"] == "malformed_body"


async def test_modify_is_refused_rather_than_passed_unredacted(server: Running) -> None:
    # ext_authz cannot rewrite a body: a request that must be redacted never goes through as is.
    resp = await check(server, check_request(chat_body("about project-aurora"), request_id="az-m"))
    assert resp.status.code == PERMISSION_DENIED
    assert resp.denied_response.status.code == 403
    body = json.loads(resp.denied_response.body)
    assert body["error"]["code"] == "redaction_unavailable"
    assert "project-aurora" not in resp.denied_response.body
    # One record per request: what the client got, naming the rule that asked for redaction.
    [record] = _records_for(server, "az-m")
    assert record["decision"] == "block"
    assert record["error_code"] == "redaction_unavailable"
    assert (record["policy"], record["rule"]) == ("acme_base", "codenames")
    assert record["fired"] == [{"policy": "acme_base", "rule": "codenames", "action": "modify"}]


async def test_jwt_claims_win_over_identity_headers(server: Running) -> None:
    resp = await check(
        server,
        check_request(
            chat_body("hello", model="gpt-4o-mini"),
            request_id="az-jwt",
            headers={"x-user-id": "mallory"},
            claims={"org": "globex", "sub": "alice"},
        ),
    )
    assert resp.denied_response.status.code == 403
    assert json.loads(resp.denied_response.body)["policy"] == "globex_base"
    (record,) = _records_for(server, "az-jwt")
    assert (record["org"], record["user"]) == ("globex", "alice")


async def test_raw_header_map_is_read(server: Running) -> None:
    resp = await check(
        server,
        check_request(chat_body("a confidential plan"), request_id="az-raw", raw_headers=True),
    )
    assert resp.denied_response.status.code == 403
    assert _records_for(server, "az-raw")[0]["org"] == "acme"


async def test_get_without_body_is_allowed(server: Running) -> None:
    resp = await check(
        server, check_request(b"", path="/v1/models", method="GET", request_id="az-get")
    )
    assert resp.status.code == OK


async def test_an_engine_failure_is_a_denied_500_not_an_rpc_error(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(server.sidecar.engine, "decide_request", broken)
    resp = await check(server, check_request(chat_body("hello"), request_id="az-bug"))
    assert resp.status.code == PERMISSION_DENIED
    assert resp.denied_response.status.code == 500
    assert _records_for(server, "az-bug")[0]["error_code"] == "internal_error"


async def test_an_audit_failure_is_a_denied_503_not_an_rpc_error(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise AuditLogError("disk full")

    monkeypatch.setattr(server.sink, "emit", down)
    resp = await check(server, check_request(chat_body("hello"), request_id="az-audit"))
    assert resp.status.code == PERMISSION_DENIED
    assert resp.denied_response.status.code == 503
    assert json.loads(resp.denied_response.body)["error"]["code"] == "audit_unavailable"
    assert "disk full" not in resp.denied_response.body  # the server's detail stays in its log
