"""The decisions the dashboard can show: an in-memory index of the shared stream, searchable.

With Redis, the index is filled from the capped stream every sidecar appends to (the last
``maxlen`` entries at start, then each new one as it arrives), so it holds the decisions of all
replicas. Without Redis, it is fed by one replica's ``WatchDecisions`` stream from the moment the
dashboard starts. Each entry keeps the fields searched on, and the record's JSON for its page.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import operator
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..audit.record import timestamp_ns
from ..audit.stream import STREAM_KEY, decode_entry

log = logging.getLogger(__name__)

DEFAULT_MAX = 100_000
_intern = sys.intern


@dataclass(frozen=True, slots=True)
class Entry:
    """One decision: what is searched on, and the whole record (its JSON)."""

    id: str
    ts: float  # epoch seconds of the record's timestamp
    request_id: str
    user: str
    org: str
    team: str
    environment: str
    decision: str
    policy: str
    rules: tuple[str, ...]  # "policy/rule" of every rule that fired, and the deciding rule
    phase: str
    model: str
    cost_usd: float
    tokens: int
    reason: str
    raw: bytes

    def record(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.raw)
        return data

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def entry_of(entry_id: str, data: Mapping[str, Any], raw: bytes | None = None) -> Entry | None:
    """An index entry from a record dict (``AuditRecord.to_dict``) and its JSON if at hand;
    None if it is not a record."""
    try:
        ts = timestamp_ns(str(data["timestamp"])) / 1e9
    except (KeyError, ValueError, TypeError):
        return None
    fired = data.get("fired") or []
    rules = {f"{f.get('policy')}/{f.get('rule')}" for f in fired if isinstance(f, dict)}
    if data.get("policy") and data.get("rule"):
        rules.add(f"{data['policy']}/{data['rule']}")
    usage = data.get("usage") or {}
    tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)

    def s(key: str) -> str:
        return _intern(str(data.get(key) or ""))

    return Entry(
        id=entry_id,
        ts=ts,
        request_id=str(data.get("request_id") or ""),
        user=s("user"),
        org=s("org"),
        team=s("team"),
        environment=s("environment"),
        decision=s("decision"),
        policy=s("policy"),
        rules=tuple(sorted(_intern(r) for r in rules)),
        phase=s("phase") or "request",
        model=s("model"),
        cost_usd=float(data.get("cost_usd") or 0.0),
        tokens=tokens,
        reason=str(data.get("reason") or ""),
        raw=raw if raw is not None else json.dumps(data, separators=(",", ":")).encode(),
    )


@dataclass(frozen=True, slots=True)
class Query:
    """A search; empty fields match everything. ``rule`` matches ``rule`` or ``policy/rule``."""

    request_id: str = ""
    user: str = ""
    org: str = ""
    team: str = ""
    decision: str = ""
    policy: str = ""
    rule: str = ""
    since: float | None = None
    until: float | None = None

    def matches(self, e: Entry) -> bool:
        if self.request_id and e.request_id != self.request_id:
            return False
        if self.user and e.user != self.user:
            return False
        if self.org and e.org != self.org:
            return False
        if self.team and e.team != self.team:
            return False
        if self.decision and e.decision != self.decision:
            return False
        if (
            self.policy
            and e.policy != self.policy
            and not any(r.startswith(f"{self.policy}/") for r in e.rules)
        ):
            return False
        if self.rule and not any(r == self.rule or r.endswith(f"/{self.rule}") for r in e.rules):
            return False
        if self.since is not None and e.ts < self.since:
            return False
        return self.until is None or e.ts <= self.until


class DecisionIndex:
    """The newest ``maxlen`` decisions, newest last; ``version`` grows with every one added."""

    def __init__(self, maxlen: int = DEFAULT_MAX) -> None:
        self.maxlen = maxlen
        self._entries: deque[Entry] = deque(maxlen=maxlen)
        self._by_id: dict[str, Entry] = {}
        self._by_request: dict[str, list[Entry]] = {}
        self.version = 0
        self.source = "none"
        self.loaded = False  # the backlog is read (until then pages say they are loading)
        self.error: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: Entry) -> None:
        if len(self._entries) == self.maxlen:
            old = self._entries[0]
            self._by_id.pop(old.id, None)
            same = self._by_request.get(old.request_id)
            if same:
                same.remove(old)
                if not same:
                    del self._by_request[old.request_id]
        self._entries.append(entry)
        self._by_id[entry.id] = entry
        self._by_request.setdefault(entry.request_id, []).append(entry)
        self.version += 1

    def get(self, entry_id: str) -> Entry | None:
        return self._by_id.get(entry_id)

    def newest(self) -> Iterator[Entry]:
        return reversed(self._entries)

    def search(self, query: Query, limit: int = 100) -> list[Entry]:
        """The newest entries matching ``query``, newest first."""
        if query.request_id:  # the common lookup: straight from its own index
            found = reversed(self._by_request.get(query.request_id, ()))
            return [e for e in found if query.matches(e)][:limit]
        candidates: Iterable[Entry] = self.newest()
        if query.until is not None:
            until = query.until
            candidates = itertools.dropwhile(lambda e: e.ts > until, candidates)
        if query.since is not None:
            since = query.since
            candidates = itertools.takewhile(lambda e: e.ts >= since, candidates)
        exact = [(k, getattr(query, k)) for k in _EXACT if getattr(query, k)]
        if exact:
            # One C-level attribute fetch and tuple compare per entry: fast over 100,000.
            get = operator.attrgetter(*(k for k, _ in exact))
            want = tuple(v for _, v in exact) if len(exact) > 1 else exact[0][1]
            candidates = (e for e in candidates if get(e) == want)
        return list(itertools.islice((e for e in candidates if query.matches(e)), limit))

    def since(self, ts: float) -> Iterable[Entry]:
        """Entries at or after ``ts`` (newest first, stops at the first older one)."""
        return itertools.takewhile(lambda e: e.ts >= ts, self.newest())


_EXACT = ("user", "org", "team", "decision")


class RedisFeed:
    """Fills ``index`` from the shared Redis Stream: its backlog, then every new entry."""

    def __init__(self, url: str, index: DecisionIndex, key: str = STREAM_KEY) -> None:
        import redis.asyncio as aioredis

        # Reads block up to 1 s for news: the socket timeout must be longer than that.
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=10.0)
        self.index = index
        self.key = key
        index.source = "redis"

    async def run(self) -> None:
        last: str | None = None  # the newest entry id read; None: the backlog is still to read
        while True:
            try:
                if last is None:
                    last = await self._backfill()
                    self.index.loaded = True
                    # 100,000 entries are that many objects for the cyclic GC to walk on each
                    # full collection (pauses of a few hundred ms): they hold no cycles, so
                    # move what exists now out of its reach.
                    gc.freeze()
                while True:
                    got: Any = await self.client.xread({self.key: last}, count=1000, block=1000)
                    for _, entries in got or ():
                        for raw_id, fields in entries:
                            last = _text(raw_id)
                            entry = _parse(last, fields)
                            if entry is not None:
                                self.index.add(entry)
                    self.index.error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: say so on the page, retry
                _failed(self.index, f"Redis: {exc}")
                await asyncio.sleep(1.0)

    async def _backfill(self) -> str:
        """Read the newest entries the index can hold (newest first, in chunks), add them
        oldest first; the id of the newest, or 0-0 for an empty stream."""
        batch: list[tuple[Any, Any]] = []
        high = "+"
        while len(batch) < self.index.maxlen:
            count = min(5000, self.index.maxlen - len(batch))
            got = await self.client.xrevrange(self.key, max=high, min="-", count=count)
            if not got:
                break
            batch.extend(got)
            high = f"({_text(got[-1][0])}"  # exclusive: the next chunk starts below it
        if not batch:
            return "0-0"
        # Parsing 100,000 records takes a while: off the event loop, so pages keep answering.
        entries = await asyncio.to_thread(lambda: [_parse(_text(i), f) for i, f in batch])
        for entry in reversed(entries):
            if entry is not None:
                self.index.add(entry)
        return _text(batch[0][0])

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()


def _parse(entry_id: str, fields: Mapping[Any, Any]) -> Entry | None:
    data = decode_entry(fields)
    if data is None:
        return None
    raw = fields.get(b"r", fields.get("r"))
    return entry_of(entry_id, data, raw if isinstance(raw, bytes) else None)


def _failed(index: DecisionIndex, message: str) -> None:
    if message != index.error:  # one line per outage, not one a second
        log.warning("decision feed: %s; retrying every second", message)
    index.error = message


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LiveFeed:
    """Fills ``index`` from one replica's WatchDecisions stream (no Redis)."""

    def __init__(self, admin: Any, token: str | None, index: DecisionIndex) -> None:
        self.admin = admin
        self.token = token
        self.index = index
        self._n = 0
        index.source = "live"
        index.loaded = True  # nothing to read back: the live stream starts now

    async def run(self) -> None:
        from google.protobuf.json_format import MessageToDict

        while True:
            try:
                call = self.admin.watch(self.token)
                await call.wait_for_connection()
                self.index.error = None
                async for msg in call:
                    data = MessageToDict(msg.record, preserving_proto_field_name=True)
                    self._n += 1
                    entry = entry_of(f"live-{self._n}", data)
                    if entry is not None:
                        self.index.add(entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the replica restarted, the token was refused, ...
                details = exc.details() if hasattr(exc, "details") else str(exc)
                _failed(self.index, f"live stream from {self.admin.address}: {details}")
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        return None
