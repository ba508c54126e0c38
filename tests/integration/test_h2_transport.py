"""``serve --transport h2`` with a real gRPC client: what differs from grpc.aio, and limits.

The ext_proc, ext_authz, health, TLS and shutdown tests run on both transports where they live
(parametrized ``transport``); this module holds what only the h2 listener needs checking.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from policy_extproc.listeners import H2Listener
from tests.integration.helpers import (
    Running,
    chat_body,
    full_request,
    metadata,
    request_body,
    request_headers,
    run_exchange,
    running_sidecar,
)

POLICIES = """
- policy_name: acme_base
  org: acme
  rules:
    - {type: content_filter, id: secrets, keywords: [confidential], action: block}
"""
MAX_BODY = 1000
MiB = 1024 * 1024


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    options = [("grpc.max_send_message_length", 4 * MiB)]
    async with running_sidecar(
        tmp_path, POLICIES, transport="h2", max_body_bytes=MAX_BODY, channel_options=options
    ) as running:
        assert isinstance(running.sidecar._server, H2Listener)
        yield running


async def test_an_unknown_method_is_unimplemented_and_the_channel_goes_on(
    server: Running,
) -> None:
    call = server.channel.stream_stream(
        "/no.such.Service/Method", request_serializer=None, response_deserializer=None
    )()
    # No message is written: the answer comes on the request's headers alone, and a write
    # racing it could fail on the client's side first (grpc.aio then reports INTERNAL).
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(call.read(), 10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    health = health_pb2_grpc.HealthStub(server.channel)
    resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_of_an_unknown_service_is_not_found(server: Running) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_message_over_the_grpc_limit_is_resource_exhausted(server: Running) -> None:
    # The limit is grpc.aio's: --max-body-bytes plus 1 MiB for the rest of the message.
    body = b"x" * (MAX_BODY + MiB + 1)
    call = server.stub.Process()
    await call.write(request_headers(body=body, request_id="r-huge"))
    await call.read()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.write(request_body(body))
        await call.read()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The stream cut is audited, and the connection serves the next request.
    answers = await run_exchange(server.stub, full_request(chat_body("hello"), request_id="r-next"))
    assert metadata(answers[1])["decision"] == "allow"
    assert [r.request_id for r in server.sink.records][-1] == "r-next"
    assert any(r.request_id == "r-huge" for r in server.sink.records)
