"""A policy pushed through one replica's admin API is enforced by every replica, under load.

Two in-process ``Sidecar`` replicas share one real redis-server; each is driven by a steady
stream of ext_proc requests, as Envoy would send them, while a new policy is pushed through
replica A. The bar: not one request fails during the switch, and both replicas switch (the
limit below is a safety net, never an assertion about speed; benchmarks/fanout.py measures how
long the switch takes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from policy_extproc._proto import admin_pb2, admin_pb2_grpc
from policy_extproc.audit.record import timestamp_ns
from policy_extproc.policy.compiler import Snapshot
from tests.integration.helpers import (
    Running,
    chat_body,
    full_request,
    immediate_json,
    metadata,
    run_exchange,
    running_sidecar,
)

pytestmark = pytest.mark.redis

TOKEN = "fanout-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
WORKERS = 3  # concurrent ext_proc streams per replica: steady load on two shared cores
SAFETY_NET_S = 10.0

POLICIES = """
policy_name: acme_base
org: acme
rules: [{type: content_filter, id: secrets, keywords: [confidential]}]
"""

PUSHED = """
policy_name: acme_ml
org: acme
team: ml
rules: [{type: content_filter, id: words, keywords: [classified]}]
"""


@dataclass
class Load:
    """Requests sent to one replica: their decisions, and every failure."""

    running: Running
    decisions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    swaps: list[tuple[float, str]] = field(default_factory=list)  # (wall time, version)

    async def worker(self, name: str, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            messages = full_request(
                chat_body("a classified memo"),
                request_id=f"{name}-{n}",
                headers={"x-team-id": "ml", "x-user-id": "alice"},
            )
            try:
                answers = await run_exchange(self.running.stub, messages)
                answer = answers[-1]
                if answer.WhichOneof("response") == "immediate_response":
                    body = immediate_json(answer)
                    assert answer.immediate_response.status.code == 403, body
                    self.decisions.append(str(body["decision"]))
                else:
                    self.decisions.append(str(metadata(answer)["decision"]))
            except (AssertionError, grpc.aio.AioRpcError, KeyError) as exc:
                self.failures.append(f"{name}-{n}: {exc!r}")


@pytest.fixture
async def replicas(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[Load, Load]]:
    async with AsyncExitStack() as stack:
        loads = []
        for name in ("a", "b"):
            running = await stack.enter_async_context(
                running_sidecar(
                    tmp_path / name,
                    POLICIES,
                    redis=redis_url,
                    admin_listen="127.0.0.1:0",
                    admin_token=TOKEN,
                )
            )
            load = Load(running)

            def swapped(snapshot: Snapshot, load: Load = load) -> None:
                load.swaps.append((time.time(), snapshot.version))

            running.sidecar.store.on_swap(swapped)
            loads.append(load)
        yield loads[0], loads[1]


async def test_a_push_through_one_replica_is_live_on_both_with_no_failed_request(
    replicas: tuple[Load, Load],
) -> None:
    a, b = replicas
    old = {id(r): r.running.sidecar.store.current.version for r in replicas}
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(r.worker(f"{tag}{w}", stop))
        for tag, r in (("a", a), ("b", b))
        for w in range(WORKERS)
    ]
    # Steady load before the push: wait until each replica has decided a few requests.
    async with asyncio.timeout(SAFETY_NET_S):
        while min(len(a.decisions), len(b.decisions)) < 10:
            await asyncio.sleep(0.01)

    port = a.running.sidecar.admin_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = admin_pb2_grpc.PolicyAdminStub(channel)
        resp = await stub.PutPolicies(
            admin_pb2.PutPoliciesRequest(text=PUSHED, file_name="acme_ml.yaml"), metadata=AUTH
        )
    assert list(resp.names) == ["acme_ml"]

    def switched(r: Load) -> bool:
        version = r.running.sidecar.store.current.version
        return version != old[id(r)] and any(
            rec.policy_version == version for rec in r.running.sink.records
        )

    async with asyncio.timeout(SAFETY_NET_S):
        while not (switched(a) and switched(b)):
            await asyncio.sleep(0.01)
    # Keep the load on a little after the switch, then stop.
    counts = (len(a.decisions), len(b.decisions))
    async with asyncio.timeout(SAFETY_NET_S):
        while len(a.decisions) < counts[0] + 10 or len(b.decisions) < counts[1] + 10:
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*workers)

    for r in (a, b):
        assert r.failures == [], r.failures
        new = r.running.sidecar.store.current.version
        (swap_at,) = [t for t, v in r.swaps if v == new]
        records = r.running.sink.records
        # Requests that started after the swap were all decided by the new set; those in
        # flight at the swap kept the set they started with.
        after = [x for x in records if timestamp_ns(x.timestamp) / 1e9 > swap_at]
        assert after and all(x.policy_version == new for x in after)
        assert {x.policy_version for x in records} == {old[id(r)], new}
        assert {x.decision for x in records if x.policy_version == new} == {"block"}
        assert {x.decision for x in records if x.policy_version == old[id(r)]} == {"allow"}
