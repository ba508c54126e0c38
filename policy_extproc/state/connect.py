"""Which Redis to talk to: one URL names a single server, a Redis Cluster or a Sentinel group.

- ``redis://[user:pass@]host:port/db``, ``rediss://...``, ``unix://...``: one server;
- ``redis+cluster://[user:pass@]host:port[,host:port...]`` (``rediss+cluster://`` with TLS): a
  Redis Cluster, found from any of the seed nodes; redis-py's ``RedisCluster`` follows
  ``MOVED``/``ASK`` redirections and slot changes after a failover;
- ``redis+sentinel://[user:pass@]host:port[,host:port...]/service[/db]``: the master that the
  Sentinels name for ``service``; redis-py's ``Sentinel`` asks again after a failover.

Every key of one Lua script shares a hash tag (``{org}``, ``{approvals}``, ``{policies}``,
``{breaker:<provider>}``), so each script runs on one cluster node.

No client retries a command: a retried admit could consume twice. Redirections are not retries
(a node that answers ``MOVED`` ran nothing), so the cluster client still follows those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from policy_extproc.errors import StateError

Kind = Literal["single", "cluster", "sentinel"]
# Either client answers the commands we use; redis-py types them apart.
Client = Any


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``--redis`` URL."""

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse(url: str) -> RedisTarget:
    """Read a ``--redis`` URL; StateError names what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget("single", url)
    base, _, kind = scheme.partition("+")
    if base not in ("redis", "rediss") or kind not in ("cluster", "sentinel"):
        raise StateError(
            f"--redis {url!r}: the scheme must be redis://, rediss://, unix://, "
            "redis+cluster:// or redis+sentinel://"
        )
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = tuple(_node(url, item) for item in hosts.split(",") if item)
    if not nodes:
        raise StateError(f"--redis {url!r}: no host:port given")
    path = [p for p in parts.path.split("/") if p]
    service, db = None, 0
    if kind == "sentinel":
        if not path:
            raise StateError(f"--redis {url!r}: name the Sentinel service: .../<service>[/db]")
        service = unquote(path[0])
        db = _db(url, path[1:])
    elif path:
        raise StateError(f"--redis {url!r}: a Redis Cluster has no database number")
    return RedisTarget(
        "cluster" if kind == "cluster" else "sentinel",
        url,
        nodes,
        service,
        db,
        unquote(username) or None,
        unquote(password) or None,
        base == "rediss",
    )


def client(
    target: RedisTarget,
    *,
    timeout_s: float,
    max_connections: int = 64,
    health_check_s: float = 0,
) -> Client:
    """A lazily connecting client for ``target``: nothing is sent before the first command."""
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
        "health_check_interval": health_check_s,
    }
    if target.kind == "single":
        pool = BlockingConnectionPool.from_url(
            target.url,
            max_connections=max_connections,
            timeout=timeout_s,  # waiting for a free connection counts against the bound
            **common,
        )
        return Redis.from_pool(pool)  # the client owns the pool
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            max_connections=max_connections,
            ssl=target.tls,
            **auth,
            **common,
        )
    assert target.service is not None
    sentinel = Sentinel(
        list(target.nodes),
        sentinel_kwargs={
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "ssl": target.tls,
            **auth,
        },
        ssl=target.tls,
        **auth,
    )
    return sentinel.master_for(
        target.service, db=target.db, max_connections=max_connections, **common
    )


async def ready(redis: Client) -> None:
    """Learn the cluster's slots before a command is sent (a no-op for other clients).

    redis-py's cluster client resolves where a command goes before it has learnt the slots, so
    commands sent concurrently on first use can go to the wrong node and fail; initialising
    first (under the client's own lock, a no-op once done) avoids that.
    """
    if isinstance(redis, RedisCluster):
        await redis.initialize()


def _node(url: str, item: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep:
        host, port = item, "6379"
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StateError(f"--redis {url!r}: {item!r} is not host:port")
    return host, int(port)


def _db(url: str, rest: list[str]) -> int:
    if not rest:
        return 0
    if len(rest) > 1 or not rest[0].isdigit():
        raise StateError(f"--redis {url!r}: expected .../<service>/<db number>")
    return int(rest[0])
