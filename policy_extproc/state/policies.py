"""The policy repository: where policies pushed through the admin API are kept.

Two implementations: ``MemoryPolicies`` (one replica; lost on restart, like the in-memory
counters) and ``redis_policies.RedisPolicies`` (shared by every replica, which hear of each
change on a pub/sub channel). Both keep a change counter, ``version``, that every write raises
by one; a write names the version it was validated against and is refused (``None``) if the
repository moved on since, so two admins pushing at once through two replicas cannot store a
combination that nobody validated.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Pushed:
    """The pushed policies at one repository version: policy name -> policy text."""

    version: int
    texts: Mapping[str, str] = field(default_factory=dict)


class PolicyRepository(Protocol):
    """Pushed policies by name, a change counter, and news of changes."""

    async def read(self) -> Pushed:
        """Every pushed policy and the version they are at (one consistent read)."""
        ...

    async def version(self) -> int:
        """The current version alone (cheap: for polling)."""
        ...

    async def write(
        self, expected: int, put: Mapping[str, str], delete: Sequence[str] = ()
    ) -> int | None:
        """Store ``put``, remove ``delete`` if still at ``expected``: the new version, else None."""
        ...

    def changes(self) -> AsyncIterator[int | None]:
        """Versions announced by writers; None when some may have been missed (reconnected)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryPolicies:
    """PolicyRepository in this process (the single-replica default, and the test double)."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}
        self._version = 0
        self._listeners: list[asyncio.Queue[int | None]] = []

    async def read(self) -> Pushed:
        """Every pushed policy and the version they are at."""
        return Pushed(self._version, dict(self._texts))

    async def version(self) -> int:
        """The current version."""
        return self._version

    async def write(
        self, expected: int, put: Mapping[str, str], delete: Sequence[str] = ()
    ) -> int | None:
        """Store ``put``, remove ``delete`` if still at ``expected``: the new version, else None."""
        if expected != self._version:
            return None
        self._texts.update(put)
        for name in delete:
            self._texts.pop(name, None)
        self._version += 1
        for queue in self._listeners:
            queue.put_nowait(self._version)
        return self._version

    async def changes(self) -> AsyncIterator[int | None]:
        """Each version written from now on."""
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            yield None
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(queue)

    async def close(self) -> None:
        """Nothing to release."""
