"""The live decision stream: an audit sink that hands each record to the admin API's watchers.

``emit`` runs on the request path, so it never waits: each subscriber has a bounded queue, and a
subscriber that reads too slowly misses records, counted (``dropped``) and reported to it with
the next record it does read, instead of slowing down decisions or holding memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Collection, Mapping

from ..audit.record import AuditRecord
from ..policy.identity import canonical

QUEUE_SIZE = 1000


class Subscription:
    """One watcher: its filters, its queue, and how many records it has missed."""

    def __init__(
        self,
        live: LiveDecisions,
        org: str | None,
        decisions: Collection[str],
        maxsize: int,
    ) -> None:
        # Records hold the canonical organisation (policy.identity): so does the filter.
        self.org = canonical(org) if org is not None else None
        self.decisions = frozenset(decisions)
        self.dropped = 0
        self._live = live
        self._queue: asyncio.Queue[AuditRecord | None] = asyncio.Queue(maxsize)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._ended = False

    def wants(self, record: AuditRecord) -> bool:
        return (self.org is None or record.org == self.org) and (
            not self.decisions or record.decision in self.decisions
        )

    def offer(self, record: AuditRecord) -> None:
        """Queue ``record`` if it passes the filters; never blocks."""
        if not self.wants(record):
            return
        if threading.get_ident() == self._thread:
            self._put(record)
            return
        # A sink may be called from a worker thread; asyncio queues belong to their loop.
        with contextlib.suppress(RuntimeError):  # the loop is closed: the watcher is gone
            self._loop.call_soon_threadsafe(self._put, record)

    def _put(self, record: AuditRecord) -> None:
        if self._ended:
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            self._live.dropped += 1

    def end(self) -> None:
        """Finish the stream once the records already queued are read."""
        if self._ended:
            return
        self._ended = True
        if self._queue.full():
            self._queue.get_nowait()  # make room for the end mark; one more record missed
            self.dropped += 1
        self._queue.put_nowait(None)

    def close(self) -> None:
        """Stop receiving records (the watcher went away)."""
        self._ended = True
        self._live.unsubscribe(self)

    async def records(self) -> AsyncIterator[tuple[AuditRecord, int]]:
        """Each record with the number missed so far, until ``end``."""
        while (record := await self._queue.get()) is not None:
            yield record, self.dropped


class LiveDecisions:
    """An ``AuditSink`` fanning records out to subscribers; put it last among the sinks."""

    def __init__(self, maxsize: int = QUEUE_SIZE) -> None:
        self.maxsize = maxsize
        self.dropped = 0  # records missed by slow subscribers, all together
        # Replaced, never mutated: emit iterates a tuple that no subscribe can change under it.
        self._subscribers: tuple[Subscription, ...] = ()
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, *, org: str | None = None, decisions: Collection[str] = ()) -> Subscription:
        """A new watcher (call from the event loop); records emitted from now on reach it."""
        sub = Subscription(self, org, decisions, self.maxsize)
        if self._closed:
            sub.end()
        else:
            self._subscribers = (*self._subscribers, sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers = tuple(s for s in self._subscribers if s is not sub)

    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        """Offer ``record`` to every subscriber; never blocks and never raises."""
        for sub in self._subscribers:
            sub.offer(record)

    def close(self) -> None:
        """End every subscriber's stream (server shutdown)."""
        self._closed = True
        for sub in self._subscribers:
            sub.end()
        self._subscribers = ()
