"""Hyperscan scratch space, one per concurrent scan, without a thread in the core.

A scan needs scratch space that no other scan is using at the same time: Hyperscan answers
``HS_SCRATCH_IN_USE`` (``hyperscan.ScratchInUseError``) otherwise. The scan releases the GIL,
so two threads scanning one database with the database's own scratch (``Database.scan``
without ``scratch=``) fail; the admin ``Evaluate`` RPC scans the live snapshot in a worker
thread while the event loop scans it too.

``ScratchPool`` keeps the scratches that are free in a list: a scan pops one (or clones a new
one when every scratch is busy) and puts it back when done. ``list.pop`` and ``list.append`` are
atomic, so no lock and no ``threading.local`` is needed, and the pool holds as many scratches as
there were scans at once, no more.
"""

from __future__ import annotations

from collections.abc import Callable

import hyperscan

MatchHandler = Callable[[int, int, int, int, object], bool | None]  # True stops the scan


class ScratchPool:
    """Scans one database with a scratch no other scan holds at the same time."""

    __slots__ = ("_db", "_free", "_prototype")

    def __init__(self, db: hyperscan.Database) -> None:
        self._db = db
        self._prototype = hyperscan.Scratch(db)
        self._free: list[hyperscan.Scratch] = [self._prototype.clone()]

    def scan(self, data: bytes, handler: MatchHandler) -> None:
        try:
            scratch = self._free.pop()
        except IndexError:  # every scratch is in a scan: one more
            scratch = self._prototype.clone()
        try:
            self._db.scan(data, match_event_handler=handler, scratch=scratch)
        finally:
            self._free.append(scratch)

    @property
    def size(self) -> int:
        """How many scratches the pool holds now (the scans that were in flight at once)."""
        return len(self._free)
