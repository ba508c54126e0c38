"""Where the CPU work of deciding a request runs: in the loop, or in a worker process.

``WorkRunner`` examines a small body in the event loop and a large one in a worker process
(``WorkerPool``); what is examined, and the work budget, are ``enforce/examine.py``'s.

Why processes, not threads: the detectors are Python with Hyperscan scans in between; a thread
shares the GIL with the loop (every stream then waits up to ``sys.getswitchinterval`` at each
wake-up). A worker process compiles its own copy of the snapshot from the same policies and
keys (sent once per worker and build), and it can be stopped: a request over its time bound
is killed with its worker, not left running. Once the workers are warmed (``warm``: at start
and on every change, unless ``--offload-lazy``), a killed worker's replacement is started and
compiled at once, in the background, so the next large body does not compile it in its bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from ..errors import PolicyExtprocError, WorkBudgetExceeded
from ..llm.catalog import Catalog
from ..policy.compiler import Snapshot
from ..policy.context import DEFAULT_IDENTITY, IdentityConfig
from .examine import (
    DEFAULT_BUDGET,
    DEFAULT_OFFLOAD_BYTES,
    DEFAULT_TIMEOUT_S,
    EXTENSION_MARGIN_S,
    Examined,
    WorkSettings,
    _compact,
    check_budget,
    examine,
    scanners,
)

log = logging.getLogger(__name__)

WORKER_NICENESS = 10


# -- worker processes ----------------------------------------------------------------------------


def _worker_main(conn: Connection) -> None:
    """A worker: examine one request at a time until the parent closes the pipe."""
    # Ctrl-C and a closed terminal reach the whole group; the parent stops us (and a SIGHUP to
    # the sidecar is its audit log reopened, not the end of its workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    snapshots: dict[str, Snapshot] = {}
    while True:
        try:
            build, version, policies, job = conn.recv()
        except (EOFError, OSError):
            return
        snapshot = snapshots.get(build)
        try:
            if snapshot is None:
                snapshot = Snapshot(version=version, **pickle.loads(policies))  # _blob's
                if len(snapshots) >= 2:  # the older one goes (_Worker.keep mirrors this)
                    del snapshots[next(iter(snapshots))]
                snapshots[build] = snapshot
            if job is None:  # a warm-up: the snapshot is compiled, nothing to examine
                answer: tuple[str, Any] = ("ok", None)
            else:
                answer = ("ok", _compact(examine(snapshot, *job)))
        except PolicyExtprocError as exc:
            answer = ("error", exc)
        except Exception as exc:  # a bug of ours: named, not sent (it may not pickle)
            log.exception("worker: examining a request failed")
            answer = ("crash", type(exc).__name__)
        try:
            conn.send(answer)
        except (EOFError, OSError):
            return


def _roundtrip(conn: Connection, message: tuple[Any, ...]) -> tuple[str, Any]:
    conn.send(message)
    answer: tuple[str, Any] = conn.recv()
    return answer


class WorkerFailed(PolicyExtprocError):
    code = "internal_error"
    http_status = 500


@dataclass(slots=True, eq=False)  # by identity: kept in a set while it starts
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection
    builds: tuple[str, ...] = ()  # the two it compiled last (Snapshot.build), as it keeps them

    def keep(self, build: str) -> None:
        if build not in self.builds:
            self.builds = (*self.builds, build)[-2:]


class WorkerPool:
    """Worker processes, started on first use (or by ``warm``); one request at a time in each.

    Once warmed, a killed worker's replacement is started at once and compiles the snapshot
    last warmed, in the background and holding the killed one's slot: the next large body finds
    it warm instead of compiling within its own time bound (and, under load, being killed
    again for it). Not warmed (``--offload-lazy``), a replacement starts on next use.
    """

    def __init__(self, size: int, timeout_s: float) -> None:
        self.size = size
        self.timeout_s = timeout_s
        self._idle: list[_Worker] = []
        self._slots: asyncio.Semaphore | None = None  # made in the loop that uses it
        # Pipe I/O off the loop: a 3 MB send blocks until the worker has read it.
        self._threads = ThreadPoolExecutor(max_workers=size * 2, thread_name_prefix="work-io")
        self._blobs: dict[str, bytes] = {}
        self.started = 0  # worker processes started, killed ones' replacements included
        self.killed = 0
        self._warmed: Snapshot | None = None  # the last snapshot ``warm`` compiled
        self._replacing: set[asyncio.Task[None]] = set()
        self._starting: set[_Worker] = set()  # replacements not yet idle
        self._closed = False

    def _blob(self, snapshot: Snapshot) -> bytes:
        blob = self._blobs.get(snapshot.build)
        if blob is None:
            policies = [cp.policy for cp in snapshot.policies]  # and the keys: compiled alike
            blob = pickle.dumps({"policies": policies, "secrets": snapshot.secrets}, protocol=5)
            self._blobs = {snapshot.build: blob}
        return blob

    def _spawn(self) -> _Worker:
        # A fresh interpreter (not fork: the loop's threads and locks would be copied half-way;
        # not multiprocessing's spawn: it re-imports the parent's __main__), talking over a
        # socket pair with multiprocessing's framing. In a process group of its own: the
        # signals a terminal sends the sidecar's group (Ctrl-C, SIGHUP) never reach it, not
        # even while it starts; the sidecar stops it, and it ends when the pipe closes.
        parent, child = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_START, str(child.fileno())],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        finally:
            child.close()
        self.started += 1
        return _Worker(proc, Connection(parent.detach()))

    async def _acquire(self) -> _Worker:
        # One slot per worker: a request waits for a free one (behind other large bodies only).
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        await self._slots.acquire()
        if self._idle:
            return self._idle.pop()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, self._spawn)
        except BaseException:
            self._slots.release()
            raise

    def _release(self, w: _Worker) -> None:
        self._idle.append(w)
        assert self._slots is not None
        self._slots.release()

    def _stop(self, w: _Worker) -> None:
        w.process.kill()
        w.conn.close()
        if not self._closed:
            self._threads.submit(w.process.wait)  # reaped off the loop

    def _kill(self, w: _Worker) -> None:
        # The worker may be mid-way through a large body: stop it now. Its slot goes to the
        # replacement, warmed now if the pool is warmed, else started when next needed.
        self.killed += 1
        self._stop(w)
        assert self._slots is not None
        if self._warmed is None or self._closed:
            self._slots.release()
            return
        task = asyncio.get_running_loop().create_task(self._replace(self._warmed))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replace(self, snapshot: Snapshot) -> None:
        """Start a killed worker's replacement and compile ``snapshot`` in it (its slot held)."""
        assert self._slots is not None
        w: _Worker | None = None
        try:
            w = await asyncio.get_running_loop().run_in_executor(self._threads, self._spawn)
            self._starting.add(w)
            await self._compile(w, snapshot)
        except BaseException as exc:
            if w is not None:
                self._starting.discard(w)
                self._stop(w)
            self._slots.release()
            if not isinstance(exc, Exception):
                raise
            log.warning("could not warm the replacement of a killed worker process: %s", exc)
            return
        self._starting.discard(w)
        if self._closed:
            self._stop(w)
        else:
            self._release(w)

    async def replaced(self) -> None:
        """Wait for the replacements of killed workers to be warm (or to have failed)."""
        while self._replacing:
            await asyncio.gather(*self._replacing, return_exceptions=True)

    async def _compile(self, w: _Worker, snapshot: Snapshot) -> None:
        """Have ``w`` compile ``snapshot`` now (a warm-up: nothing to examine)."""
        message = (snapshot.build, snapshot.version, self._blob(snapshot), None)
        loop = asyncio.get_running_loop()
        kind, value = await loop.run_in_executor(self._threads, _roundtrip, w.conn, message)
        if kind == "ok":
            w.keep(snapshot.build)
        else:  # the worker lives on; the first request sends the policies again
            log.warning("a worker process could not compile the policies: %s", value)

    async def run(self, snapshot: Snapshot, job: tuple[Any, ...]) -> Examined:
        """``examine(snapshot, *job)`` in a worker, within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        w: _Worker | None = None

        async def attempt() -> tuple[str, Any]:
            nonlocal w
            w = await self._acquire()
            blob = None if snapshot.build in w.builds else self._blob(snapshot)
            message = (snapshot.build, snapshot.version, blob, job)
            return await loop.run_in_executor(self._threads, _roundtrip, w.conn, message)

        try:
            kind, value = await asyncio.wait_for(attempt(), self.timeout_s)
        except TimeoutError:
            if w is not None:
                self._kill(w)
            raise WorkBudgetExceeded(
                f"examining the request took more than {self.timeout_s:g} s, "
                "the limit for one request"
            ) from None
        except (EOFError, OSError) as exc:
            if w is not None:
                self._kill(w)
            raise WorkerFailed("internal error while examining the request") from exc
        except BaseException:  # cancelled: Envoy gave up, the client left; stop the work
            if w is not None:
                self._kill(w)
            raise
        assert w is not None
        if kind != "crash":  # it compiled the snapshot (a crash may have come before)
            w.keep(snapshot.build)
        self._release(w)
        if kind == "ok":
            result: Examined = value
            return result
        if kind == "error":
            raise value
        raise WorkerFailed("internal error while examining the request")

    def compiled(self) -> set[str]:
        """The snapshots (``Snapshot.build``) that every idle worker has compiled."""
        sets = [set(w.builds) for w in self._idle]
        return set.intersection(*sets) if sets else set()

    async def warm(self, snapshot: Snapshot) -> None:
        """Start every worker and have it compile ``snapshot`` now, not on the first large body;
        from now on a killed worker's replacement is warmed too (``_kill``)."""
        self._warmed = snapshot

        async def one() -> None:
            w = await self._acquire()
            try:
                await self._compile(w, snapshot)
            except BaseException:
                self._kill(w)
                raise
            self._release(w)

        results = await asyncio.gather(*(one() for _ in range(self.size)), return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                log.warning("could not warm a worker process: %s", r)

    def close(self) -> None:
        self._closed = True
        for task in self._replacing:
            task.cancel()
        for w in self._starting:  # a replacement still compiling
            self._stop(w)
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.process.wait(timeout=5)
        self._starting.clear()
        for w in self._idle:
            w.conn.close()  # the worker sees EOF and returns
            try:
                w.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()
        self._idle.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)


class WorkRunner:
    """Examines each request in the loop or in a worker, by body size."""

    def __init__(
        self,
        settings: WorkSettings,
        identity: IdentityConfig = DEFAULT_IDENTITY,
        catalog: Catalog | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.catalog = catalog
        self.pool = WorkerPool(settings.workers, settings.timeout_s) if settings.workers else None

    def offloads(self, size: int) -> bool:
        return self.pool is not None and size >= self.settings.offload_bytes

    def extension_s(self, size: int) -> float | None:
        """The message timeout to ask Envoy for while a body of ``size`` is examined, if any."""
        if not self.offloads(size):
            return None
        return self.settings.timeout_s + EXTENSION_MARGIN_S

    async def examine(
        self,
        snapshot: Snapshot,
        headers: Mapping[str, str],
        claims: Mapping[str, Any] | None,
        body: bytes,
    ) -> Examined:
        if self.pool is None or not self.offloads(len(body)):
            return examine(snapshot, headers, claims, body, self.identity, self.catalog)
        # The worker gets what judging the model needs, not the whole catalog (prices etc.).
        judge = self.catalog.judge if self.catalog is not None else None
        job = (dict(headers), dict(claims) if claims else None, body, self.identity, judge)
        return await self.pool.run(snapshot, job)

    async def warm(self, snapshot: Snapshot) -> None:
        """Have the workers compile ``snapshot`` ahead of the first large body (start, swap)."""
        if self.pool is not None:
            await self.pool.warm(snapshot)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


# A worker ignores SIGINT and SIGHUP and lowers its priority first, before its imports (seconds
# on a loaded machine) and its compile of the policies; where a worker and the event loop want
# the same core, the kernel runs the loop, so other streams are answered while a large body
# waits.
_WORKER_START = f"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
os.nice({WORKER_NICENESS})
from multiprocessing.connection import Connection
from policy_extproc.enforce.work import _worker_main
_worker_main(Connection(int(sys.argv[1])))
"""


__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_OFFLOAD_BYTES",
    "DEFAULT_TIMEOUT_S",
    "EXTENSION_MARGIN_S",
    "Examined",
    "WorkRunner",
    "WorkSettings",
    "WorkerPool",
    "_compact",
    "check_budget",
    "examine",
    "scanners",
]
