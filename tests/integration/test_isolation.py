"""Bounded cost and isolated tenants, over real gRPC against an in-process sidecar.

A large body is examined in a worker process: the event loop goes on answering other streams,
the decision and the audit are those of the in-loop path, Envoy is asked for more time, and the
work is stopped when Envoy or the client gives up. The work budget refuses with a 413, audited.
Nothing here asserts on a duration: outcomes and order only.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from policy_extproc.audit.chain import AuditLogError
from policy_extproc.enforce.work import EXTENSION_MARGIN_S
from tests.integration.helpers import (
    Exchange,
    Running,
    Sidecars,
    chat_body,
    common,
    immediate_json,
    metadata,
    request_body,
    request_headers,
    running_sidecar,
    wait_for,
    write_policies,
)

POLICIES = """
- policy_name: everyone
  rules:
    - type: pii
      entities: [EMAIL, PHONE]
    - type: content_filter
      id: secrets
      keywords: [confidential]
      action: redact
- policy_name: strict
  org: strict
  rules:
    - type: content_filter
      id: forbidden
      keywords: [forbidden]
      action: block
"""

# Large enough to take the sidecar seconds, whatever the detector's speed (150,000 addresses).
HUGE = chat_body(" ".join(f"user{i}@example.com" for i in range(150_000)))  # 3.2 MB
OPTIONS = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]


@pytest.fixture
async def sidecars(tmp_path: Path) -> Any:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        yield Sidecars(tmp_path, stack)


async def decide(
    server: Running, body: bytes, *, org: str = "acme", rid: str = "r"
) -> tuple[Exchange, Any]:
    """Headers and body of one request on a new stream; (the exchange, the body's answer)."""
    ex = Exchange(server.stub)
    first = await ex.send(request_headers(body=body, org=org, request_id=rid))
    if first.WhichOneof("response") == "immediate_response":
        return ex, first
    return ex, await ex.send(request_body(body))


def records_for(server: Running, rid: str) -> list[dict[str, Any]]:
    return [r for r in server.records_json() if r["request_id"] == rid]


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what differs between two runs of one request."""
    return {k: v for k, v in record.items() if k not in ("timestamp", "latency_us", "request_id")}


async def test_a_large_body_does_not_hold_up_another_tenants_requests(
    tmp_path: Path,
) -> None:
    async with running_sidecar(tmp_path, POLICIES, channel_options=OPTIONS) as server:
        big = Exchange(server.stub)
        await big.send(request_headers(body=HUGE, org="big", request_id="big"))
        await big.call.write(request_body(HUGE))
        first = await big.call.read()  # the sidecar asks Envoy for more time: the work started
        assert first.HasField("override_message_timeout")
        big_answer = asyncio.ensure_future(big.call.read())
        order = []
        for i in range(10):
            _, answer = await decide(server, chat_body(f"hi, mail bob{i}@example.org"), org="small")
            assert b"[EMAIL]" in common(answer).body_mutation.body
            order.append(f"small-{i}")
        assert not big_answer.done()  # ten small requests answered while the big one is worked on
        big_answer.cancel()
        big.call.cancel()  # Envoy gives up on it: the worker is stopped and the request audited
        await wait_for(lambda: records_for(server, "big"), "the abandoned request's record")
        [record] = records_for(server, "big")
        assert record["decision"] == "block"
        assert record["outcome"] == record["error_code"] == "stream_cancelled"
        pool = server.sidecar.engine.work.pool
        assert pool is not None and pool.killed == 1
        # The next large body gets a new worker and is decided.
        _, answer = await decide(server, chat_body("x@example.org " * 5000), org="big", rid="b2")
        assert common(answer).body_mutation.body.count(b"[EMAIL]") == 5000
        assert pool.started == 2


@pytest.mark.parametrize(
    "text",
    [
        "alice@example.org confidential " * 2000,
        "call +1 212 555 0173 or bob@example.com; nothing else " * 1500,
        "nothing to find here at all " * 3000,
    ],
)
async def test_the_worker_decides_and_audits_exactly_as_the_loop(
    sidecars: Sidecars, text: str
) -> None:
    body = chat_body(text)
    # No deadline in the way on a busy machine: the two paths are compared, not timed.
    common_config: dict[str, Any] = {"channel_options": OPTIONS, "message_timeout_s": 300}
    in_loop = await sidecars.start(POLICIES, offload_workers=0, **common_config)
    worker = await sidecars.start(POLICIES, offload_bytes=0, **common_config)
    answers, records = [], []
    for server in (in_loop, worker):
        ex, answer = await decide(server, body, rid="same")
        assert await ex.close() == grpc.StatusCode.OK
        answers.append((common(answer).body_mutation.body, metadata(answer)))
        records.append([comparable(r) for r in records_for(server, "same")])
    assert answers[0] == answers[1]
    assert records[0] == records[1]
    assert worker.sidecar.engine.work.pool.started == 1  # type: ignore[union-attr]
    assert in_loop.sidecar.engine.work.pool is None


async def test_the_worker_pseudonymises_with_the_key_the_set_was_compiled_with(
    sidecars: Sidecars, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key is read by the edge that compiles and handed to the worker with the policies:
    # the same e-mail gets the same pseudonym in the loop and in a worker process.
    monkeypatch.delenv("POLICY_EXTPROC_PII_HASH_KEY_FILE", raising=False)
    monkeypatch.setenv("POLICY_EXTPROC_PII_HASH_KEY", "pseudonym-key-1")
    policies = "policy_name: mask\nrules:\n  - {type: pii, entities: [EMAIL], style: hash}\n"
    body = chat_body("mail alice@example.org " * 2000)
    config: dict[str, Any] = {"channel_options": OPTIONS, "message_timeout_s": 300}
    in_loop = await sidecars.start(policies, offload_workers=0, **config)
    worker = await sidecars.start(policies, offload_bytes=0, **config)
    bodies = []
    for server in (in_loop, worker):
        ex, answer = await decide(server, body, rid="hashed")
        assert await ex.close() == grpc.StatusCode.OK
        bodies.append(common(answer).body_mutation.body)
    assert bodies[0] == bodies[1] and b"alice@example.org" not in bodies[0]
    assert worker.sidecar.engine.work.pool.started == 1  # type: ignore[union-attr]


async def test_the_worker_refuses_like_the_loop(sidecars: Sidecars) -> None:
    bodies = [b"{not json" + b" " * 40_000, chat_body("a forbidden word " + "x " * 20_000)]
    in_loop = await sidecars.start(POLICIES, offload_workers=0, message_timeout_s=300)
    worker = await sidecars.start(POLICIES, offload_bytes=0, message_timeout_s=300)
    for i, body in enumerate(bodies):
        seen = []
        for server in (in_loop, worker):
            _, answer = await decide(server, body, org="strict", rid=f"r{i}")
            seen.append(
                (immediate_json(answer)["error"], comparable(records_for(server, f"r{i}")[0]))
            )
        assert seen[0] == seen[1]


async def test_envoy_is_asked_for_time_only_for_a_large_body(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path, POLICIES, work_timeout_s=3.0) as server:
        small, _ = await decide(server, chat_body("hello"), rid="small")
        large, _ = await decide(server, chat_body("hello " * 10_000), rid="large")
        assert small.extensions == []
        assert large.extensions == [3.0 + EXTENSION_MARGIN_S]
        for ex in (small, large):
            assert await ex.close() == grpc.StatusCode.OK


async def test_a_body_over_the_work_budget_is_a_413_audited_and_the_stream_goes_on(
    tmp_path: Path,
) -> None:
    # Two scanners (the PII rule and the content filter) in force for acme: 10,000 bytes of
    # body are 20,000 units of work.
    async with running_sidecar(tmp_path, POLICIES, work_budget=20_000) as server:
        fits = chat_body("x" * 9_000)
        over = chat_body("x" * 11_000)
        ex, answer = await decide(server, fits, rid="fits")
        assert answer.WhichOneof("response") == "request_body"
        await ex.close()
        # Refused on the declared length, before the body is buffered...
        ex, answer = await decide(server, over, rid="over")
        error = immediate_json(answer)["error"]
        assert answer.immediate_response.status.code == 413
        assert error["code"] == "work_budget_exceeded"
        assert error["type"] == "invalid_request_error"
        assert await ex.close() == grpc.StatusCode.OK
        # ... and on the body when no length was declared (chunked upload).
        ex = Exchange(server.stub)
        await ex.send(
            request_headers(body=over, request_id="chunked", headers={"content-length": ""})
        )
        answer = await ex.send(request_body(over))
        assert immediate_json(answer)["error"]["code"] == "work_budget_exceeded"
        assert await ex.close() == grpc.StatusCode.OK
        for rid in ("over", "chunked"):
            [record] = records_for(server, rid)
            assert record["error_code"] == "work_budget_exceeded" and record["decision"] == "block"
        ex, answer = await decide(server, fits, rid="after")
        assert answer.WhichOneof("response") == "request_body"


async def test_a_body_over_the_time_bound_is_a_413_and_its_worker_is_replaced(
    tmp_path: Path,
) -> None:
    async with running_sidecar(
        tmp_path, POLICIES, work_timeout_s=0.05, channel_options=OPTIONS
    ) as server:
        ex, answer = await decide(server, HUGE, rid="slow")
        assert answer.immediate_response.status.code == 413
        assert immediate_json(answer)["error"]["code"] == "work_budget_exceeded"
        assert await ex.close() == grpc.StatusCode.OK
        [record] = records_for(server, "slow")
        assert record["error_code"] == "work_budget_exceeded"
        pool = server.sidecar.engine.work.pool
        assert pool is not None and pool.killed == 1
        _, answer = await decide(server, chat_body("hi"), rid="small")  # the loop was never held
        assert answer.WhichOneof("response") == "request_body"


async def test_a_decision_later_than_envoy_waits_is_refused_and_audited_as_envoy_gave_up(
    tmp_path: Path,
) -> None:
    # Decided in the loop (no worker, no extension) with a message timeout shorter than the
    # work: whatever Envoy does with the late answer, the request does not go on, and the
    # audit says the client got Envoy's timeout, not "modify".
    body = chat_body(" ".join(f"user{i}@example.com" for i in range(20_000)))
    async with running_sidecar(
        tmp_path, POLICIES, offload_workers=0, message_timeout_s=0.06, channel_options=OPTIONS
    ) as server:
        _, answer = await decide(server, body, rid="late")
        assert answer.immediate_response.status.code == 504
        assert immediate_json(answer)["error"]["code"] == "envoy_gave_up"
        [record] = records_for(server, "late")
        assert record["outcome"] == record["error_code"] == "envoy_gave_up"
        assert record["decision"] == "block"


async def test_no_error_message_names_a_server_path(tmp_path: Path) -> None:
    log_path = tmp_path / "secret-dir" / "audit.jsonl"
    async with running_sidecar(tmp_path, POLICIES) as server:

        def down(*args: object, **kwargs: object) -> None:
            raise AuditLogError(f"{log_path}: write failed: [Errno 28] No space left on device")

        server.sink.emit = down  # type: ignore[method-assign]
        _, answer = await decide(server, chat_body("hello"), rid="audit-down")
        assert answer.immediate_response.status.code == 503
        text = answer.immediate_response.body.decode()
        assert json.loads(text)["error"]["code"] == "audit_unavailable"
        assert str(tmp_path) not in text and "Errno" not in text
        assert str(tmp_path) not in answer.immediate_response.details


async def test_workers_compile_the_policies_at_start_and_on_every_change(tmp_path: Path) -> None:
    async with running_sidecar(
        tmp_path, POLICIES, offload_warm=True, watch_interval_s=0.05
    ) as server:
        pool = server.sidecar.engine.work.pool
        assert pool is not None
        first = server.sidecar.store.current.build
        await wait_for(lambda: first in pool.compiled(), "the worker to compile the policies")
        write_policies(server.policy_dir, POLICIES.replace("confidential", "classified"))
        await wait_for(lambda: server.sidecar.store.current.build != first, "the reload")
        second = server.sidecar.store.current.build
        await wait_for(lambda: second in pool.compiled(), "the worker to compile the new set")
        assert pool.started == 1
        # A large body is decided on the new set.
        _, answer = await decide(server, chat_body("classified " * 5000), rid="after")
        assert common(answer).body_mutation.body.count(b"[REDACTED:secrets]") == 5000


async def test_a_worker_that_dies_fails_its_request_closed_and_is_replaced(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path, POLICIES, offload_bytes=0) as server:
        pool = server.sidecar.engine.work.pool
        assert pool is not None
        _, answer = await decide(server, chat_body("first"), rid="first")
        assert answer.WhichOneof("response") == "request_body"
        [worker] = pool._idle
        worker.process.kill()  # out of memory, say
        worker.process.wait()
        ex, answer = await decide(server, chat_body("mail ann@example.org"), rid="died")
        assert answer.immediate_response.status.code == 500
        error = immediate_json(answer)["error"]
        assert error["code"] == "internal_error" and "example.org" not in error["message"]
        assert await ex.close() == grpc.StatusCode.OK
        [record] = records_for(server, "died")
        assert record["error_code"] == "internal_error" and record["decision"] == "block"
        _, answer = await decide(server, chat_body("mail ann@example.org"), rid="after")
        assert b"[EMAIL]" in common(answer).body_mutation.body
        assert pool.started == 2
