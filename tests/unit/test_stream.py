"""The ext_proc stream state machine, driven with decoded events: no gRPC, no protobufs.

An Engine over an in-memory PolicyStore (a Snapshot of the policies below) and a RecordingSink;
each test feeds ``translate.Event`` values and checks the replies, the state and the audit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from policy_extproc.audit.chain import AuditLogError
from policy_extproc.audit.sink import RecordingSink
from policy_extproc.enforce import pipeline as pipeline_module
from policy_extproc.enforce.driver import ExtProcStream
from policy_extproc.enforce.effects import Audit
from policy_extproc.enforce.engine import Engine, EngineConfig
from policy_extproc.enforce.envoy_replies import Continue, Immediate, Reply
from policy_extproc.enforce.stream import (
    TRANSITIONS,
    Closed,
    Decide,
    Decided,
    ExtProcMachine,
    Failed,
    State,
)
from policy_extproc.enforce.translate import Event
from policy_extproc.errors import ProtocolError
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.decision import Decision
from policy_extproc.policy.loader import load_sources
from policy_extproc.sources.catalog import load_catalog
from policy_extproc.sources.store import PolicyStore

CATALOG = load_catalog()  # the packaged catalog, read once as the server's edge does

POLICIES = """
- policy_name: acme_base
  org: acme
  compliance: [SOC2]
  rules:
    - type: content_filter
      id: secrets
      keywords: [confidential]
      action: block
    - type: content_filter
      id: codenames
      keywords: [project-aurora, project-borealis]
      action: redact
- policy_name: globex_base
  org: globex
  rules:
    - type: model_access
      id: models
      models: [claude-3-haiku]
"""

CHAT = "/v1/chat/completions"


# -- fixtures and event builders ------------------------------------------------------------------


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


def make_engine(sink: RecordingSink, **config: Any) -> Engine:
    snapshot = Snapshot(load_sources([("policies.yaml", POLICIES)]))
    return Engine(PolicyStore(snapshot=snapshot), sink, EngineConfig(**config), catalog=CATALOG)


@pytest.fixture
def engine(sink: RecordingSink) -> Engine:
    return make_engine(sink)


@pytest.fixture
def stream(engine: Engine) -> ExtProcStream:
    return ExtProcStream(engine)


def chat(text: str, *, model: str = "gpt-4o-mini", stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def req_headers(
    body: bytes | None = None,
    *,
    path: str = CHAT,
    method: str = "POST",
    request_id: str = "rid-1",
    org: str = "acme",
    extra: Mapping[str, str] | None = None,
    claims: Mapping[str, Any] | None = None,
    eos: bool | None = None,
) -> Event:
    h = {":method": method, ":path": path, "x-request-id": request_id, "x-org-id": org}
    if body is not None:
        h["content-length"] = str(len(body))
    h.update(extra or {})
    return Event("request_headers", h, b"", body is None if eos is None else eos, claims)


def req_body(body: bytes, *, eos: bool = True) -> Event:
    return Event("request_body", {}, body, eos)


def resp_headers(
    status: int = 200, content_type: str = "application/json", *, eos: bool = False
) -> Event:
    return Event(
        "response_headers", {":status": str(status), "content-type": content_type}, b"", eos
    )


def resp_body(body: bytes, *, eos: bool = True) -> Event:
    return Event("response_body", {}, body, eos)


def trailers(phase: str) -> Event:
    return Event(phase, {}, b"", True)  # type: ignore[arg-type]


def as_continue(reply: Reply) -> Continue:
    assert isinstance(reply, Continue), reply
    return reply


def as_immediate(reply: Reply) -> Immediate:
    assert isinstance(reply, Immediate), reply
    return reply


def error(reply: Reply) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(as_immediate(reply).body)
    return data


async def send_request(stream: ExtProcStream, body: bytes, **kw: Any) -> Reply:
    """Request headers then the buffered body; the reply to the body."""
    first = await stream.handle(req_headers(body, **kw))
    assert as_continue(first).phase == "request_headers"
    assert stream.state is State.BODY
    return await stream.handle(req_body(body))


# -- the happy paths ------------------------------------------------------------------------------


async def test_allow_walks_every_state(stream: ExtProcStream, sink: RecordingSink) -> None:
    assert stream.state is State.START
    reply = as_continue(await send_request(stream, chat("hello")))
    assert reply.phase == "request_body"
    assert reply.body is None
    assert reply.set_headers == ()
    assert reply.metadata["decision"] == "allow"
    assert stream.state is State.RESPONSE
    reply = as_continue(await stream.handle(resp_headers()))
    assert reply.phase == "response_headers"
    assert dict(reply.set_headers) == {"x-policy-decision": "allow", "x-request-id": "rid-1"}
    assert reply.response_body_mode is None
    assert reply.remove_headers == ()
    assert stream.state is State.RESPONSE_BODY
    reply = as_continue(await stream.handle(resp_body(b'{"choices": []}')))
    assert reply.phase == "response_body"
    assert stream.state is State.DONE
    (record,) = sink.records
    assert (record.decision, record.request_id, record.org) == ("allow", "rid-1", "acme")
    assert record.compliance == ("SOC2",)
    assert record.phase == "request"
    assert record.policy_version == stream.engine.store.current.version


async def test_usage_of_a_buffered_response_is_a_second_record(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    await send_request(stream, chat("hello"))
    await stream.handle(resp_headers())
    usage = b'{"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 22}}'
    await stream.handle(resp_body(usage))
    first, second = sink.records
    assert second.phase == "response"
    assert second.request_id == first.request_id == "rid-1"
    assert (second.usage.input_tokens, second.usage.output_tokens) == (11, 22)  # type: ignore[union-attr]


async def test_no_usage_record_for_an_error_response(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    await send_request(stream, chat("hello"))
    await stream.handle(resp_headers(503))
    await stream.handle(resp_body(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'))
    assert [r.phase for r in sink.records] == ["request"]


async def test_response_headers_with_end_of_stream_finish_the_exchange(
    stream: ExtProcStream,
) -> None:
    await send_request(stream, chat("hello"))
    reply = as_continue(await stream.handle(resp_headers(204, eos=True)))
    assert dict(reply.set_headers)["x-policy-decision"] == "allow"
    assert stream.state is State.DONE


async def test_block_is_an_immediate_403(stream: ExtProcStream, sink: RecordingSink) -> None:
    reply = as_immediate(await send_request(stream, chat("it is confidential")))
    assert reply.status == 403
    body = json.loads(reply.body)
    assert body["error"]["type"] == "policy_violation"
    assert body["error"]["code"] == "blocked"
    assert body["error"]["message"] == body["reason"]
    assert (body["decision"], body["policy"], body["rule"]) == ("block", "acme_base", "secrets")
    assert body["request_id"] == "rid-1"
    headers = dict(reply.headers)
    assert headers["x-policy-decision"] == "block"
    assert headers["x-request-id"] == "rid-1"
    assert reply.metadata["decision"] == "block"
    assert stream.state is State.DONE
    (record,) = sink.records
    assert (record.decision, record.rule, record.error_code) == ("block", "secrets", None)


async def test_modify_rewrites_the_body_and_fixes_content_length(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    prompt = "Plan project-aurora, then project-borealis."
    reply = as_continue(await send_request(stream, chat(prompt)))
    assert reply.body is not None
    assert dict(reply.set_headers) == {"content-length": str(len(reply.body))}
    assert b"project-aurora" not in reply.body
    assert b"project-borealis" not in reply.body
    sent = json.loads(reply.body)
    assert sent["messages"][0]["content"] == (
        "Plan [REDACTED:codenames], then [REDACTED:codenames]."
    )
    headers = dict(as_continue(await stream.handle(resp_headers())).set_headers)
    assert headers["x-policy-decision"] == "modify"
    assert headers["x-policy-redactions"] == "codenames=2"
    (record,) = sink.records
    assert record.decision == "modify"
    assert dict(record.redactions) == {"codenames": 2}


async def test_get_without_body_is_decided_on_the_headers(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    reply = as_continue(await stream.handle(req_headers(path="/v1/models", method="GET")))
    assert reply.phase == "request_headers"
    assert reply.metadata["decision"] == "allow"
    assert stream.state is State.RESPONSE
    assert sink.records[0].decision == "allow"


async def test_post_without_body_is_malformed(stream: ExtProcStream) -> None:
    reply = await stream.handle(req_headers(eos=True))
    assert as_immediate(reply).status == 400
    assert error(reply)["error"]["code"] == "malformed_body"


@pytest.mark.parametrize("phase", ["request_trailers", "response_trailers"])
async def test_trailers_are_passed_in_any_state(stream: ExtProcStream, phase: str) -> None:
    assert as_continue(await stream.handle(trailers(phase))).phase == phase
    assert stream.state is State.START
    await stream.handle(req_headers(chat("hi")))
    assert as_continue(await stream.handle(trailers(phase))).phase == phase
    assert stream.state is State.BODY


# -- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (CHAT, b"not json at all", 400, "malformed_body"),
        (CHAT, b"\xff\xfe{}", 400, "malformed_body"),
        (CHAT, b'{"model": "x", "messages": "nope"}', 400, "malformed_body"),
        ("/v1/images/generations", b'{"prompt": "a cat"}', 400, "unknown_api"),
    ],
)
async def test_bad_input_is_refused_with_its_code(
    stream: ExtProcStream, sink: RecordingSink, path: str, body: bytes, status: int, code: str
) -> None:
    reply = as_immediate(await send_request(stream, body, path=path))
    assert reply.status == status
    err = json.loads(reply.body)
    assert err["error"]["type"] == "invalid_request_error"
    assert err["error"]["code"] == code
    assert err["decision"] == "block"
    assert stream.state is State.DONE
    (record,) = sink.records
    assert record.error_code == code
    assert record.org == "acme"
    assert record.request_id == "rid-1"


async def test_declared_length_over_the_limit_is_refused_at_the_headers(
    sink: RecordingSink,
) -> None:
    stream = ExtProcStream(make_engine(sink, max_body_bytes=100))
    reply = as_immediate(
        await stream.handle(req_headers(eos=False, extra={"content-length": "101"}))
    )
    assert reply.status == 413
    assert json.loads(reply.body)["error"]["code"] == "body_too_large"
    assert stream.state is State.DONE
    assert sink.records[0].error_code == "body_too_large"


async def test_declared_length_at_the_limit_is_accepted(sink: RecordingSink) -> None:
    body = chat("hi")
    stream = ExtProcStream(make_engine(sink, max_body_bytes=len(body)))
    assert isinstance(await send_request(stream, body), Continue)


async def test_body_over_the_limit_is_refused_when_it_arrives(sink: RecordingSink) -> None:
    stream = ExtProcStream(make_engine(sink, max_body_bytes=50))
    await stream.handle(req_headers(eos=False))  # no content-length: chunked upload
    reply = as_immediate(await stream.handle(req_body(chat("x" * 100))))
    assert reply.status == 413


async def test_partial_body_is_refused_with_413(stream: ExtProcStream, sink: RecordingSink) -> None:
    body = chat("hello")
    await stream.handle(req_headers(body))
    reply = as_immediate(await stream.handle(req_body(body[:10], eos=False)))
    assert reply.status == 413
    assert json.loads(reply.body)["error"]["code"] == "body_too_large"
    assert stream.state is State.DONE
    assert sink.records[-1].error_code == "body_too_large"


# -- protocol errors --------------------------------------------------------------------------


async def _to_state(stream: ExtProcStream, state: State) -> None:
    if state is State.START:
        return
    if state is State.BODY:
        await stream.handle(req_headers(chat("hi")))
    elif state is State.RESPONSE:
        await send_request(stream, chat("hi"))
    elif state is State.RESPONSE_BODY:
        await send_request(stream, chat("hi"))
        await stream.handle(resp_headers())
    elif state is State.DONE:
        await send_request(stream, chat("hi"))
        await stream.handle(resp_headers())
        await stream.handle(resp_body(b"{}"))
    assert stream.state is state


# Every (state, message) pair that the table of stream.py does not allow.
OUT_OF_ORDER = [
    (State.START, req_body(b"{}")),
    (State.BODY, req_headers(chat("again"))),
    (State.RESPONSE, req_headers(chat("again"))),
    (State.RESPONSE, req_body(b"{}")),
    (State.RESPONSE, resp_body(b"{}")),
    (State.RESPONSE_BODY, req_headers(chat("again"))),
    (State.RESPONSE_BODY, req_body(b"{}")),
    (State.RESPONSE_BODY, resp_headers()),
    (State.DONE, req_headers(chat("again"))),
    (State.DONE, resp_body(b"{}")),
    (State.START, Event(None, {}, b"", False)),
    (State.RESPONSE, Event(None, {}, b"", False)),
]


@pytest.mark.parametrize(
    ("state", "event"), OUT_OF_ORDER, ids=[f"{s.value}-{e.phase}" for s, e in OUT_OF_ORDER]
)
async def test_a_message_out_of_order_is_a_deliberate_500(
    stream: ExtProcStream, sink: RecordingSink, state: State, event: Event
) -> None:
    await _to_state(stream, state)
    before = len(sink.records)
    reply = as_immediate(await stream.handle(event))
    assert reply.status == 500
    err = json.loads(reply.body)
    assert err["error"]["code"] == "protocol_error"
    assert err["error"]["type"] == "server_error"
    assert reply.details == "policy_extproc_protocol_error"
    assert stream.state is State.DONE
    assert len(sink.records) == before + 1
    assert sink.records[-1].error_code == "protocol_error"
    if state is not State.START:
        assert sink.records[-1].request_id == "rid-1"


async def test_envoy_local_reply_before_any_request_phase_passes_untouched(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    # jwt_authn's 401 or the health check answer before ext_proc saw the request: Envoy still
    # runs the response side through us. Nothing to decide, nothing to audit.
    reply = await stream.handle(resp_headers())
    assert isinstance(reply, Continue) and reply.phase == "response_headers"
    reply = await stream.handle(resp_body(b'{"code":"invalid_token"}'))
    assert isinstance(reply, Continue) and reply.body is None
    assert sink.records == []


async def test_envoy_local_reply_after_the_request_headers_is_audited(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    # A body over Envoy's buffer limit: Envoy answers 413 itself after the request headers.
    await stream.handle(req_headers(chat("big")))
    headers = Event("response_headers", {":status": "413"}, b"", False)
    reply = await stream.handle(headers)
    assert isinstance(reply, Continue)
    assert sink.records[-1].error_code == "body_too_large"
    assert sink.records[-1].request_id == "rid-1"
    assert isinstance(await stream.handle(resp_body(b"{}")), Continue)


# -- failures inside ---------------------------------------------------------------------------


async def test_an_engine_exception_becomes_a_500_internal_error(
    stream: ExtProcStream, sink: RecordingSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("secret details")

    monkeypatch.setattr(stream.engine, "decide_request", broken)
    reply = as_immediate(await send_request(stream, chat("hello")))
    assert reply.status == 500
    err = json.loads(reply.body)
    assert err["error"]["code"] == "internal_error"
    assert "secret details" not in reply.body.decode()
    assert stream.state is State.DONE
    assert sink.records[-1].error_code == "internal_error"
    assert sink.records[-1].request_id == "rid-1"


async def test_an_audit_failure_still_gets_a_deliberate_answer(
    stream: ExtProcStream, sink: RecordingSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise AuditLogError("disk full")

    monkeypatch.setattr(sink, "emit", down)
    await stream.handle(req_headers(chat("hello")))
    reply = as_immediate(await stream.handle(req_body(chat("hello"))))
    assert reply.status == 503
    assert json.loads(reply.body)["error"]["code"] == "audit_unavailable"
    assert stream.state is State.DONE


async def test_an_audit_failure_at_close_does_not_raise(
    stream: ExtProcStream, sink: RecordingSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    await send_request(stream, chat("hello"))
    await stream.handle(resp_headers())
    await stream.handle(
        resp_body(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 2}}', eos=False)
    )

    def down(*args: object, **kwargs: object) -> None:
        raise AuditLogError("disk full")

    monkeypatch.setattr(sink, "emit", down)
    stream.close()
    assert stream.state is State.DONE


# -- closing early ---------------------------------------------------------------------------


async def test_close_after_request_headers_records_the_abandoned_request(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    # Every request has a record: one whose body never came says so, and that it went nowhere.
    await stream.handle(req_headers(chat("hi")))
    stream.close()
    assert stream.state is State.DONE
    [record] = sink.records
    assert record.outcome == "stream_cancelled" and record.error_code == "stream_cancelled"
    assert record.decision == "block"
    stream.close()
    assert len(sink.records) == 1


async def test_close_mid_response_records_the_usage_seen(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    await send_request(stream, chat("hi"))
    await stream.handle(resp_headers())
    await stream.handle(
        resp_body(b'{"usage": {"prompt_tokens": 4, "completion_tokens": 5}}', eos=False)
    )
    stream.close()
    stream.close()  # idempotent
    assert [r.phase for r in sink.records] == ["request", "response"]


async def test_close_before_anything_is_harmless(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    stream.close()
    assert stream.state is State.DONE
    assert sink.records == []


# -- identity, tracing, privacy ---------------------------------------------------------------


async def test_jwt_claims_win_over_headers(stream: ExtProcStream, sink: RecordingSink) -> None:
    claims = {"org": "globex", "sub": "alice"}
    reply = await send_request(
        stream, chat("hello"), org="acme", extra={"x-user-id": "mallory"}, claims=claims
    )
    assert as_immediate(reply).status == 403  # globex allows claude-3-haiku only
    (record,) = sink.records
    assert (record.org, record.user, record.policy) == ("globex", "alice", "globex_base")


async def test_jwt_claims_name_the_caller_of_an_early_refusal(sink: RecordingSink) -> None:
    stream = ExtProcStream(make_engine(sink, max_body_bytes=10))
    claims = {"org": "globex", "sub": "alice"}
    event = req_headers(
        eos=False, extra={"content-length": "11", "x-user-id": "mallory"}, claims=claims
    )
    assert as_immediate(await stream.handle(event)).status == 413
    (record,) = sink.records
    assert (record.org, record.user) == ("globex", "alice")


async def test_jwt_claims_name_the_caller_of_a_protocol_error(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    claims = {"org": "globex", "sub": "alice"}
    await stream.handle(req_headers(chat("hi"), extra={"x-user-id": "mallory"}, claims=claims))
    await stream.handle(resp_headers())  # out of order: still in BODY
    (record,) = sink.records
    assert (record.org, record.user) == ("globex", "alice")


async def test_traceparent_gives_the_trace_id(stream: ExtProcStream, sink: RecordingSink) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await send_request(stream, chat("hi"), extra={"traceparent": tp, "tracestate": "k=v"})
    assert sink.records[0].trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert sink.emitted[0].trace_context == {"traceparent": tp, "tracestate": "k=v"}


async def test_no_trace_context_without_traceparent(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    await send_request(stream, chat("hi"))
    assert sink.records[0].trace_id is None
    assert sink.emitted[0].trace_context is None


@pytest.mark.parametrize(
    "prompt",
    [
        "A perfectly harmless question about Zanzibar tides",
        "Our confidential Zanzibar acquisition terms",
        "Move project-aurora to the Zanzibar data centre",
    ],
)
async def test_no_prompt_text_in_any_record(
    stream: ExtProcStream, sink: RecordingSink, prompt: str
) -> None:
    await send_request(stream, chat(prompt))
    if stream.state is State.RESPONSE:
        await stream.handle(resp_headers())
        await stream.handle(resp_body(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'))
    dump = json.dumps([r.to_dict() for r in sink.records])
    assert sink.records
    assert prompt not in dump
    assert "Zanzibar" not in dump


# -- streaming responses ------------------------------------------------------------------------


def sse(*payloads: object) -> list[bytes]:
    return [f"data: {json.dumps(p)}\n\n".encode() for p in payloads] + [b"data: [DONE]\n\n"]


async def test_sse_response_is_streamed_and_usage_lands_in_a_second_record(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    await send_request(stream, chat("hi", stream=True))
    reply = as_continue(await stream.handle(resp_headers(content_type="text/event-stream")))
    assert reply.response_body_mode == "STREAMED"
    assert reply.remove_headers == ("content-length",)
    assert dict(reply.set_headers)["x-policy-decision"] == "allow"
    chunks = sse(
        {"choices": [{"delta": {"content": "Hel"}}], "usage": None},
        {"choices": [{"delta": {"content": "lo"}}], "usage": None},
        {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 2}},
    )
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        reply = as_continue(await stream.handle(resp_body(chunk, eos=last)))
        assert reply.phase == "response_body"
        assert reply.body is None
        assert stream.state is (State.DONE if last else State.RESPONSE_BODY)
    first, second = sink.records
    assert (first.phase, second.phase) == ("request", "response")
    assert second.request_id == "rid-1"
    assert second.usage is not None
    assert (second.usage.input_tokens, second.usage.output_tokens) == (8, 2)


async def test_sse_usage_in_an_unterminated_last_event_counts(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    await send_request(stream, chat("hi", stream=True))
    await stream.handle(resp_headers(content_type="text/event-stream"))
    last = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    await stream.handle(resp_body(last, eos=True))  # no blank line after it
    usage = sink.records[-1].usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (3, 4)


async def test_a_streamed_anthropic_response_reports_usage(
    stream: ExtProcStream, sink: RecordingSink
) -> None:
    body = json.dumps(
        {"model": "claude-3-haiku", "max_tokens": 10, "stream": True,
         "messages": [{"role": "user", "content": "hi"}]}
    ).encode()  # fmt: skip
    await send_request(stream, body, path="/v1/messages")
    await stream.handle(resp_headers(content_type="text/event-stream"))
    events = [
        b'event: message_start\ndata: {"type": "message_start", "message": '
        b'{"usage": {"input_tokens": 25, "output_tokens": 1}}}\n\n',
        b'event: message_delta\ndata: {"type": "message_delta", '
        b'"usage": {"output_tokens": 15}}\n\n',
        b'event: message_stop\ndata: {"type": "message_stop"}\n\n',
    ]
    for i, e in enumerate(events):
        await stream.handle(resp_body(e, eos=i == len(events) - 1))
    usage = sink.records[-1].usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (25, 15)


# -- reroute -----------------------------------------------------------------------------------


async def test_reroute_sets_the_provider_clears_the_route_cache_and_maps_the_model(
    stream: ExtProcStream, sink: RecordingSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decide = pipeline_module.decide

    def rerouted(*args: Any, **kwargs: Any) -> Decision:
        from dataclasses import replace

        return replace(
            real_decide(*args, **kwargs), reroute="anthropic", reroute_model="claude-3-haiku"
        )

    monkeypatch.setattr(pipeline_module, "decide", rerouted)
    reply = as_continue(await send_request(stream, chat("hello", model="gpt-4o-mini")))
    assert reply.clear_route_cache is True
    headers = dict(reply.set_headers)
    assert headers["x-policy-provider"] == "anthropic"
    assert reply.body is not None
    assert headers["content-length"] == str(len(reply.body))
    assert json.loads(reply.body)["model"] == "claude-3-haiku"
    assert reply.metadata["reroute"] == "anthropic"
    resp = dict(as_continue(await stream.handle(resp_headers())).set_headers)
    assert resp["x-policy-provider"] == "anthropic"
    assert sink.records[0].provider == "anthropic"


# -- stateful limits (the engine's in-memory state) -----------------------------------------------

LIMITS = """
policy_name: limits
org: acme
rules:
  - type: rate_limit
    id: per-user-daily
    per: user
    requests: 2
    window: day
"""


def limited_engine(sink: RecordingSink) -> Engine:
    snapshot = Snapshot(load_sources([("limits.yaml", LIMITS)]))
    return Engine(PolicyStore(snapshot=snapshot), sink, catalog=CATALOG)


async def test_a_rate_limit_throttles_with_a_429_and_its_headers(sink: RecordingSink) -> None:
    engine = limited_engine(sink)
    replies = []
    for i in range(3):
        stream = ExtProcStream(engine)
        replies.append(
            await send_request(stream, chat("hi"), request_id=f"rl-{i}", extra={"x-user-id": "u1"})
        )
    assert [type(r) for r in replies] == [Continue, Continue, Immediate]
    reply = as_immediate(replies[2])
    assert reply.status == 429
    headers = dict(reply.headers)
    assert headers["x-policy-decision"] == "throttle"
    assert headers["x-ratelimit-limit"] == "2"
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["retry-after"]) >= 1
    assert int(headers["x-ratelimit-reset"]) >= 1
    body = json.loads(reply.body)
    assert body["error"]["code"] == "rate_limited"
    assert (body["decision"], body["policy"], body["rule"]) == (
        "throttle",
        "limits",
        "per-user-daily",
    )
    assert body["retry_after"] == int(headers["retry-after"])
    assert [r.decision for r in sink.records] == ["allow", "allow", "throttle"]
    # Another user has a budget of its own.
    other = await send_request(
        ExtProcStream(engine), chat("hi"), request_id="rl-x", extra={"x-user-id": "u2"}
    )
    assert isinstance(other, Continue)


async def test_a_limit_per_user_without_a_user_is_a_400(sink: RecordingSink) -> None:
    reply = as_immediate(await send_request(ExtProcStream(limited_engine(sink)), chat("hi")))
    assert reply.status == 400
    assert json.loads(reply.body)["error"]["code"] == "missing_identity"
    assert sink.records[-1].error_code == "missing_identity"


async def test_a_jwt_subject_counts_as_the_user_of_a_limit(sink: RecordingSink) -> None:
    engine = limited_engine(sink)
    codes = []
    for i in range(3):
        # A client rotating x-user-id cannot escape the limit of its verified subject.
        reply = await send_request(
            ExtProcStream(engine),
            chat("hi"),
            request_id=f"rl-j{i}",
            extra={"x-user-id": f"rotating-{i}"},
            claims={"org": "acme", "sub": "alice"},
        )
        codes.append(reply.status if isinstance(reply, Immediate) else 200)
    assert codes == [200, 200, 429]


async def test_response_phases_are_skipped_only_when_no_rule_reads_them(
    sink: RecordingSink, engine: Engine
) -> None:
    plain = as_continue(await ExtProcStream(engine).handle(req_headers(chat("hi"))))
    assert plain.skip_response is True  # acme's rules read the request only
    limited = ExtProcStream(limited_engine(sink))
    counted = as_continue(await limited.handle(req_headers(chat("hi"), extra={"x-user-id": "u"})))
    assert counted.skip_response is True  # a request count is final once admitted
    tokens = "{type: rate_limit, id: t, per: user, tokens: 1000, window: minute}"
    policy = f"policy_name: p\norg: acme\nrules:\n  - {tokens}\n"
    engine = Engine(
        PolicyStore(snapshot=Snapshot(load_sources([("t.yaml", policy)]))), sink, catalog=CATALOG
    )
    metered = ExtProcStream(engine)
    reply = as_continue(await metered.handle(req_headers(chat("hi"), extra={"x-user-id": "u"})))
    assert reply.skip_response is False  # a token limit settles on the response's usage


async def test_spoofed_policy_headers_are_removed_from_the_request(stream: ExtProcStream) -> None:
    reply = as_continue(
        await stream.handle(
            req_headers(chat("hi"), extra={"x-policy-provider": "cheap", "x-policy-decision": "x"})
        )
    )
    assert set(reply.remove_headers) == {"x-policy-provider", "x-policy-decision"}
    assert reply.clear_route_cache is True  # the route picked with the spoofed header is forgotten


async def test_spoofed_policy_headers_are_removed_from_a_request_without_body(
    stream: ExtProcStream,
) -> None:
    event = req_headers(path="/v1/models", method="GET", extra={"x-policy-provider": "cheap"})
    reply = as_continue(await stream.handle(event))
    assert reply.metadata["decision"] == "allow"
    assert "x-policy-provider" in reply.remove_headers
    assert reply.clear_route_cache is True


async def test_a_reroute_is_not_undone_by_the_spoofed_header_removal(
    stream: ExtProcStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decide = pipeline_module.decide

    def rerouted(*args: Any, **kwargs: Any) -> Decision:
        from dataclasses import replace

        return replace(real_decide(*args, **kwargs), reroute="anthropic")

    monkeypatch.setattr(pipeline_module, "decide", rerouted)
    event = req_headers(path="/v1/models", method="GET", extra={"x-policy-provider": "cheap"})
    reply = as_continue(await stream.handle(event))
    assert dict(reply.set_headers)["x-policy-provider"] == "anthropic"
    assert "x-policy-provider" not in reply.remove_headers


# -- PII --------------------------------------------------------------------------------------

PRIVACY = """
policy_name: privacy
org: acme
rules:
  - type: pii
    entities: [EMAIL, US_SSN]
"""


async def test_pii_is_masked_counted_and_never_recorded(sink: RecordingSink) -> None:
    snapshot = Snapshot(load_sources([("privacy.yaml", PRIVACY)]))
    stream = ExtProcStream(Engine(PolicyStore(snapshot=snapshot), sink, catalog=CATALOG))
    prompt = "Mail bob@example.com and ann@example.org about SSN 123-45-6789"
    reply = as_continue(await send_request(stream, chat(prompt)))
    assert reply.body is not None
    assert dict(reply.set_headers)["content-length"] == str(len(reply.body))
    sent = json.loads(reply.body)["messages"][0]["content"]
    assert sent == "Mail [EMAIL] and [EMAIL] about SSN [US_SSN]"
    headers = dict(as_continue(await stream.handle(resp_headers())).set_headers)
    assert headers["x-policy-redactions"] == "EMAIL=2,US_SSN=1"
    (record,) = sink.records
    assert dict(record.redactions) == {"EMAIL": 2, "US_SSN": 1}
    dump = json.dumps(record.to_dict())
    for value in ("bob@example.com", "ann@example.org", "123-45-6789"):
        assert value not in dump


async def test_a_request_is_decided_on_the_snapshot_in_force_at_its_headers(
    sink: RecordingSink,
) -> None:
    def snapshot(action: str) -> Snapshot:
        rule = f"{{type: content_filter, id: words, keywords: [memo], action: {action}}}"
        return Snapshot(load_sources([("p.yaml", f"policy_name: p\norg: acme\nrules: [{rule}]\n")]))

    store = PolicyStore(snapshot=snapshot("redact"))
    before = store.current.version
    stream = ExtProcStream(Engine(store, sink, catalog=CATALOG))
    as_continue(await stream.handle(req_headers(chat("a memo"))))
    store.swap(snapshot("block"))  # between the headers and the body
    reply = as_continue(await stream.handle(req_body(chat("a memo"))))
    assert reply.metadata["decision"] == "modify"
    assert sink.records[-1].policy_version == before
    # The next request starts on the new set.
    assert (
        as_immediate(
            await send_request(ExtProcStream(Engine(store, sink, catalog=CATALOG)), chat("memo"))
        ).status
        == 403
    )


# -- the machine itself: sync, no driver, no event loop -------------------------------------------


def test_the_machine_asks_for_the_decision_and_answers_what_it_is_fed(engine: Engine) -> None:
    """``receive`` never decides a request itself: it returns ``Decide``, and the reply
    follows from the ``Decided`` it is fed back (a block here, whatever the body said)."""
    m = ExtProcMachine(engine)
    body = chat("hello")
    assert as_continue(m.receive(req_headers(body))).phase == "request_headers"  # type: ignore[arg-type]
    action = m.receive(req_body(body))
    assert action == Decide(body, complete=True)
    assert m.state is State.DECIDING
    refused = Decision(action="block", reason="fed", code="blocked", http_status=403)
    reply = as_immediate(m.receive(Decided(refused, None)))  # type: ignore[arg-type]
    assert reply.status == 403
    assert m.state is State.DONE


def test_a_body_less_request_is_decided_on_its_headers(engine: Engine) -> None:
    m = ExtProcMachine(engine)
    action = m.receive(req_headers(path="/v1/models", method="GET"))
    assert action == Decide(b"", complete=True)
    reply = as_continue(m.receive(Decided(Decision(action="allow"), None)))  # type: ignore[arg-type]
    assert reply.phase == "request_headers"
    assert m.state is State.RESPONSE


def test_closed_while_deciding_past_the_deadline_is_envoy_gave_up(
    engine: Engine, sink: RecordingSink
) -> None:
    m = ExtProcMachine(engine)
    m.receive(req_headers(chat("hi")), received_ns=1_000)
    m.receive(req_body(chat("hi")), received_ns=2_000)
    assert m.state is State.DECIDING
    assert m.receive(Closed(now_ns=10**18)) is None
    assert m.state is State.DONE
    # The machine asks for the record; it writes nothing itself.
    [audit] = m.effects()
    assert isinstance(audit, Audit)
    assert audit.record.error_code == "envoy_gave_up"
    assert sink.records == []
    assert m.effects() == []  # taken once


def test_closed_while_deciding_in_time_is_a_cancelled_stream(
    engine: Engine, sink: RecordingSink
) -> None:
    m = ExtProcMachine(engine)
    m.receive(req_headers(chat("hi")), received_ns=1_000)
    m.receive(req_body(chat("hi")), received_ns=2_000)
    m.receive(Closed(now_ns=3_000))
    [audit] = m.effects()
    assert isinstance(audit, Audit)
    assert audit.record.error_code == "stream_cancelled"


def test_a_decision_nobody_asked_for_is_a_protocol_error(engine: Engine) -> None:
    m = ExtProcMachine(engine)
    with pytest.raises(ProtocolError):
        m.receive(Decided(Decision(action="allow"), None))
    assert m.state is State.START  # a refused event changes nothing; ``Failed`` ends it
    as_immediate(m.receive(Failed(ProtocolError("x"))))  # type: ignore[arg-type]
    assert m.state is State.DONE


def test_every_row_of_the_table_leads_only_where_it_says() -> None:
    """The table is the protocol: each pair of the docstring's drawing is a row, and no row
    leads from DONE anywhere but DONE."""
    rows = {(s.value, k) for s, k in TRANSITIONS}
    for row in [
        ("start", "request_headers"),
        ("body", "request_body"),
        ("deciding", "decided"),
        ("response", "response_headers"),
        ("response_body", "response_body"),
    ]:
        assert row in rows
    for (state, kind), (_, allowed) in TRANSITIONS.items():
        if state is State.DONE:
            assert allowed == frozenset({State.DONE}), kind
    assert ("done", "request_headers") not in rows
    assert ("deciding", "request_body") not in rows


def test_the_state_is_set_in_one_place() -> None:
    """STYLE.md: the state is set nowhere but ``_step`` (and its start in ``__init__``)."""
    import ast
    import inspect

    from policy_extproc.enforce import stream as stream_module

    tree = ast.parse(inspect.getsource(stream_module))
    setters = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr == "state":
                    setters.append(fn.name)
    assert sorted(setters) == ["__init__", "_step"]


async def test_records_are_effects_the_driver_performs(engine: Engine, sink: RecordingSink) -> None:
    """Driven by hand (the ``Decide`` done by the engine, as the driver does), nothing is
    written: each record is an ``Audit`` effect, the request's then the response's."""
    m = ExtProcMachine(engine)
    body = chat("hello")
    m.receive(req_headers(body))
    action = m.receive(req_body(body))
    assert isinstance(action, Decide) and m.exchange is not None
    decision, new_body = await engine.decide_request(m.exchange, action.body, complete=True)
    assert decision.action == "allow", decision
    m.receive(Decided(decision, new_body))
    m.receive(resp_headers())
    usage = b'{"usage": {"prompt_tokens": 3, "completion_tokens": 2}}'
    as_continue(m.receive(resp_body(usage)))  # type: ignore[arg-type]
    assert m.state is State.DONE
    request, response = m.effects()
    assert isinstance(request, Audit) and isinstance(response, Audit)
    assert (request.record.phase, request.record.decision) == ("request", "allow")
    assert response.record.phase == "response"
    assert response.record.usage is not None
    assert (response.record.usage.input_tokens, response.record.usage.output_tokens) == (3, 2)
    assert sink.records == []
    engine.perform([request, response])
    assert sink.records == [request.record, response.record]
