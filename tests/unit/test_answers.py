"""Decision -> reply (responses) -> ProcessingResponse (translate), and messages -> events.

Decisions are built here by hand, so every shape a client can see is covered, including those
the engine does not produce yet (throttle, escalate, reroute).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2

from policy_extproc.enforce import answers, translate
from policy_extproc.enforce.envoy_replies import Continue, Immediate
from policy_extproc.errors import BodyTooLarge, MalformedBody, ProtocolError, UnknownApi
from policy_extproc.policy.decision import Decision, Fired, Throttle, combine

STREAMED = processing_mode_pb2.ProcessingMode.STREAMED


def set_headers(mutation: ep.HeaderMutation) -> dict[str, str]:
    """The set headers of a mutation, checking Envoy's rule: raw_value only, never both."""
    out = {}
    for option in mutation.set_headers:
        assert option.header.value == ""
        assert option.header.raw_value
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        out[option.header.key] = option.header.raw_value.decode()
    return out


def ours(msg: ep.ProcessingResponse) -> dict[str, Any]:
    """Our namespace of the dynamic metadata, and nothing else in it."""
    assert list(msg.dynamic_metadata.fields) == ["policy_extproc"]
    value: dict[str, Any] = dict(msg.dynamic_metadata.fields["policy_extproc"].struct_value.items())
    return value


def block(**kw: Any) -> Decision:
    fired = Fired("acme_base", "secrets", "content_filter", "block", "prompt matches 'x'")
    return combine([fired], **kw)


# -- continue --------------------------------------------------------------------------------


def test_header_values_travel_in_raw_value_only() -> None:
    reply = Continue(phase="request_headers", set_headers=(("x-a", "1"), ("x-b", "é")))
    msg = translate.response(reply)
    headers = set_headers(msg.request_headers.response.header_mutation)
    assert headers == {"x-a": "1", "x-b": "é"}
    raw = msg.request_headers.response.header_mutation.set_headers[1].header.raw_value
    assert raw == "é".encode()


def test_a_plain_continue_is_an_empty_common_response() -> None:
    msg = translate.response(Continue(phase="request_body"))
    assert msg.WhichOneof("response") == "request_body"
    assert msg.request_body.response == ep.CommonResponse()
    assert not msg.HasField("mode_override")
    assert not msg.HasField("dynamic_metadata")


@pytest.mark.parametrize(
    "phase", ["request_headers", "request_body", "response_headers", "response_body"]
)
def test_each_phase_answers_in_its_own_field(phase: str) -> None:
    msg = translate.response(Continue(phase=phase, set_headers=(("x", "y"),)))  # type: ignore[arg-type]
    assert msg.WhichOneof("response") == phase
    assert set_headers(getattr(msg, phase).response.header_mutation) == {"x": "y"}


@pytest.mark.parametrize("phase", ["request_trailers", "response_trailers"])
def test_trailers_are_answered_empty(phase: str) -> None:
    msg = translate.response(Continue(phase=phase))  # type: ignore[arg-type]
    assert msg.WhichOneof("response") == phase


def test_a_body_mutation_comes_with_its_content_length() -> None:
    new_body = '{"messages":[{"role":"user","content":"café [REDACTED:x]"}]}'.encode()
    decision = Decision(action="modify", redactions={"x": 1})
    reply = answers.proceed(decision, "rid", new_body=new_body)
    msg = translate.response(reply)
    common = msg.request_body.response
    assert common.body_mutation.body == new_body
    assert set_headers(common.header_mutation)["content-length"] == str(len(new_body))
    assert len(new_body) != len(new_body.decode())  # bytes, not characters


def test_no_body_no_content_length() -> None:
    reply = answers.proceed(combine([]), "rid", new_body=None)
    msg = translate.response(reply)
    assert not msg.request_body.response.HasField("body_mutation")
    assert not msg.request_body.response.HasField("header_mutation")
    assert msg.request_body.response.clear_route_cache is False


def test_reroute_clears_the_route_cache_in_the_same_common_response() -> None:
    decision = Decision(action="allow", reroute="anthropic", reroute_model="claude-3-haiku")
    body = b'{"model":"claude-3-haiku"}'
    msg = translate.response(answers.proceed(decision, "rid", new_body=body))
    common = msg.request_body.response
    assert common.clear_route_cache is True
    headers = set_headers(common.header_mutation)
    assert headers["x-policy-provider"] == "anthropic"
    assert headers["content-length"] == str(len(body))
    assert ours(msg)["reroute"] == "anthropic"


def test_reroute_on_request_headers_phase() -> None:
    decision = Decision(action="allow", reroute="azure-openai")
    msg = translate.response(
        answers.proceed(decision, "rid", new_body=None, phase="request_headers")
    )
    common = msg.request_headers.response
    assert common.clear_route_cache is True
    assert set_headers(common.header_mutation) == {"x-policy-provider": "azure-openai"}


def test_decision_goes_back_as_dynamic_metadata() -> None:
    decision = combine(
        [Fired("acme_base", "codenames", "content_filter", "modify", "redacted")],
        redactions={"codenames": 1},
    )
    msg = translate.response(answers.proceed(decision, "rid-9", new_body=b"{}", version="v1"))
    assert ours(msg) == {
        "decision": "modify",
        "request_id": "rid-9",
        "policy": "acme_base",
        "rule": "codenames",
        "redactions": "codenames=1",
        "policy_version": "v1",
    }


def test_log_mode_metadata_says_what_would_have_been_decided() -> None:
    decision = combine(
        [Fired("shadow", "secrets", "content_filter", "block", "would block", mode="log")]
    )
    md = answers.metadata(decision, "rid")
    assert md["decision"] == "allow"
    assert md["would_decide"] == "block"


# -- response headers ------------------------------------------------------------------------


def test_response_headers_carry_decision_request_id_and_redactions() -> None:
    decision = Decision(action="modify", redactions={"EMAIL": 2, "US_SSN": 1})
    reply = answers.response_headers(decision, "rid-7", body_mode=None, drop_length=False)
    msg = translate.response(reply)
    assert msg.WhichOneof("response") == "response_headers"
    headers = set_headers(msg.response_headers.response.header_mutation)
    assert headers == {
        "x-policy-decision": "modify",
        "x-request-id": "rid-7",
        "x-policy-redactions": "EMAIL=2,US_SSN=1",
    }
    assert not msg.HasField("mode_override")
    assert list(msg.response_headers.response.header_mutation.remove_headers) == []


def test_sse_response_switches_to_streamed_and_drops_content_length() -> None:
    reply = answers.response_headers(
        Decision(action="allow"), "rid", body_mode="STREAMED", drop_length=True
    )
    msg = translate.response(reply)
    assert msg.HasField("mode_override")
    assert msg.mode_override.response_body_mode == STREAMED
    mutation = msg.response_headers.response.header_mutation
    assert list(mutation.remove_headers) == ["content-length"]
    assert "content-length" not in set_headers(mutation)


def test_reroute_is_named_on_the_response_too() -> None:
    reply = answers.response_headers(
        Decision(action="allow", reroute="anthropic"), "rid", body_mode=None, drop_length=False
    )
    assert dict(reply.set_headers)["x-policy-provider"] == "anthropic"


# -- refusals --------------------------------------------------------------------------------


def test_block_is_a_403_in_openai_error_shape_with_the_decision_fields() -> None:
    reply = answers.refusal(block(), "rid-b", "v3")
    assert reply.status == 403
    assert json.loads(reply.body) == {
        "error": {"type": "policy_violation", "code": "blocked", "message": "prompt matches 'x'"},
        "decision": "block",
        "policy": "acme_base",
        "rule": "secrets",
        "reason": "prompt matches 'x'",
        "request_id": "rid-b",
    }
    msg = translate.response(reply)
    imm = msg.immediate_response
    assert imm.status.code == 403
    assert json.loads(imm.body)["decision"] == "block"
    assert imm.details == "policy_extproc_blocked"
    assert set_headers(imm.headers) == {
        "content-type": "application/json",
        "x-policy-decision": "block",
        "x-request-id": "rid-b",
    }
    assert ours(msg)["decision"] == "block"
    assert ours(msg)["policy_version"] == "v3"


def test_throttle_is_a_429_with_rate_limit_headers() -> None:
    decision = Decision(
        action="throttle",
        reason="60 requests per minute",
        policy="acme_base",
        rule="rpm",
        code="rate_limited",
        http_status=429,
        throttle=Throttle(limit=60, remaining=0, reset_s=12.2, retry_after_s=2.5),
    )
    reply = answers.refusal(decision, "rid-t")
    assert reply.status == 429
    headers = dict(reply.headers)
    assert headers["retry-after"] == "3"
    assert headers["x-ratelimit-limit"] == "60"
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["x-ratelimit-reset"] == "13"
    assert headers["x-policy-decision"] == "throttle"
    body = json.loads(reply.body)
    assert body["error"]["code"] == "rate_limited"
    assert body["decision"] == "throttle"
    assert body["retry_after"] == 3  # whole seconds, as in the header
    imm = translate.response(reply).immediate_response
    assert imm.status.code == 429
    assert set_headers(imm.headers)["retry-after"] == "3"


def test_throttle_figures_are_clamped() -> None:
    decision = Decision(
        action="throttle",
        http_status=429,
        throttle=Throttle(limit=10, remaining=-3, reset_s=-1.0, retry_after_s=0.01),
    )
    headers = dict(answers.refusal(decision, "rid").headers)
    assert headers["retry-after"] == "1"  # never "0": that invites an immediate retry
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["x-ratelimit-reset"] == "0"


def test_a_budget_throttle_says_budget_exceeded() -> None:
    decision = Decision(
        action="throttle",
        http_status=429,
        throttle=Throttle(10, 0, 3600, 3600, code="budget_exceeded"),
    )
    reply = answers.refusal(decision, "rid")
    assert json.loads(reply.body)["error"]["code"] == "budget_exceeded"
    assert reply.details == "policy_extproc_budget_exceeded"


def test_a_hand_built_refusal_gets_the_status_and_code_of_its_action() -> None:
    # Decision's default http_status is 200: a refusal must never go out as a success.
    throttle = answers.refusal(Decision(action="throttle", throttle=Throttle(5, 0, 30, 30)), "rid")
    assert throttle.status == 429
    assert json.loads(throttle.body)["error"]["code"] == "rate_limited"
    blocked = answers.refusal(Decision(action="block", reason="no"), "rid")
    assert blocked.status == 403
    assert json.loads(blocked.body)["error"]["code"] == "blocked"
    escalate = answers.refusal(Decision(action="escalate", approval_id="apr-1"), "rid")
    assert escalate.status == 403
    assert json.loads(escalate.body)["error"]["code"] == "approval_required"


def test_escalate_is_a_403_approval_required_with_the_approval_id() -> None:
    decision = Decision(
        action="escalate",
        reason="model o1 needs approval",
        policy="acme_base",
        rule="approvals",
        code="approval_required",
        http_status=403,
        approval_id="apr-42",
    )
    reply = answers.refusal(decision, "rid-e")
    assert reply.status == 403
    body = json.loads(reply.body)
    assert body["error"]["code"] == "approval_required"
    assert body["error"]["type"] == "policy_violation"
    assert body["approval_id"] == "apr-42"
    assert body["decision"] == "escalate"
    assert dict(reply.headers)["x-policy-decision"] == "escalate"
    assert "retry-after" not in dict(reply.headers)


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (MalformedBody("body is not JSON"), 400, "invalid_request_error"),
        (UnknownApi("unknown path"), 400, "invalid_request_error"),
        (BodyTooLarge("too big"), 413, "invalid_request_error"),
        (ProtocolError("out of order"), 500, "server_error"),
    ],
)
def test_request_errors_keep_their_status_and_code(exc: Any, status: int, kind: str) -> None:
    decision = answers.request_error(exc)
    reply = answers.refusal(decision, "rid-x")
    assert reply.status == status
    body = json.loads(reply.body)
    # A 4xx says what was wrong with the request; a 5xx (ours) says only what happened.
    message = exc.message if status < 500 else answers.public_reason(decision)
    assert body["error"] == {"type": kind, "code": exc.code, "message": message}
    assert body["decision"] == "block"
    assert body["request_id"] == "rid-x"
    assert reply.details == f"policy_extproc_{exc.code}"
    assert translate.response(reply).immediate_response.status.code == status


def test_non_ascii_reason_is_utf8_json() -> None:
    reply = answers.refusal(Decision(action="block", reason="modèle refusé"), "rid")
    assert json.loads(reply.body.decode("utf-8"))["reason"] == "modèle refusé"


def test_immediate_without_metadata_has_no_dynamic_metadata() -> None:
    msg = translate.response(Immediate(status=500, body=b"{}"))
    assert msg.immediate_response.status.code == 500
    assert not msg.HasField("dynamic_metadata")


# -- decoding ------------------------------------------------------------------------------


def _headers_msg(*pairs: tuple[str, str, bool], eos: bool = False) -> ep.ProcessingRequest:
    """Headers with the value in raw_value (raw True) or in the older value field."""
    values = [
        base_pb2.HeaderValue(key=k, raw_value=v.encode())
        if raw
        else base_pb2.HeaderValue(key=k, value=v)
        for k, v, raw in pairs
    ]
    headers = ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=values), end_of_stream=eos)
    return ep.ProcessingRequest(request_headers=headers)


def test_event_reads_raw_value_and_value_and_folds_repeats() -> None:
    msg = _headers_msg(
        (":path", "/v1/chat/completions", True),
        ("X-Org-Id", "acme", False),
        ("x-request-tags", "a=1", True),
        ("x-request-tags", "b=2", True),
        eos=True,
    )
    ev = translate.event(msg)
    assert ev.phase == "request_headers"
    assert ev.end_of_stream is True
    assert ev.headers == {
        ":path": "/v1/chat/completions",
        "x-org-id": "acme",
        "x-request-tags": "a=1,b=2",
    }
    assert ev.claims is None


def test_event_decodes_bodies_and_trailers() -> None:
    ev = translate.event(
        ep.ProcessingRequest(response_body=ep.HttpBody(body=b"abc", end_of_stream=False))
    )
    assert (ev.phase, ev.body, ev.end_of_stream) == ("response_body", b"abc", False)
    ev = translate.event(ep.ProcessingRequest(request_trailers=ep.HttpTrailers()))
    assert ev.phase == "request_trailers"
    assert translate.event(ep.ProcessingRequest()).phase is None


def _with_jwt(content: dict[str, Any]) -> ep.ProcessingRequest:
    msg = _headers_msg((":path", "/", True))
    s = struct_pb2.Struct()
    s.update(content)
    msg.metadata_context.filter_metadata[translate.JWT_NAMESPACE].CopyFrom(s)
    return msg


def test_event_reads_jwt_claims_from_metadata_context() -> None:
    ev = translate.event(_with_jwt({"jwt_payload": {"org": "globex", "sub": "alice"}}))
    assert ev.claims == {"org": "globex", "sub": "alice"}


def test_event_takes_claims_under_another_payload_key() -> None:
    ev = translate.event(_with_jwt({"my_payload": {"org": "globex"}}))
    assert ev.claims == {"org": "globex"}


def test_other_metadata_namespaces_are_no_claims() -> None:
    msg = _headers_msg((":path", "/", True))
    s = struct_pb2.Struct()
    s.update({"jwt_payload": {"org": "evil"}})
    msg.metadata_context.filter_metadata["some.other.filter"].CopyFrom(s)
    assert translate.event(msg).claims is None


def test_the_jwt_header_beside_the_payload_is_not_taken_for_claims() -> None:
    ev = translate.event(
        _with_jwt(
            {
                "a_header": {"alg": "RS256", "kid": "k1", "typ": "JWT"},
                "z_claims": {"iss": "https://idp", "sub": "alice", "org": "globex"},
            }
        )
    )
    assert ev.claims == {"iss": "https://idp", "sub": "alice", "org": "globex"}
