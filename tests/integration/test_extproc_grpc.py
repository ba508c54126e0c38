"""The ext_proc service over real gRPC: an in-process sidecar on port 0, Envoy played by a client.

Each test plays whole streams as Envoy would (one message, one answer, in order) and checks
both what the client would see and what the audit (a RecordingSink) kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest

from policy_extproc.audit.chain import AuditLogError
from policy_extproc.enforce.engine import DEFAULT_MAX_BODY, Engine
from tests.integration.helpers import (
    Exchange,
    Running,
    Sidecars,
    chat_body,
    common,
    full_exchange,
    full_request,
    immediate_json,
    metadata,
    mutation_headers,
    request_body,
    request_headers,
    response_body,
    response_headers,
    run_exchange,
    running_sidecar,
    wait_for,
)

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
      keywords: [project-aurora]
      action: redact
- policy_name: globex_base
  org: globex
  rules:
    - type: model_access
      id: models
      models: [claude-3-haiku]
- policy_name: metered_base
  org: metered
  rules:
    - type: cost_budget
      id: monthly
      per: org
      limit_usd: 1000
      period: month
- policy_name: counted_base
  org: counted
  rules:
    - {type: rate_limit, id: requests, per: org, requests: 1000, window: minute}
- policy_name: tokened_base
  org: tokened
  rules:
    - {type: rate_limit, id: tokens, per: org, tokens: 100000, window: minute}
"""

MiB = 1024 * 1024


@pytest.fixture(params=["grpc", "h2"])
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """The sidecar on each transport (serve --transport): the same answers from both."""
    async with running_sidecar(tmp_path, POLICIES, transport=request.param) as running:
        yield running


@pytest.fixture
async def sidecars(tmp_path: Path) -> AsyncIterator[Sidecars]:
    """For tests that need a sidecar configured their own way; all stopped at the end."""
    async with AsyncExitStack() as stack:
        yield Sidecars(tmp_path / "own", stack)


def _records_for(server: Running, request_id: str) -> list[dict[str, object]]:
    return [r for r in server.records_json() if r["request_id"] == request_id]


# -- the three outcomes ------------------------------------------------------------------------


async def test_allow_continues_and_marks_the_response(server: Running) -> None:
    answers = await run_exchange(
        server.stub, full_exchange(chat_body("What is the capital of France?"), request_id="r-a")
    )
    kinds = [a.WhichOneof("response") for a in answers]
    assert kinds == ["request_headers", "request_body", "response_headers", "response_body"]
    body_answer = common(answers[1])
    assert not body_answer.HasField("body_mutation")
    assert metadata(answers[1])["decision"] == "allow"
    assert metadata(answers[1])["request_id"] == "r-a"
    headers = mutation_headers(common(answers[2]).header_mutation)
    assert headers["x-policy-decision"] == "allow"
    assert headers["x-request-id"] == "r-a"
    (record,) = _records_for(server, "r-a")
    assert record["decision"] == "allow"
    assert record["org"] == "acme"
    assert record["compliance"] == ["SOC2"]


async def test_block_is_a_403_json_refusal_and_audited(server: Running) -> None:
    answers = await run_exchange(
        server.stub, full_request(chat_body("this is confidential"), request_id="r-b")
    )
    assert len(answers) == 2
    imm = answers[1].immediate_response
    assert imm.status.code == 403
    body = immediate_json(answers[1])
    assert body["error"] == {
        "type": "policy_violation",
        "code": "blocked",
        "message": body["reason"],
    }
    assert body["decision"] == "block"
    assert body["policy"] == "acme_base"
    assert body["rule"] == "secrets"
    assert body["request_id"] == "r-b"
    assert body["reason"] == "prompt matches keyword #1 of rule 'secrets'"  # never the text
    headers = mutation_headers(imm.headers)
    assert headers["content-type"] == "application/json"
    assert headers["x-policy-decision"] == "block"
    assert headers["x-request-id"] == "r-b"
    assert metadata(answers[1])["decision"] == "block"
    (record,) = _records_for(server, "r-b")
    assert (record["decision"], record["policy"], record["rule"]) == (
        "block",
        "acme_base",
        "secrets",
    )
    assert record["fired"] == [{"policy": "acme_base", "rule": "secrets", "action": "block"}]
    assert record["error_code"] is None  # a policy block is no error


async def test_modify_rewrites_the_body_with_a_matching_content_length(server: Running) -> None:
    prompt = "Summarise the status of project-aurora for the board"
    answers = await run_exchange(server.stub, full_exchange(chat_body(prompt), request_id="r-m"))
    body_common = common(answers[1])
    new_body = body_common.body_mutation.body
    headers = mutation_headers(body_common.header_mutation)
    assert headers["content-length"] == str(len(new_body))
    assert b"project-aurora" not in new_body
    sent = json.loads(new_body)
    assert sent["messages"][0]["content"] == (
        "Summarise the status of [REDACTED:codenames] for the board"
    )
    assert sent["model"] == "gpt-4o-mini"
    response = mutation_headers(common(answers[2]).header_mutation)
    assert response["x-policy-decision"] == "modify"
    assert response["x-policy-redactions"] == "codenames=1"
    (record,) = _records_for(server, "r-m")
    assert record["decision"] == "modify"
    assert record["redactions"] == {"codenames": 1}


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/chat/completions", b"this is not json", 400, "malformed_body"),
        ("/v1/chat/completions", b'["a", "list"]', 400, "malformed_body"),
        ("/v1/chat/completions", b'{"model": "gpt-4o"}', 400, "malformed_body"),
        ("/v2/something/else", b'{"model": "gpt-4o"}', 400, "unknown_api"),
    ],
)
async def test_bad_input_gets_a_4xx_json_answer_and_is_audited(
    server: Running, path: str, body: bytes, status: int, code: str
) -> None:
    answers = await run_exchange(server.stub, full_request(body, path=path, request_id="r-bad"))
    assert answers[0].WhichOneof("response") == "request_headers"
    imm = answers[1].immediate_response
    assert imm.status.code == status
    err = immediate_json(answers[1])
    assert err["error"]["type"] == "invalid_request_error"
    assert err["error"]["code"] == code
    assert err["request_id"] == "r-bad"
    (record,) = _records_for(server, "r-bad")
    assert record["error_code"] == code
    assert record["org"] == "acme"  # audited with the identity the request carried


async def test_declared_length_over_the_limit_is_refused_at_request_headers(
    server: Running,
) -> None:
    msg = request_headers(
        headers={"content-length": str(8 * MiB)}, end_of_stream=False, request_id="r-big"
    )
    answers = await run_exchange(server.stub, [msg, request_body(b"{}")])
    assert len(answers) == 1  # the body is never asked for
    assert answers[0].immediate_response.status.code == 413
    assert immediate_json(answers[0])["error"]["code"] == "body_too_large"
    (record,) = _records_for(server, "r-big")
    assert record["error_code"] == "body_too_large"


async def test_a_partial_body_that_hit_the_buffer_limit_gets_a_413(server: Running) -> None:
    # BUFFERED_PARTIAL: Envoy sends what fit in its buffer with end_of_stream false.
    body = chat_body("x" * 1000)
    answers = await run_exchange(
        server.stub,
        [
            request_headers(body=body, request_id="r-part"),
            request_body(body[:500], end_of_stream=False),
        ],
    )
    assert answers[1].immediate_response.status.code == 413
    assert immediate_json(answers[1])["error"]["code"] == "body_too_large"
    assert _records_for(server, "r-part")[0]["error_code"] == "body_too_large"


async def test_get_without_a_body_passes(server: Running) -> None:
    answers = await run_exchange(
        server.stub,
        [
            request_headers(path="/v1/models", method="GET", request_id="r-get"),
            response_headers(),
            response_body(b'{"data": []}'),
        ],
    )
    assert answers[0].WhichOneof("response") == "request_headers"
    assert metadata(answers[0])["decision"] == "allow"
    headers = mutation_headers(common(answers[1]).header_mutation)
    assert headers["x-policy-decision"] == "allow"
    assert _records_for(server, "r-get")[0]["decision"] == "allow"


# -- protocol errors, disconnects and bugs -------------------------------------------------------


async def test_envoy_local_reply_without_a_request_phase_passes(server: Running) -> None:
    # jwt_authn's 401, the health check: Envoy answered before ext_proc saw the request, and
    # still sends the response side through us. It passes untouched and is not a decision.
    before = len(server.sink.records)
    answers = await run_exchange(server.stub, [response_headers(401), response_body(b"{}")])
    assert [a.WhichOneof("response") for a in answers] == ["response_headers", "response_body"]
    assert len(server.sink.records) == before


@pytest.mark.parametrize(
    "first_messages",
    [
        pytest.param([request_body(b"{}")], id="request_body_first"),
        pytest.param(
            [
                request_headers(path="/v1/models", method="GET", request_id="r-proto"),
                response_body(b"{}"),
            ],
            id="response_body_before_response_headers",
        ),
        pytest.param(
            [
                request_headers(path="/v1/models", method="GET", request_id="r-proto"),
                request_headers(path="/v1/models", method="GET", request_id="r-proto"),
            ],
            id="request_headers_twice",
        ),
    ],
)
async def test_a_message_out_of_order_gets_a_deliberate_500_and_the_server_goes_on(
    server: Running, first_messages: list
) -> None:
    answers = await run_exchange(server.stub, first_messages)
    last = answers[-1]
    assert last.immediate_response.status.code == 500
    err = immediate_json(last)
    assert err["error"]["code"] == "protocol_error"
    assert err["error"]["type"] == "server_error"
    assert server.records_json()[-1]["error_code"] == "protocol_error"
    # The same server (and channel) serves the next stream normally.
    answers = await run_exchange(server.stub, full_request(chat_body("hello"), request_id="r-next"))
    assert metadata(answers[1])["decision"] == "allow"
    assert _records_for(server, "r-next")[0]["decision"] == "allow"


async def test_a_client_that_disconnects_mid_stream_leaves_the_server_serving(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    processor = server.sidecar.processor
    assert processor is not None
    ex = Exchange(server.stub)
    body = chat_body("hello")
    await ex.send(request_headers(body=body, request_id="r-gone"))
    assert processor.open_streams == 1
    with caplog.at_level(logging.ERROR):
        ex.call.cancel()
        await wait_for(lambda: processor.open_streams == 0, "the cancelled stream to close")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    answers = await run_exchange(server.stub, full_request(body, request_id="r-after"))
    assert metadata(answers[1])["decision"] == "allow"


async def test_a_disconnect_after_the_response_started_still_records_usage(
    server: Running,
) -> None:
    processor = server.sidecar.processor
    assert processor is not None
    ex = Exchange(server.stub)
    for msg in full_request(chat_body("hello"), request_id="r-cut", org="metered"):
        await ex.send(msg)
    await ex.send(response_headers())
    await ex.send(
        response_body(b'{"usage": {"prompt_tokens": 5, "completion_tokens": 7}}')
    )  # the whole body, but Envoy resets before the stream closes cleanly
    ex.call.cancel()
    await wait_for(lambda: processor.open_streams == 0, "the cancelled stream to close")
    phases = [r["phase"] for r in _records_for(server, "r-cut")]
    assert phases == ["request", "response"]


async def test_an_exception_in_the_engine_becomes_a_500_internal_error(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(server.sidecar.engine, "decide_request", broken)
    answers = await run_exchange(server.stub, full_request(chat_body("hello"), request_id="r-bug"))
    imm = answers[1].immediate_response
    assert imm.status.code == 500
    err = immediate_json(answers[1])
    assert err["error"]["code"] == "internal_error"
    assert err["request_id"] == "r-bug"
    assert "a bug" not in imm.body.decode()  # the exception's text stays in our log
    (record,) = _records_for(server, "r-bug")
    assert record["error_code"] == "internal_error"
    monkeypatch.undo()
    answers = await run_exchange(server.stub, full_request(chat_body("hi"), request_id="r-ok"))
    assert metadata(answers[1])["decision"] == "allow"


async def test_an_exception_in_the_response_path_is_answered_too(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Engine, *args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Engine, "response_started", broken)
    answers = await run_exchange(
        server.stub, full_exchange(chat_body("hello"), request_id="r-rbug")
    )
    assert answers[-1].immediate_response.status.code == 500
    assert immediate_json(answers[-1])["error"]["code"] == "internal_error"


# -- the audit -----------------------------------------------------------------------------------


async def test_every_decision_the_client_saw_is_audited_without_prompt_text(
    server: Running,
) -> None:
    prompts = {
        "r-1": "Tell me a story about the lighthouse keeper Ingrid",
        "r-2": "The confidential merger terms with Northwind are attached",
        "r-3": "Draft a memo about project-aurora and the Oslo office move",
        "r-4": "Explain quicksort to a nervous first-year student",
    }
    seen = {}
    for rid, prompt in prompts.items():
        answers = await run_exchange(server.stub, full_exchange(chat_body(prompt), request_id=rid))
        last_request_answer = answers[1]
        if last_request_answer.WhichOneof("response") == "immediate_response":
            seen[rid] = immediate_json(last_request_answer)["decision"]
        else:
            headers = mutation_headers(common(answers[2]).header_mutation)
            seen[rid] = headers["x-policy-decision"]
    assert seen == {"r-1": "allow", "r-2": "block", "r-3": "modify", "r-4": "allow"}
    records = [r for r in server.records_json() if r["phase"] == "request"]
    assert {r["request_id"]: r["decision"] for r in records} == seen
    assert len(records) == len(seen)
    dump = json.dumps(server.records_json())
    for prompt in prompts.values():
        assert prompt not in dump
    for fragment in ("Ingrid", "Northwind", "Oslo office", "nervous first-year"):
        assert fragment not in dump


async def test_traceparent_becomes_the_records_trace_id(server: Running) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    await run_exchange(
        server.stub,
        full_request(chat_body("hello"), request_id="r-t", headers={"traceparent": traceparent}),
    )
    (record,) = _records_for(server, "r-t")
    assert record["trace_id"] == trace_id
    emitted = server.sink.emitted[-1]
    assert emitted.trace_context == {"traceparent": traceparent}


async def test_jwt_claims_win_over_identity_headers(server: Running) -> None:
    # The header claims acme (which allows gpt-4o-mini); the verified token says globex, whose
    # policy allows only claude-3-haiku.
    answers = await run_exchange(
        server.stub,
        full_request(
            chat_body("hello", model="gpt-4o-mini"),
            request_id="r-jwt",
            org="acme",
            headers={"x-user-id": "mallory"},
            claims={"org": "globex", "sub": "alice"},
        ),
    )
    assert answers[1].immediate_response.status.code == 403
    assert immediate_json(answers[1])["policy"] == "globex_base"
    (record,) = _records_for(server, "r-jwt")
    assert (record["org"], record["user"]) == ("globex", "alice")


async def test_jwt_identity_is_kept_in_the_record_of_an_early_refusal(server: Running) -> None:
    msg = request_headers(
        headers={"content-length": str(8 * MiB), "x-user-id": "mallory"},
        end_of_stream=False,
        request_id="r-jwt-413",
        claims={"org": "globex", "sub": "alice"},
    )
    answers = await run_exchange(server.stub, [msg])
    assert answers[0].immediate_response.status.code == 413
    (record,) = _records_for(server, "r-jwt-413")
    assert (record["org"], record["user"]) == ("globex", "alice")


# -- streaming responses -----------------------------------------------------------------------


def _sse(*payloads: object) -> list[bytes]:
    return [f"data: {json.dumps(p)}\n\n".encode() for p in payloads] + [b"data: [DONE]\n\n"]


async def test_a_scope_that_reads_no_response_asks_envoy_to_skip_it(server: Running) -> None:
    body = chat_body("hello")
    answers = await run_exchange(server.stub, [request_headers(body=body, request_id="r-skip")])
    mode = answers[0].mode_override
    assert answers[0].HasField("mode_override")
    assert mode.response_header_mode == mode.SKIP
    # Envoy applies the whole mode it is given: the request side is restated, not dropped.
    assert mode.request_body_mode == mode.BUFFERED


@pytest.mark.parametrize(
    ("org", "skipped"),
    [
        ("metered", False),  # a budget: the reservation is settled from the usage
        ("tokened", False),  # a token limit: the same
        ("counted", True),  # a request count is final when admitted
    ],
)
async def test_only_limits_settled_from_usage_keep_the_response_phases(
    server: Running, org: str, skipped: bool
) -> None:
    body = chat_body("hello")
    answers = await run_exchange(
        server.stub, [request_headers(body=body, request_id=f"r-{org}", org=org)]
    )
    assert answers[0].HasField("mode_override") == skipped


async def test_sse_response_is_streamed_and_its_usage_audited(server: Running) -> None:
    body = chat_body("Write a haiku about the sea", stream=True)
    ex = Exchange(server.stub)
    first = await ex.send(request_headers(body=body, request_id="r-sse", org="metered"))
    assert not first.HasField("mode_override")  # the budget needs the response
    answer = await ex.send(request_body(body))
    # Under a budget, a streamed OpenAI request is asked to report its usage.
    new_body = common(answer).body_mutation.body
    assert json.loads(new_body)["stream_options"] == {"include_usage": True}
    assert mutation_headers(common(answer).header_mutation)["content-length"] == str(len(new_body))
    answer = await ex.send(
        response_headers(content_type="text/event-stream", extra={"content-length": "999"})
    )
    assert answer.WhichOneof("response") == "response_headers"
    assert answer.mode_override.response_body_mode == answer.mode_override.STREAMED
    c = common(answer)
    assert "content-length" in c.header_mutation.remove_headers
    assert mutation_headers(c.header_mutation)["x-policy-decision"] == "allow"
    chunks = _sse(
        {"choices": [{"delta": {"content": "Waves"}}], "usage": None},
        {"choices": [{"delta": {"content": " fold"}}], "usage": None},
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9}},
    )
    sent = []
    for i, chunk in enumerate(chunks):
        answer = await ex.send(response_body(chunk, end_of_stream=i == len(chunks) - 1))
        assert answer.WhichOneof("response") == "response_body"
        c = common(answer)
        sent.append(c.body_mutation.body if c.HasField("body_mutation") else chunk)
    # The client did not ask for usage: the chunk the sidecar asked for is taken out again,
    # every other one goes on untouched.
    assert sent == [chunks[0], chunks[1], b"", chunks[3]]
    assert await ex.close() == grpc.StatusCode.OK
    records = _records_for(server, "r-sse")
    assert [r["phase"] for r in records] == ["request", "response"]
    assert records[1]["usage"] == {"input_tokens": 12, "output_tokens": 9}
    assert records[1]["decision"] == "allow"
    assert records[1]["org"] == "metered"


async def test_sse_chunks_split_mid_event_are_answered_in_order(server: Running) -> None:
    body = chat_body("hello", stream=True)
    ex = Exchange(server.stub)
    for msg in full_request(body, request_id="r-split", org="metered"):
        await ex.send(msg)
    await ex.send(response_headers(content_type="text/event-stream; charset=utf-8"))
    stream = b"".join(_sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}))
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    for i, piece in enumerate(pieces):
        await ex.send(response_body(piece, end_of_stream=i == len(pieces) - 1))
    await ex.close()
    kinds = [a.WhichOneof("response") for a in ex.answers]
    assert kinds[3:] == ["response_body"] * len(pieces)
    assert _records_for(server, "r-split")[-1]["usage"] == {"input_tokens": 3, "output_tokens": 4}


# -- sizes -------------------------------------------------------------------------------------


async def test_a_body_near_the_limit_passes_grpc(server: Running) -> None:
    filler = "lorem ipsum dolor sit amet " * (int(3.9 * MiB) // 27)
    body = chat_body(filler)
    assert 3.8 * MiB < len(body) < 4 * MiB
    answers = await run_exchange(server.stub, full_request(body, request_id="r-large"))
    assert metadata(answers[1])["decision"] == "allow"


async def test_a_body_exactly_at_the_limit_passes_grpc(server: Running) -> None:
    # The message is then over gRPC's default 4 MiB: the server's own limit must allow it.
    base = chat_body("")
    body = chat_body("z" * (DEFAULT_MAX_BODY - len(base)))
    assert len(body) == DEFAULT_MAX_BODY
    answers = await run_exchange(server.stub, full_request(body, request_id="r-at-limit"))
    assert metadata(answers[1])["decision"] == "allow"
    over = chat_body("z" * (DEFAULT_MAX_BODY - len(base) + 1))
    answers = await run_exchange(server.stub, full_request(over, request_id="r-over"))
    assert answers[0].immediate_response.status.code == 413


async def test_a_rewritten_body_near_the_limit_comes_back_through_grpc(server: Running) -> None:
    filler = "lorem ipsum dolor sit amet " * (int(3.9 * MiB) // 27)
    body = chat_body(filler + " project-aurora")
    answers = await run_exchange(server.stub, full_request(body, request_id="r-large-m"))
    c = common(answers[1])
    assert b"project-aurora" not in c.body_mutation.body
    assert mutation_headers(c.header_mutation)["content-length"] == str(len(c.body_mutation.body))


async def test_the_configured_limit_is_enforced_with_a_json_413(sidecars: Sidecars) -> None:
    server = await sidecars.start(POLICIES, max_body_bytes=1000)
    body = chat_body("y" * 2000)
    # Declared too large: refused at the headers.
    answers = await run_exchange(server.stub, full_request(body, request_id="r-413a"))
    assert answers[0].immediate_response.status.code == 413
    # Not declared (chunked upload): refused when the body arrives.
    msgs = [
        request_headers(body=body, request_id="r-413b", headers={"content-length": ""}),
        request_body(body),
    ]
    answers = await run_exchange(server.stub, msgs)
    assert answers[1].immediate_response.status.code == 413


async def test_concurrent_streams_do_not_mix(server: Running) -> None:
    async def one(i: int) -> str:
        prompt = "confidential" if i % 2 else "hello"
        answers = await run_exchange(
            server.stub, full_exchange(chat_body(prompt), request_id=f"r-c{i}")
        )
        if answers[1].WhichOneof("response") == "immediate_response":
            return str(immediate_json(answers[1])["request_id"])
        return mutation_headers(common(answers[2]).header_mutation)["x-request-id"]

    got = await asyncio.gather(*(one(i) for i in range(10)))
    assert got == [f"r-c{i}" for i in range(10)]


# -- stateful decisions ------------------------------------------------------------------------

LIMITS = """
policy_name: limits
org: acme
rules:
  - type: rate_limit
    id: per-user-daily
    per: user
    requests: 1
    window: day
"""


async def test_a_throttled_request_gets_a_429_with_rate_limit_headers(sidecars: Sidecars) -> None:
    server = await sidecars.start(LIMITS)
    user = {"x-user-id": "u1"}
    first = await run_exchange(
        server.stub, full_request(chat_body("hi"), request_id="r-rl1", headers=user)
    )
    assert metadata(first[1])["decision"] == "allow"
    second = await run_exchange(
        server.stub, full_request(chat_body("hi"), request_id="r-rl2", headers=user)
    )
    imm = second[1].immediate_response
    assert imm.status.code == 429
    headers = mutation_headers(imm.headers)
    assert headers["x-policy-decision"] == "throttle"
    assert headers["x-ratelimit-limit"] == "1"
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["retry-after"]) >= 1
    assert "x-ratelimit-reset" in headers
    assert immediate_json(second[1])["error"]["code"] == "rate_limited"
    assert metadata(second[1])["decision"] == "throttle"
    assert _records_for(server, "r-rl2")[0]["decision"] == "throttle"


async def test_an_audit_failure_refuses_with_a_503_not_a_stream_error(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise AuditLogError("disk full")

    monkeypatch.setattr(server.sink, "emit", down)
    # No decision goes out unaudited: the request is refused, deliberately.
    answers = await run_exchange(
        server.stub, full_request(chat_body("hello"), request_id="r-audit")
    )
    assert answers[1].immediate_response.status.code == 503
    assert immediate_json(answers[1])["error"]["code"] == "audit_unavailable"


PRIVACY = """
policy_name: privacy
org: acme
rules:
  - type: pii
    entities: [EMAIL, US_SSN]
"""


async def test_pii_masking_rewrites_the_body_and_names_the_counts(sidecars: Sidecars) -> None:
    server = await sidecars.start(PRIVACY)
    prompt = "Mail bob@example.com and ann@example.org about SSN 123-45-6789"
    answers = await run_exchange(server.stub, full_exchange(chat_body(prompt), request_id="r-pii"))
    c = common(answers[1])
    new_body = c.body_mutation.body
    assert mutation_headers(c.header_mutation)["content-length"] == str(len(new_body))
    for value in (b"bob@example.com", b"ann@example.org", b"123-45-6789"):
        assert value not in new_body
    response = mutation_headers(common(answers[2]).header_mutation)
    assert response["x-policy-decision"] == "modify"
    assert response["x-policy-redactions"] == "EMAIL=2,US_SSN=1"
    dump = json.dumps(server.records_json())
    assert "bob@example.com" not in dump
    assert "123-45-6789" not in dump
