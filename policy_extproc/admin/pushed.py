"""Policies pushed through the admin API: validated, stored, and followed on every replica.

A push is validated as ``check`` validates files, against the whole would-be set (the policy
files, every other pushed policy, and the new text under the caller's file name), and stored
only when that set loads. The repository's version makes the store conditional: if another
replica changed the repository after we read it, we read and validate again.

Every replica follows the repository: on each announced change, after each reconnection (news
may have been lost), and on a poll every few seconds as a safety net, it re-reads the pushed
policies and recompiles in a worker thread (never on the event loop that serves requests),
then swaps the new snapshot in atomically. Requests in flight keep the snapshot they started with.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import AdminError, PolicyError, StateError
from ..policy.compiler import Snapshot
from ..policy.yamlsource import SourceError, load_documents
from ..sources.store import PolicyStore, Source, is_pushed, pushed_file
from ..state.policies import PolicyRepository, Pushed
from .errors import Conflict, NotFound

log = logging.getLogger(__name__)

POLL_S = 5.0
# Conditional writes that lost a race with another replica are validated again, this often.
WRITE_ATTEMPTS = 5
# At start-up the repository is read before serving: pushed policies may be the strict ones,
# and a replica that serves without them would fail open. Wait a little for Redis, then give up.
START_ATTEMPTS = 5
START_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class Change:
    """What a push or delete did, and the policy set in force here after it."""

    names: tuple[str, ...]
    version: str  # content hash of the snapshot in force on this replica
    repository_version: int


def sources(texts: Mapping[str, str]) -> list[Source]:
    """Pushed policies as loader sources, each under the file name ``pushed:<name>``."""
    return [(pushed_file(name), text) for name, text in sorted(texts.items())]


def split(text: str) -> dict[str, str]:
    """Policy name -> text to store: the text itself when it holds one policy, else each as JSON.

    Only named mappings are returned; the validation of the whole text reports the rest.
    """
    items: list[Any] = []
    for doc in load_documents(text):
        items.extend(doc if isinstance(doc, list) else [doc])
    named = {
        item["policy_name"]: item
        for item in items
        if isinstance(item, dict) and isinstance(item.get("policy_name"), str)
    }
    if len(items) == 1 and len(named) == 1:
        return {name: text for name in named}  # as written: comments and layout kept
    # JSON rather than re-dumped YAML: no implicit typing can change a value on the way back.
    return {
        name: json.dumps(item, indent=2, ensure_ascii=False, default=str) + "\n"
        for name, item in named.items()
    }


class PushedPolicies:
    """The pushed half of the policy set: the repository as applied here, and changes to it."""

    def __init__(
        self, store: PolicyStore, repository: PolicyRepository, *, poll_s: float = POLL_S
    ) -> None:
        self.store = store
        self.repository = repository
        self.poll_s = poll_s
        self.applied = -1  # repository version last applied here (or refused: see _apply)
        self.texts: dict[str, str] = {}
        self._write_lock = asyncio.Lock()  # one validate-and-store at a time per replica
        self._refresh_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Snapshot:
        """Read the pushed policies, load them with the files (PolicyError), then follow."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                pushed = await self.repository.read()
                break
            except StateError as exc:
                if attempt == START_ATTEMPTS:
                    raise StateError(f"cannot read the pushed policies: {exc}") from exc
                log.warning("cannot read the pushed policies (%s); retrying", exc)
                await asyncio.sleep(START_RETRY_S)
        self._use(pushed)
        snapshot = await asyncio.to_thread(self.store.load)
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._poll())]
        return snapshot

    async def stop(self) -> None:
        """Stop following the repository (the caller closes it)."""
        for task in self._tasks:
            # A cancel can be lost inside a read with a timeout of its own (the client's, on
            # Python 3.11, may turn it into a TimeoutError that the loop retries): ask again.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
            if not task.cancelled() and task.exception() is not None:
                log.warning("policy follower ended with %r", task.exception())
        self._tasks = []

    # -- changes made here -------------------------------------------------------------------

    async def put(self, text: str, file_name: str = "pushed") -> Change:
        """Add or replace the policies of ``text``; PolicyError lists every problem as check."""
        try:
            entries = split(text)
        except SourceError:
            entries = {}  # the validation below reports where the text is broken
        async with self._write_lock:
            for _ in range(WRITE_ATTEMPTS):
                pushed = await self._read_current()
                others = {n: t for n, t in pushed.texts.items() if n not in entries}
                await asyncio.to_thread(self.store.compile, [*sources(others), (file_name, text)])
                if not entries:
                    raise AdminError(f"{file_name}: no policy found in the text")
                new = {**others, **entries}
                if len(entries) > 1:  # split and re-written: check what will be stored, too
                    await asyncio.to_thread(self.store.compile, sources(new))
                version = await self.repository.write(pushed.version, entries)
                if version is not None:
                    await self._apply_own(Pushed(version, new))
                    return Change(tuple(entries), self.store.current.version, version)
        raise Conflict("the policy repository kept changing while this push was validated; retry")

    async def delete(self, name: str) -> Change:
        """Remove the pushed policy ``name`` (NotFound; Conflict for a file policy)."""
        async with self._write_lock:
            for _ in range(WRITE_ATTEMPTS):
                pushed = await self._read_current()
                if name not in pushed.texts:
                    file = self.file_of(name)
                    if file is not None:
                        raise Conflict(f"policy {name!r} is defined in {file}; change it there")
                    raise NotFound(f"no pushed policy {name!r}")
                new = {n: t for n, t in pushed.texts.items() if n != name}
                await asyncio.to_thread(self.store.compile, sources(new))
                version = await self.repository.write(pushed.version, {}, [name])
                if version is not None:
                    await self._apply_own(Pushed(version, new))
                    return Change((name,), self.store.current.version, version)
        raise Conflict("the policy repository kept changing while this delete was validated; retry")

    def candidate(self, text: str, file_name: str = "pushed") -> Snapshot:
        """The set that pushing ``text`` would give, compiled and not stored (for dry runs)."""
        try:
            names = set(split(text))
        except SourceError:
            names = set()
        others = {n: t for n, t in self.texts.items() if n not in names}
        return self.store.compile([*sources(others), (file_name, text)])

    def file_of(self, name: str) -> str | None:
        """The file defining the file policy ``name`` in the set in force, if there is one."""
        for cp in self.store.current.policies:
            if cp.policy.name == name and not is_pushed(cp.policy):
                return cp.policy.file
        return None

    # -- following the repository --------------------------------------------------------------

    async def refresh(self, announced: int | None = None) -> None:
        """Re-read the repository and reload if it changed; ``announced``: a version heard of."""
        async with self._refresh_lock:
            if announced is not None and announced <= self.applied:
                return  # our own write, or one already read
            pushed = await self.repository.read()
            if pushed.version < self.applied:
                await self._restore(pushed)
            elif pushed.version > self.applied:
                await self._apply(pushed)

    async def _read_current(self) -> Pushed:
        pushed = await self.repository.read()
        if pushed.version < self.applied:
            await self.refresh()  # the repository lost its data: restore it first
            pushed = await self.repository.read()
        return pushed

    async def _apply_own(self, pushed: Pushed) -> None:
        async with self._refresh_lock:
            if pushed.version > self.applied:
                await self._apply(pushed)

    def _use(self, pushed: Pushed) -> None:
        self.texts = dict(pushed.texts)
        self.applied = pushed.version
        self.store.set_pushed(sources(pushed.texts))

    async def _apply(self, pushed: Pushed) -> None:
        # Marked applied even if refused here (this replica's files may clash with it): the
        # same version is not compiled again and again; the next change or file edit retries.
        self._use(pushed)
        try:
            snapshot = await asyncio.to_thread(self.store.load)
        except PolicyError as exc:
            log.error(
                "pushed policies at repository version %d refused here, still serving version "
                "%s:\n%s",
                pushed.version,
                self.store.current.version,
                exc,
            )
            return
        log.info(
            "pushed policies at repository version %d: serving version %s (%d policies)",
            pushed.version,
            snapshot.version,
            len(snapshot),
        )

    async def _restore(self, found: Pushed) -> None:
        # The counter went back: the repository lost its data (a Redis restarted without
        # persistence). What this replica holds was validated and agreed on; dropping it would
        # quietly lift every pushed rule, so write it back instead.
        log.error(
            "the policy repository went back from version %d to %d (its data was lost?); "
            "writing back the %d pushed policies held here",
            self.applied,
            found.version,
            len(self.texts),
        )
        stale = [name for name in found.texts if name not in self.texts]
        version = await self.repository.write(found.version, self.texts, stale)
        if version is not None:
            self.applied = version

    async def _follow(self) -> None:
        async for announced in self.repository.changes():
            await self._refresh_logged(announced)

    async def _poll(self) -> None:
        # Pub/sub delivers at most once; a poll of the version catches a lost announcement.
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                if await self.repository.version() != self.applied:
                    await self.refresh()
            except StateError as exc:
                log.warning("policy repository poll: %s", exc)
            except Exception:
                log.exception("policy repository poll failed")

    async def _refresh_logged(self, announced: int | None) -> None:
        try:
            await self.refresh(announced)
        except StateError as exc:
            log.warning("policy repository: %s (retried at the next change or poll)", exc)
        except Exception:
            log.exception("policy refresh failed")
