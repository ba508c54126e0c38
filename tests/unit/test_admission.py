"""Admission control: the bound on requests in flight, queue age, fail-open routes (pure), and
how the ext_proc machine, the driver and ext_authz answer a shed request (503 overloaded with
retry-after, or let through unchecked), audited."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2

from policy_extproc.audit.sink import RecordingSink
from policy_extproc.enforce import answers, extauthz, translate
from policy_extproc.enforce.admission import Admission, AdmissionSettings, request_time_s
from policy_extproc.enforce.driver import ExtProcStream
from policy_extproc.enforce.engine import Engine
from policy_extproc.enforce.envoy_replies import Continue, Immediate
from policy_extproc.enforce.stream import State
from policy_extproc.enforce.translate import Event
from policy_extproc.errors import Overloaded
from policy_extproc.policy.decision import Decision
from tests.unit.test_stream import chat, make_engine, req_body, req_headers, resp_headers

EMBEDDINGS = "/v1/embeddings"

# -- the pure part --------------------------------------------------------------------------------


def test_the_bound_admits_up_to_max_inflight_then_sheds() -> None:
    adm = Admission(AdmissionSettings(max_inflight=2))
    assert adm.admit("/v1/chat/completions") is None
    assert adm.admit("/v1/chat/completions") is None
    shed = adm.admit("/v1/chat/completions")
    assert isinstance(shed, Overloaded)
    assert (shed.code, shed.http_status, shed.reason, shed.fail_open) == (
        "overloaded",
        503,
        "inflight",
        False,
    )
    assert shed.outcome == "shed"
    assert adm.inflight == 2 and adm.shed == {"inflight": 1, "queue_age": 0}
    adm.release()
    assert adm.admit("/v1/chat/completions") is None


def test_zero_is_unbounded_and_release_never_goes_negative() -> None:
    adm = Admission(AdmissionSettings(max_inflight=0))
    for _ in range(1000):
        assert adm.admit("/") is None
    for _ in range(1001):
        adm.release()
    assert adm.inflight == 0


@pytest.mark.parametrize(
    ("age", "shed"), [(None, False), (0.0, False), (0.25, False), (0.2501, True), (9.0, True)]
)
def test_queue_age_sheds_what_waited_too_long(age: float | None, shed: bool) -> None:
    adm = Admission(AdmissionSettings(max_inflight=0, max_queue_age_s=0.25))
    out = adm.admit("/v1/chat/completions", age)
    assert (out is not None) == shed
    if out is not None:
        assert out.reason == "queue_age" and adm.inflight == 0


def test_queue_age_off_by_default() -> None:
    assert Admission().admit("/", 3600.0) is None


def test_queue_age_needs_envoys_request_time() -> None:
    adm = Admission(AdmissionSettings(max_inflight=1, max_queue_age_s=0.1))
    assert adm.admit("/v1/chat/completions", None) is None  # no request.time: no age to judge
    assert adm.inflight == 1


@pytest.mark.parametrize(
    ("path", "opens"),
    [
        ("/v1/embeddings", True),
        ("/v1/embeddings?x=1", True),
        ("/v1/embeddings/extra", True),  # fnmatch: * matches / too
        ("/openai/deployments/d1/embeddings", True),
        ("/v1/chat/completions", False),
        ("/v1/EMBEDDINGS", False),
        ("", False),
    ],
)
def test_fail_open_routes_are_path_globs(path: str, opens: bool) -> None:
    adm = Admission(
        AdmissionSettings(
            max_inflight=1, fail_open_routes=("/v1/embeddings*", "/openai/*/embeddings")
        )
    )
    assert adm.fails_open(path) is opens
    adm.admit("/other")
    shed = adm.admit(path)
    assert shed is not None and shed.fail_open is opens
    assert shed.outcome == ("shed_fail_open" if opens else "shed")


def test_no_fail_open_route_by_default() -> None:
    assert not Admission().fails_open("/v1/embeddings")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_inflight": -1},
        {"max_queue_age_s": -0.5},
        {"max_queue_age_s": float("nan")},
        {"fail_open_routes": ("v1/embeddings",)},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AdmissionSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-02T14:45:08.839344+00:00", 1796222708.839344),  # as Envoy sends it
        ("2026-12-02T14:45:08.839344Z", 1796222708.839344),
        ("2026-12-02T15:45:08.839344+01:00", 1796222708.839344),
        ("2026-12-02T14:45:08", None),  # no zone: not Envoy's
        ("yesterday", None),
        ("", None),
        (12, None),
    ],
)
def test_request_time_is_envoys_rfc3339(value: object, expected: float | None) -> None:
    got = request_time_s(value)
    assert got == pytest.approx(expected) if expected is not None else got is None


# -- what the client gets -------------------------------------------------------------------------


def test_a_shed_refusal_is_503_with_retry_after_and_an_openai_error() -> None:
    decision = answers.request_error(Overloaded("too many", reason="inflight"))
    reply = answers.refusal(decision, "rid-9")
    headers = dict(reply.headers)
    assert reply.status == 503
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    body = json.loads(reply.body)
    assert body["error"]["code"] == "overloaded"
    assert body["error"]["type"] == "server_error"
    assert body["retry_after"] == 1 and body["request_id"] == "rid-9"
    assert "too many" not in body["error"]["message"]  # a fixed sentence, like other 5xx
    assert reply.details == "policy_extproc_overloaded"


# -- the translation ------------------------------------------------------------------------------


def test_request_time_comes_from_the_ext_proc_attributes() -> None:
    msg = ep.ProcessingRequest()
    msg.request_headers.headers.headers.add(key=":path", raw_value=b"/v1/chat/completions")
    assert translate.event(msg).request_time_s is None
    attrs = struct_pb2.Struct()
    attrs.update({"request.time": "2026-12-02T14:45:08.839344+00:00"})
    msg.attributes[translate.EXT_PROC_FILTER].CopyFrom(attrs)
    assert translate.event(msg).request_time_s == pytest.approx(1796222708.839344)


def test_skip_rest_tells_envoy_to_send_nothing_more() -> None:
    msg = translate.response(Continue(phase="request_headers", skip_rest=True))
    mode = msg.mode_override
    pm = processing_mode_pb2.ProcessingMode
    assert mode.request_body_mode == pm.NONE
    assert mode.response_header_mode == pm.SKIP
    assert mode.response_body_mode == pm.NONE


# -- the ext_proc driver and machine --------------------------------------------------------------


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def engine(sink: RecordingSink) -> Engine:
    return make_engine(sink)


def saturated(engine: Engine, **settings: object) -> tuple[Admission, ExtProcStream]:
    """An admission of one slot, held by a stream that has sent its request headers."""
    adm = Admission(AdmissionSettings(max_inflight=1, **settings))  # type: ignore[arg-type]
    holder = ExtProcStream(engine, admission=adm)
    return adm, holder


async def test_a_request_over_the_bound_is_refused_at_once_and_audited(
    engine: Engine, sink: RecordingSink
) -> None:
    adm, holder = saturated(engine)
    body = chat("hello")
    await holder.handle(req_headers(body, request_id="held"))
    assert adm.inflight == 1 and holder.state is State.BODY
    shed = ExtProcStream(engine, admission=adm)
    reply = await shed.handle(req_headers(body, request_id="shed-1"))
    assert isinstance(reply, Immediate) and reply.status == 503
    assert dict(reply.headers)["retry-after"] == "1"
    assert json.loads(reply.body)["error"]["code"] == "overloaded"
    assert shed.state is State.DONE
    [record] = sink.records
    assert (record.request_id, record.decision, record.error_code, record.outcome) == (
        "shed-1",
        "block",
        "overloaded",
        "shed",
    )
    assert record.org == "acme"  # who asked, from the headers
    shed.close()
    assert adm.inflight == 1  # a shed stream never held a slot
    # The held request is decided: its slot is free for the next one.
    assert isinstance(await holder.handle(req_body(body)), Continue)
    assert adm.inflight == 0 and adm.shed["inflight"] == 1
    nxt = ExtProcStream(engine, admission=adm)
    assert isinstance(await nxt.handle(req_headers(body, request_id="next")), Continue)
    assert adm.inflight == 1


async def test_a_stream_that_ends_before_its_decision_gives_its_slot_back(engine: Engine) -> None:
    adm, holder = saturated(engine)
    await holder.handle(req_headers(chat("hi")))
    assert adm.inflight == 1
    holder.close()
    assert adm.inflight == 0


async def test_a_refusal_on_the_headers_gives_the_slot_back(engine: Engine) -> None:
    adm, holder = saturated(engine)
    reply = await holder.handle(req_headers(chat("hi"), org=""))  # missing identity
    assert isinstance(reply, Immediate) and reply.status == 400
    assert adm.inflight == 0


async def test_a_shed_request_on_a_fail_open_route_goes_through_unchecked(
    engine: Engine, sink: RecordingSink
) -> None:
    adm, holder = saturated(engine, fail_open_routes=(EMBEDDINGS + "*",))
    await holder.handle(req_headers(chat("hi")))
    body = json.dumps({"model": "text-embedding-3-small", "input": "confidential"}).encode()
    s = ExtProcStream(engine, admission=adm)
    headers = req_headers(
        body, path=EMBEDDINGS, request_id="open-1", extra={"x-policy-provider": "evil"}
    )
    reply = await s.handle(headers)
    assert isinstance(reply, Continue) and reply.phase == "request_headers"
    assert reply.skip_rest and not reply.skip_response
    assert reply.remove_headers == ("x-policy-provider",) and reply.clear_route_cache
    assert reply.metadata["decision"] == "allow" and reply.metadata["code"] == "overloaded"
    assert s.state is State.UNCHECKED
    [record] = sink.records
    assert (record.decision, record.error_code, record.outcome) == (
        "allow",
        "overloaded",
        "shed_fail_open",
    )
    # Should Envoy send more anyway, it passes unexamined ("confidential" is blocked if checked).
    assert isinstance(await s.handle(req_body(body)), Continue)
    assert isinstance(await s.handle(resp_headers()), Continue)
    s.close()
    assert s.state is State.DONE and len(sink.records) == 1
    assert adm.inflight == 1


async def test_a_request_that_waited_in_envoy_is_shed_on_its_headers(
    engine: Engine, sink: RecordingSink
) -> None:
    adm = Admission(AdmissionSettings(max_inflight=0, max_queue_age_s=0.2))
    s = ExtProcStream(engine, admission=adm)
    h = req_headers(chat("hi"))
    old = Event(h.phase, h.headers, b"", False, None, time.time() - 5.0)
    reply = await s.handle(old)
    assert isinstance(reply, Immediate) and reply.status == 503
    assert adm.shed["queue_age"] == 1
    assert sink.records[0].outcome == "shed"


async def test_a_slow_upload_is_not_shed_for_queue_age(engine: Engine, sink: RecordingSink) -> None:
    # The headers came at once; the body took the client longer than the queue age to send
    # (at least 0.3 s: a lower bound, whatever the machine's speed). That is not the sidecar
    # being overloaded: the request is decided, not shed.
    adm = Admission(AdmissionSettings(max_inflight=4, max_queue_age_s=0.2))
    s = ExtProcStream(engine, admission=adm)
    body = chat("hello")
    h = req_headers(body)
    await s.handle(Event(h.phase, h.headers, b"", False, None, time.time()))
    assert adm.inflight == 1
    await asyncio.sleep(0.3)  # the upload
    reply = await s.handle(req_body(body))
    assert not isinstance(reply, Immediate)
    assert adm.inflight == 0 and adm.shed["queue_age"] == 0
    [record] = sink.records
    assert record.decision == "allow" and record.outcome != "shed"


async def test_without_admission_nothing_is_shed(engine: Engine) -> None:
    streams = [ExtProcStream(engine) for _ in range(100)]
    for s in streams:
        assert isinstance(await s.handle(req_headers(chat("hi"))), Continue)


# -- ext_authz ------------------------------------------------------------------------------------


def check_request(path: str = "/v1/chat/completions", rid: str = "authz-1") -> auth.CheckRequest:
    req = auth.CheckRequest()
    http = req.attributes.request.http
    http.path, http.method, http.id = path, "POST", rid
    http.headers.update({"x-org-id": "acme", "content-type": "application/json"})
    http.raw_body = chat("hello")
    return req


async def test_ext_authz_sheds_with_503_and_retry_after(
    engine: Engine, sink: RecordingSink
) -> None:
    adm = Admission(AdmissionSettings(max_inflight=1))
    assert adm.admit("/held") is None
    resp = await extauthz.check(engine, check_request(), admission=adm)
    assert resp.denied_response.status.code == 503
    headers = {h.header.key: h.header.raw_value.decode() for h in resp.denied_response.headers}
    assert headers["retry-after"] == "1"
    assert json.loads(resp.denied_response.body)["error"]["code"] == "overloaded"
    assert sink.records[-1].outcome == "shed"
    adm.release()
    resp = await extauthz.check(engine, check_request(rid="authz-2"), admission=adm)
    assert resp.HasField("ok_response") and adm.inflight == 0


async def test_ext_authz_fail_open_route_and_envoys_request_time(
    engine: Engine, sink: RecordingSink
) -> None:
    adm = Admission(
        AdmissionSettings(max_inflight=0, max_queue_age_s=0.2, fail_open_routes=("/v1/*",))
    )
    req = check_request()
    req.attributes.request.time.FromNanoseconds(time.time_ns() - 3 * 10**9)
    resp = await extauthz.check(engine, req, admission=adm)
    assert resp.HasField("ok_response")
    assert (sink.records[-1].decision, sink.records[-1].outcome) == ("allow", "shed_fail_open")
    assert adm.shed["queue_age"] == 1


def test_an_overloaded_decision_names_no_policy() -> None:
    d = answers.request_error(Overloaded("x", reason="inflight"))
    assert d == Decision(action="block", reason="x", code="overloaded", http_status=503)
