"""The pushed-policy repository on Redis, shared by every replica.

Keys (one Redis Cluster hash slot, ``{policies}``): ``pe:{policies}:texts``, a hash of policy
name -> policy text, and ``pe:{policies}:version``, the change counter. A write is one Lua
script (``lua/policies_write.lua``): compare the version, change the hash, raise the version,
and PUBLISH it on ``pe:{policies}:changed``, so every replica hears of it at once. Unlike the
counters of ``redis.py`` these keys never expire: they are configuration, so the Redis that
holds them should persist (AOF or RDB); a replica that finds them gone writes back what it holds
(see ``admin.pushed``).

Pub/sub delivers at most once: a replica that was disconnected missed what was said meanwhile,
so ``changes`` yields None after every (re)subscription, and the caller re-reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from policy_extproc.errors import StateError
from policy_extproc.state import connect
from policy_extproc.state.policies import Pushed

log = logging.getLogger(__name__)

PREFIX = "pe:{policies}:"
TEXTS = PREFIX + "texts"
VERSION = PREFIX + "version"
CHANNEL = PREFIX + "changed"

# Admin calls and background refreshes, never the request path: a generous bound.
DEFAULT_TIMEOUT_S = 2.0
# Seconds between attempts to subscribe again after the connection was lost.
RECONNECT_S = 0.5
# A PING on the subscribed connection this often notices a connection that died quietly.
HEALTH_CHECK_S = 5

T = TypeVar("T")


class RedisPolicies:
    """PolicyRepository on Redis, with change announcements on a pub/sub channel."""

    def __init__(self, client: connect.Client, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._client = client
        self._timeout_s = timeout_s
        lua = resources.files("policy_extproc.state").joinpath("lua")
        self._write = client.register_script(lua.joinpath("policies_write.lua").read_text("utf-8"))
        self._read = client.register_script(lua.joinpath("policies_read.lua").read_text("utf-8"))

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> RedisPolicies:
        """Connect lazily to ``url``; a connection of its own, apart from the state counters'."""
        target = connect.parse(url)
        client = connect.client(
            target, timeout_s=timeout_s, max_connections=8, health_check_s=HEALTH_CHECK_S
        )
        return cls(client, timeout_s=timeout_s)

    async def _run(self, what: str, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout_s):
                await connect.ready(self._client)
                return await call
        except (TimeoutError, RedisTimeoutError) as exc:
            raise StateError(f"redis {what}: no answer within {self._timeout_s:g} s") from exc
        except (RedisError, OSError) as exc:
            raise StateError(f"redis {what}: {exc}") from exc

    async def read(self) -> Pushed:
        """Every pushed policy and their version, read in one atomic step."""
        version, flat = await self._run("read policies", self._read(keys=[TEXTS, VERSION]))
        texts: dict[str, str] = dict(zip(flat[::2], flat[1::2], strict=True))
        return Pushed(int(version), texts)

    async def version(self) -> int:
        """The current version (0 when nothing was ever pushed, or Redis lost it)."""
        return int(await self._run("policy version", self._client.get(VERSION)) or 0)

    async def write(
        self, expected: int, put: Mapping[str, str], delete: Sequence[str] = ()
    ) -> int | None:
        """Store ``put``, remove ``delete`` if still at ``expected``: the new version, else None."""
        args: list[Any] = [expected, CHANNEL, len(put)]
        for name, text in put.items():
            args += (name, text)
        args += delete
        call = self._write(keys=[TEXTS, VERSION], args=args)
        done, version = await self._run("write policies", call)
        return int(version) if int(done) else None

    async def changes(self) -> AsyncIterator[int | None]:
        """Announced versions; None after each (re)subscription, when news may have been missed.

        Never ends on its own: a lost connection is logged and subscribed again.
        """
        while True:
            pubsub: PubSub | None = None
            try:
                await self._run("subscribe", connect.ready(self._client))
                pubsub = self._client.pubsub()
                await self._subscribe(pubsub)
                yield None
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        yield _version(msg.get("data"))
            except (RedisError, OSError, TimeoutError, StateError) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc  # a stop, seen as a read timeout
                log.warning("policy announcements: %s; subscribing again", exc)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()
            await asyncio.sleep(RECONNECT_S)

    async def _subscribe(self, pubsub: PubSub) -> None:
        # Wait for Redis to confirm: only then is every later PUBLISH sure to reach us, and a
        # read made after this one sees everything published before it.
        async with asyncio.timeout(self._timeout_s):
            await pubsub.subscribe(CHANNEL)
            while True:
                msg = await pubsub.get_message(timeout=self._timeout_s)
                if msg is not None and msg.get("type") == "subscribe":
                    return

    async def close(self) -> None:
        """Close every pooled connection."""
        try:
            await self._client.aclose()
        except (RedisError, OSError) as exc:
            raise StateError(f"redis close: {exc}") from exc


def _version(data: Any) -> int | None:
    try:
        return int(data)
    except (TypeError, ValueError):
        return None  # not ours: re-read to be sure
