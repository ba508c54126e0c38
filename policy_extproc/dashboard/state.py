"""The dashboard's running state: configuration, the admin client, sessions, decisions, policies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from ..admin.auth import Identities
from .client import AdminClient
from .decisions import DEFAULT_MAX, DecisionIndex, LiveFeed, RedisFeed
from .policies import PolicySet, rows_of
from .security import Sessions
from .spend import Spend, compute, since

log = logging.getLogger(__name__)
SPEND_CACHE_S = 2.0


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """Every field is a flag of ``policy-extproc dashboard`` and an environment variable."""

    admin: str = "127.0.0.1:50052"
    listen: str = "127.0.0.1:8080"
    redis: str | None = None
    trace_url_template: str | None = None  # e.g. http://jaeger:16686/trace/{trace_id}
    admin_token: str | None = None  # POLICY_EXTPROC_ADMIN_TOKEN(_FILE): one admin token
    admin_tokens: str | None = None  # the same name:role:token file or Secret as the sidecar
    max_decisions: int = DEFAULT_MAX
    budget_time_zone: str = "UTC"


class Dashboard:
    """What every request handler shares."""

    def __init__(self, config: DashboardConfig, identities: Identities) -> None:
        self.config = config
        self.identities = identities
        self.sessions = Sessions(identities)
        self.admin = AdminClient(config.admin)
        self.index = DecisionIndex(config.max_decisions)
        self._policies: PolicySet | None = None
        self._lock = asyncio.Lock()
        self._spend: tuple[float, int, str, Spend] | None = None
        self._feed: RedisFeed | LiveFeed | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def reader_token(self) -> str | None:
        """The token the dashboard reads the live stream with (the least role that may)."""
        return self.config.admin_token or self.identities.first("viewer")

    async def start(self) -> None:
        if self.config.redis:
            self._feed = RedisFeed(self.config.redis, self.index)
        else:
            self._feed = LiveFeed(self.admin, self.reader_token, self.index)
        self._task = asyncio.create_task(self._feed.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._feed is not None:
            await self._feed.close()
        await self.admin.close()

    async def policies(self, token: str | None) -> PolicySet:
        """The policies in force, re-read only when their version changed."""
        listing = await self.admin.list_policies(token)
        cached = self._policies
        if cached is not None and cached.version == listing.version:
            return cached
        async with self._lock:
            if self._policies is not None and self._policies.version == listing.version:
                return self._policies
            rows = rows_of(listing)
            # One GetPolicy per file (a file's text holds all its policies) or pushed policy.
            first_of: dict[str, str] = {}
            for r in rows:
                first_of.setdefault(r.file, r.name)
            got = await asyncio.gather(
                *(self.admin.get_policy(name, token) for name in first_of.values())
            )
            texts = {file: g.text for file, g in zip(first_of, got, strict=True)}
            # Parsing a hundred policies is CPU work: off the event loop.
            self._policies = await asyncio.to_thread(PolicySet, listing.version, texts, rows)
            self._policies.last_error = list(listing.last_error)
            return self._policies

    async def spend(self, policies: PolicySet | None) -> Spend:
        """The spend figures, recomputed at most every 2 s (or when the policies change)."""
        now = time.monotonic()
        version = policies.version if policies is not None else ""
        cached = self._spend
        if cached is not None and now - cached[0] < SPEND_CACHE_S and cached[2] == version:
            return cached[3]
        # One pass over a month of decisions: in a thread, so the live tail keeps answering.
        tz = self.config.budget_time_zone
        wall = time.time()
        entries = list(self.index.since(since(wall, tz)))  # here: the feed appends on this loop
        figures = await asyncio.to_thread(compute, entries, policies, now=wall, tz=tz)
        self._spend = (now, self.index.version, version, figures)
        return figures
