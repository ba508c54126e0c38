"""Redis Cluster and Sentinel: URLs, hash slots, and a master failing over under load.

The shared behaviour table (``test_state_redis.py``) runs on a three-master cluster too; here
are what only a cluster has: a master that fails over while requests are admitted, and keys that
must share a slot. Time inside the limiter is passed in (``now``), so no window refills while
the cluster changes; ``HANG_GUARD_S`` only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from redis.crc import key_slot

from policy_extproc.errors import StateError
from policy_extproc.state import connect
from policy_extproc.state.base import LimitSpec
from policy_extproc.state.redis import _APPROVALS, RedisState, _prefix
from policy_extproc.state.redis_codec import breaker_keys as _breaker_keys
from policy_extproc.state.redis_policies import CHANNEL, TEXTS, VERSION, RedisPolicies
from tests.redis_server import RedisClusterServers, RedisSentinelGroup

pytestmark = pytest.mark.redis

T0 = 1_700_000_000.0
HANG_GUARD_S = 120.0
ORG = "acme"
LIMIT = 150


def test_urls_name_a_server_a_cluster_or_a_sentinel_group() -> None:
    assert connect.parse("redis://h:1/2").kind == "single"
    cluster = connect.parse("redis+cluster://u:p%40ss@a:7000,b:7001")
    assert (cluster.kind, cluster.nodes, cluster.password) == (
        "cluster",
        (("a", 7000), ("b", 7001)),
        "p@ss",
    )
    assert connect.parse("rediss+cluster://a:7000").tls
    sentinel = connect.parse("redis+sentinel://a:26379,[::1]:26380/main/3")
    assert (sentinel.nodes, sentinel.service, sentinel.db) == (
        (("a", 26379), ("::1", 26380)),
        "main",
        3,
    )
    for bad in (
        "http://a:1",
        "redis+cluster://",
        "redis+cluster://a:7000/1",
        "redis+sentinel://a:26379",
        "redis+cluster://a:notaport",
    ):
        with pytest.raises(StateError):
            connect.parse(bad)


def test_the_keys_of_each_script_call_share_one_slot() -> None:
    """What the scripts are given: an org's keys, a breaker's, approvals', pushed policies'."""
    prefix = _prefix(ORG)
    org_keys = [prefix + "resv", prefix + "res:r1", prefix + "rl:user:alice:r1:requests",
                prefix + "budget:team:ml:b1:day"]  # fmt: skip
    for keys in (org_keys, _breaker_keys("openai"), [TEXTS, VERSION, CHANNEL],
                 [_APPROVALS + "a:apr_1", _APPROVALS + "index"]):  # fmt: skip
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    assert key_slot(_prefix("acme").encode()) != key_slot(_prefix("globex").encode())


async def _load(state: RedisState, spec: LimitSpec, stop: asyncio.Event) -> tuple[int, int, int]:
    """Admit until told to stop and refused: (admitted, refused by the limit, state errors)."""
    admitted = refused = errors = 0
    i = 0
    while not (stop.is_set() and refused):
        i += 1
        try:
            result = await state.admit(ORG, f"r{i}", [spec], now=T0)
        except StateError:
            errors += 1
            await asyncio.sleep(0.01)
            continue
        if result.admitted:
            admitted += 1
        else:
            refused += 1
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)
    return admitted, refused, errors


def _org_master(cluster: RedisClusterServers) -> int:
    return cluster.master_of_slot(key_slot(f"pe:{{{ORG}}}:x".encode()))


def _org_master_or_none(cluster: RedisClusterServers) -> int | None:
    try:
        return _org_master(cluster)
    except RuntimeError:  # no master serves the slot yet, as the node asked sees it
        return None


async def test_a_master_failing_over_under_load_lets_no_request_past_the_limit() -> None:
    with RedisClusterServers() as cluster:
        state = RedisState.from_url(cluster.url, timeout_s=1.0)
        spec = LimitSpec("rl:user:alice:r1:requests", LIMIT, 3600.0)
        stop = asyncio.Event()
        workers = [asyncio.create_task(_load(state, spec, stop)) for _ in range(4)]
        try:
            old = _org_master(cluster)
            # Under load: wait until a part of the limit is used, then fail the org's master over.
            async with asyncio.timeout(HANG_GUARD_S):
                while await _used(state, spec) < LIMIT // 3:
                    await asyncio.sleep(0.01)
                new = await asyncio.to_thread(cluster.failover, old)
                assert new != old
                # The nodes learn the new topology by gossip: wait until the one asked says so.
                while _org_master_or_none(cluster) != new:
                    await asyncio.sleep(0.05)
                stop.set()
                results = await asyncio.gather(*workers)
        finally:
            stop.set()
            for task in workers:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StateError):
                await asyncio.gather(*workers)
            await state.close()
        admitted = sum(r[0] for r in results)
        errors = sum(r[2] for r in results)
        # Not one request past the limit; a timed-out admit may have counted without an answer.
        assert LIMIT - errors <= admitted <= LIMIT
        # and the new master has the whole count: the next request is refused there.
        after = RedisState.from_url(cluster.url, timeout_s=5.0)
        try:
            assert not (await after.admit(ORG, "after", [spec], now=T0)).admitted
        finally:
            await after.close()


async def _used(state: RedisState, spec: LimitSpec) -> int:
    probe = LimitSpec(spec.key, spec.limit, spec.window_s, cost=0)
    try:
        result = await state.admit(ORG, "probe", [probe], now=T0)
    except StateError:
        return 0
    return spec.limit - result.limits[0].remaining


async def test_a_killed_master_is_replaced_and_state_and_announcements_carry_on() -> None:
    with RedisClusterServers() as cluster:
        state = RedisState.from_url(cluster.url, timeout_s=1.0)
        policies = RedisPolicies.from_url(cluster.url, timeout_s=1.0)
        spec = LimitSpec("rl:user:bob:r1:requests", LIMIT, 3600.0)
        changes = policies.changes()
        try:
            async with asyncio.timeout(HANG_GUARD_S):
                assert await anext(changes) is None  # subscribed
                assert (await state.admit(ORG, "before", [spec], now=T0)).admitted
                old = _org_master(cluster)
                cluster.server(old).kill()
                # Until a replica is elected, calls fail fast (StateError), never hang.
                while True:
                    try:
                        if (await state.admit(ORG, "after", [spec], now=T0)).admitted:
                            break
                    except StateError:
                        await asyncio.sleep(0.1)
                # The node asked learns it by gossip: the old master marked failed, then the
                # new one's claim of the slot (between the two, no master serves it there).
                while _org_master_or_none(cluster) in (old, None):
                    await asyncio.sleep(0.05)
                # Policy announcements still arrive, whichever node the subscriber was on.
                version = None
                while version is None:
                    with contextlib.suppress(StateError):
                        version = await policies.write(await policies.version(), {"p": "x"})
                    await asyncio.sleep(0.05)
                heard = None
                while heard != version:
                    heard = await anext(changes)
        finally:
            await changes.aclose()
            await state.close()
            await policies.close()


async def test_sentinel_names_the_master_and_a_failover_keeps_the_count() -> None:
    with RedisSentinelGroup() as group:
        # A generous bound: what is proved is the count across a failover, not the latency.
        state = RedisState.from_url(group.url, timeout_s=5.0)
        spec = LimitSpec("rl:user:carol:r1:requests", 3, 3600.0)
        try:
            async with asyncio.timeout(HANG_GUARD_S):
                results = [await state.admit(ORG, f"s{i}", [spec], now=T0) for i in range(2)]
                assert all(r.admitted for r in results)
                # wait until the replica has both writes, then let the Sentinel promote it
                while not await asyncio.to_thread(group.replicated):
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(group.failover)  # the old master refuses writes now
                admitted = [(await _admit_retried(state, f"t{i}", spec)) for i in range(2)]
                assert admitted == [True, False]  # the promoted replica had the count
        finally:
            await state.close()


async def _admit_retried(state: RedisState, request_id: str, spec: LimitSpec) -> bool:
    """Admit, asked again while the client still talks to the old master: it refuses the
    script before running it (READONLY), so no attempt that failed was counted."""
    while True:
        try:
            return (await state.admit(ORG, request_id, [spec], now=T0)).admitted
        except StateError:
            await asyncio.sleep(0.1)
