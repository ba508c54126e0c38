"""Shared helpers for gRPC tests against an in-process sidecar: messages in, answers out.

``running_sidecar`` starts a real ``Sidecar`` on port 0 with a ``RecordingSink``; ``Exchange``
plays Envoy's side of one ext_proc stream (one message, one answer, in order, as Envoy does).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg
from google.protobuf import struct_pb2

from policy_extproc.audit.sink import RecordingSink
from policy_extproc.server import ServerConfig, Sidecar

CHAT = "/v1/chat/completions"
JWT_NAMESPACE = "envoy.filters.http.jwt_authn"


# -- messages ------------------------------------------------------------------------------------


def header_map(headers: Mapping[str, str]) -> base_pb2.HeaderMap:
    """Headers as Envoy sends them: values in raw_value only."""
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    )


def jwt_metadata(claims: Mapping[str, Any]) -> base_pb2.Metadata:
    """What jwt_authn (payload_in_metadata: jwt_payload) puts in the dynamic metadata."""
    payload = struct_pb2.Struct()
    payload.update({"jwt_payload": dict(claims)})
    md = base_pb2.Metadata()
    md.filter_metadata[JWT_NAMESPACE].CopyFrom(payload)
    return md


def chat_body(text: str, *, model: str = "gpt-4o-mini", stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def request_headers(
    *,
    path: str = CHAT,
    method: str = "POST",
    body: bytes | None = None,
    request_id: str = "req-1",
    org: str | None = "acme",
    headers: Mapping[str, str] | None = None,
    claims: Mapping[str, Any] | None = None,
    end_of_stream: bool | None = None,
) -> ep.ProcessingRequest:
    """request_headers for a request; content-length from ``body``; eos when there is none."""
    h = {":method": method, ":path": path, ":authority": "llm.local", "x-request-id": request_id}
    if org is not None:
        h["x-org-id"] = org
    if body is not None:
        h["content-type"] = "application/json"
        h["content-length"] = str(len(body))
    h.update(headers or {})
    eos = body is None if end_of_stream is None else end_of_stream
    msg = ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(headers=header_map(h), end_of_stream=eos)
    )
    if claims is not None:
        msg.metadata_context.CopyFrom(jwt_metadata(claims))
    return msg


def request_body(body: bytes, *, end_of_stream: bool = True) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=end_of_stream))


def response_headers(
    status: int = 200,
    *,
    content_type: str = "application/json",
    end_of_stream: bool = False,
    extra: Mapping[str, str] | None = None,
) -> ep.ProcessingRequest:
    h = {":status": str(status), "content-type": content_type, **(extra or {})}
    return ep.ProcessingRequest(
        response_headers=ep.HttpHeaders(headers=header_map(h), end_of_stream=end_of_stream)
    )


def response_body(body: bytes, *, end_of_stream: bool = True) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(response_body=ep.HttpBody(body=body, end_of_stream=end_of_stream))


# -- reading answers -----------------------------------------------------------------------------


def mutation_headers(mutation: ep.HeaderMutation) -> dict[str, str]:
    """Set headers of a mutation; asserts Envoy's rule: raw_value only, never both fields."""
    out = {}
    for option in mutation.set_headers:
        assert option.header.value == "", f"{option.header.key}: value set beside raw_value"
        out[option.header.key] = option.header.raw_value.decode()
    return out


def common(resp: ep.ProcessingResponse) -> ep.CommonResponse:
    """The CommonResponse of a headers or body answer."""
    kind = resp.WhichOneof("response")
    assert kind in ("request_headers", "request_body", "response_headers", "response_body"), kind
    return getattr(resp, kind).response


def immediate_json(resp: ep.ProcessingResponse) -> dict[str, Any]:
    assert resp.WhichOneof("response") == "immediate_response", resp
    body: dict[str, Any] = json.loads(resp.immediate_response.body)
    return body


def metadata(resp: ep.ProcessingResponse) -> dict[str, Any]:
    """Our namespace of the answer's dynamic metadata."""
    fields = resp.dynamic_metadata.fields
    assert "policy_extproc" in fields, resp
    value: dict[str, Any] = dict(fields["policy_extproc"].struct_value.items())
    return value


# -- streams -------------------------------------------------------------------------------------


class Exchange:
    """Envoy's side of one ext_proc stream: send a message, read its one answer."""

    def __init__(
        self, stub: epg.ExternalProcessorStub, *, metadata: tuple[tuple[str, str], ...] = ()
    ) -> None:
        # metadata: what Envoy sends on the gRPC stream itself (its span's traceparent).
        self.call = stub.Process(metadata=metadata or None)
        self.answers: list[ep.ProcessingResponse] = []
        # override_message_timeout messages (asking Envoy for more time; not answers), in order
        self.extensions: list[float] = []

    async def send(self, msg: ep.ProcessingRequest) -> ep.ProcessingResponse:
        await self.call.write(msg)
        while True:
            answer = await self.call.read()
            assert isinstance(answer, ep.ProcessingResponse), f"stream ended: {answer!r}"
            if answer.WhichOneof("response") is not None or not answer.HasField(
                "override_message_timeout"
            ):
                break
            # Envoy restarts its timer and keeps waiting for the answer (one per message).
            assert not answer.HasField("dynamic_metadata") and not answer.HasField("mode_override")
            self.extensions.append(answer.override_message_timeout.ToNanoseconds() / 1e9)
        self.answers.append(answer)
        return answer

    async def close(self) -> grpc.StatusCode:
        """Half-close as Envoy does at the end of a request; the status the server ends with."""
        await self.call.done_writing()
        rest = await self.call.read()
        assert rest is grpc.aio.EOF, f"unexpected extra answer: {rest!r}"
        code: grpc.StatusCode = await self.call.code()
        return code


async def run_exchange(
    stub: epg.ExternalProcessorStub, messages: list[ep.ProcessingRequest]
) -> list[ep.ProcessingResponse]:
    """Send the messages one by one (stopping at an immediate response, as Envoy does)."""
    ex = Exchange(stub)
    for msg in messages:
        answer = await ex.send(msg)
        if answer.WhichOneof("response") == "immediate_response":
            break
    assert await ex.close() == grpc.StatusCode.OK
    return ex.answers


def full_request(body: bytes, **kw: Any) -> list[ep.ProcessingRequest]:
    """request headers and a buffered body."""
    return [request_headers(body=body, **kw), request_body(body)]


def full_exchange(
    body: bytes, *, response: bytes = b'{"choices":[]}', **kw: Any
) -> list[ep.ProcessingRequest]:
    """request headers, body, response headers, response body: a whole buffered exchange."""
    return [*full_request(body, **kw), response_headers(), response_body(response)]


# -- the server ----------------------------------------------------------------------------------


@dataclass
class Running:
    sidecar: Sidecar
    sink: RecordingSink
    channel: grpc.aio.Channel
    policy_dir: Path
    stopped: bool = False

    @property
    def stub(self) -> epg.ExternalProcessorStub:
        return epg.ExternalProcessorStub(self.channel)

    def records_json(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.sink.records]

    async def stop(self) -> None:
        """Stop the sidecar now (a test of shutdown); the owner will not stop it again."""
        self.stopped = True
        await self.sidecar.stop()


def write_policies(directory: Path, text: str, name: str = "policies.yaml") -> Path:
    """Write a policy file atomically (as a ConfigMap update does): a watcher polling the
    directory never reads it half-written."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


@asynccontextmanager
async def running_sidecar(
    directory: Path,
    policies: str,
    *,
    channel_options: list[tuple[str, Any]] | None = None,
    **config: Any,
) -> AsyncIterator[Running]:
    """A started sidecar on 127.0.0.1:0 with a RecordingSink and a channel to it; stopped after."""
    policy_dir = directory / "policies"
    write_policies(policy_dir, policies)
    config.setdefault("audit_log", None)
    config.setdefault("grace_s", 5.0)
    config.setdefault("offload_warm", False)  # a worker process only for tests that need one
    sink = RecordingSink()
    sidecar = Sidecar(
        ServerConfig(policies=(str(policy_dir),), listen="127.0.0.1:0", **config), sinks=[sink]
    )
    await sidecar.start()
    running: Running | None = None
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{sidecar.port}", options=channel_options or []
        ) as channel:
            running = Running(sidecar, sink, channel, policy_dir)
            yield running
    finally:
        if running is None or not running.stopped:
            await sidecar.stop()


class Sidecars:
    """What a fixture hands a test that needs its own sidecars: each one started is stopped."""

    def __init__(self, directory: Path, stack: AsyncExitStack) -> None:
        self._directory = directory
        self._stack = stack
        self._count = 0

    async def start(self, policies: str, **config: Any) -> Running:
        self._count += 1
        where = self._directory / f"sidecar-{self._count}"
        return await self._stack.enter_async_context(running_sidecar(where, policies, **config))


async def wait_for(predicate: Any, what: str, *, limit_s: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail (not hang) after ``limit_s``.

    Used only for things that happen in the background (a reload, a stream's cleanup); the
    limit is a safety net, never an assertion about speed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
