"""The pushed-policy repository on a real Redis: conditional writes, announcements, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from policy_extproc.admin.pushed import PushedPolicies
from policy_extproc.errors import StateError
from policy_extproc.sources.store import PolicyStore
from policy_extproc.state.redis_policies import CHANNEL, TEXTS, VERSION, RedisPolicies
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

BASE = """
policy_name: acme_base
org: acme
rules: [{type: content_filter, id: secrets, keywords: [confidential]}]
"""

TEAM = """
policy_name: acme_ml
org: acme
team: ml
rules: [{type: content_filter, id: words, keywords: [classified]}]
"""


@pytest.fixture
async def repo(redis_url: str) -> AsyncIterator[RedisPolicies]:
    r = RedisPolicies.from_url(redis_url)
    yield r
    await r.close()


async def next_change(changes: AsyncIterator[int | None]) -> int | None:
    async with asyncio.timeout(10):  # a safety net, not a claim about speed
        return await anext(changes)


async def test_writes_are_conditional_on_the_version(repo: RedisPolicies) -> None:
    assert (await repo.read()).version == 0
    assert await repo.write(0, {"a": "text a", "b": "text b"}) == 1
    assert await repo.write(0, {"c": "lost race"}) is None
    assert await repo.write(1, {"a": "text a2"}, ["b"]) == 2
    pushed = await repo.read()
    assert (pushed.version, dict(pushed.texts)) == (2, {"a": "text a2"})
    assert await repo.version() == 2


async def test_keys_share_one_hash_slot_with_the_pe_prefix() -> None:
    for key in (TEXTS, VERSION, CHANNEL):
        assert key.startswith("pe:{policies}:")


async def test_writes_are_announced(repo: RedisPolicies, redis_url: str) -> None:
    changes = repo.changes()
    assert await next_change(changes) is None  # subscribed: re-read now
    other = RedisPolicies.from_url(redis_url)
    await other.write(0, {"a": "text"})
    await other.write(1, {"b": "text"})
    assert [await next_change(changes), await next_change(changes)] == [1, 2]
    await changes.aclose()  # type: ignore[attr-defined]
    await other.close()


async def test_an_unreachable_redis_is_a_state_error(own_redis: RedisServer) -> None:
    repo = RedisPolicies.from_url(own_redis.url, timeout_s=0.5)
    await asyncio.to_thread(own_redis.kill)
    with pytest.raises(StateError, match="redis read policies"):
        await repo.read()
    with pytest.raises(StateError):
        await repo.write(0, {"a": "x"})
    await repo.close()


async def test_announcements_resume_after_redis_restarts(own_redis: RedisServer) -> None:
    repo = RedisPolicies.from_url(own_redis.url)
    changes = repo.changes()
    assert await next_change(changes) is None
    await asyncio.to_thread(own_redis.restart)  # killed, then empty on the same port
    # After the reconnection: None (news may have been missed), then announcements again.
    assert await next_change(changes) is None
    await repo.write(0, {"a": "text"})
    assert await next_change(changes) == 1
    await changes.aclose()  # type: ignore[attr-defined]
    await repo.close()


async def test_a_replica_writes_back_what_a_restarted_redis_lost(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    repo = RedisPolicies.from_url(own_redis.url)
    pushed = PushedPolicies(PolicyStore([str(tmp_path)]), repo, poll_s=0.05)
    await pushed.start()
    try:
        await pushed.put(TEAM, "team.yaml")
        await asyncio.to_thread(own_redis.restart)  # no persistence: the hash is gone
        client = redis.Redis.from_url(own_redis.url, decode_responses=True)
        async with asyncio.timeout(10):
            while not client.hexists(TEXTS, "acme_ml"):
                await asyncio.sleep(0.02)
        assert client.hget(TEXTS, "acme_ml") == TEAM
        client.close()
        names = [cp.policy.name for cp in pushed.store.current.policies]
        assert names == ["acme_base", "acme_ml"]  # never dropped meanwhile
    finally:
        await pushed.stop()
        await repo.close()
