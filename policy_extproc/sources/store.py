"""Holds the snapshot in force; a reload builds a whole new one and swaps it in, or keeps the old.

The policy set is the policy files plus the policies pushed through the admin API (handed in
as sources by ``admin.pushed``; a pushed policy's file name is ``pushed:<name>``). Requests
read ``store.current`` once when they start and keep that snapshot to the end, so a swap never
changes the rules under a request in flight. A policy set with a mistake is never swapped in:
the last good set keeps serving and ``last_error`` says what is wrong (health detail, admin).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..errors import PolicyError
from ..policy.compiler import Snapshot, compile_read
from ..policy.loader import read_sources
from ..policy.model import Policy, Secrets
from .files import Source, no_files, policy_files, read_files
from .secrets import read_secrets, this_year

PUSHED = "pushed:"


def pushed_file(name: str) -> str:
    """The file name a pushed policy carries (in problems, explanations and the version hash)."""
    return PUSHED + name


def is_pushed(policy: Policy) -> bool:
    """Whether ``policy`` came through the admin API rather than a file."""
    return policy.file.startswith(PUSHED)


@dataclass(frozen=True, slots=True)
class LoadError:
    at: float
    error: PolicyError

    def __str__(self) -> str:
        return str(self.error)


class PolicyStore:
    """The current snapshot, its sources (files and pushed policies), the last reload's outcome."""

    def __init__(self, paths: Sequence[str] = (), snapshot: Snapshot | None = None) -> None:
        self.paths = tuple(paths)
        self._current = snapshot
        self.last_error: LoadError | None = None
        self.load_failures = 0  # loads refused since start (the metric's counter)
        self.loaded_at = time.time() if snapshot is not None else 0.0
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._fingerprint: tuple[tuple[str, float, int], ...] = ()
        self._year: int | None = None  # the year the last load compiled for
        self._pushed: tuple[Source, ...] = ()
        # Reloads run in worker threads (file watch, admin pushes): one compile-and-swap at a
        # time, each reading the latest files and pushed sources, so the last to finish is
        # never older than the one before it.
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> Snapshot:
        if self._current is None:
            raise RuntimeError("no policy set loaded yet")
        return self._current

    @property
    def pushed(self) -> tuple[Source, ...]:
        """The pushed policies the next ``load`` compiles with the files."""
        return self._pushed

    def set_pushed(self, sources: Iterable[Source]) -> None:
        """Replace the pushed policies; they take effect at the next ``load``."""
        self._pushed = tuple(sorted(sources))  # sorted: the same set gives the same version

    def on_swap(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    def swap(self, snapshot: Snapshot) -> None:
        """Put ``snapshot`` in force (one reference assignment: atomic for readers)."""
        self._current = snapshot
        self.loaded_at = time.time()
        self.last_error = None
        for listener in self._listeners:
            listener(snapshot)

    def load(self) -> Snapshot:
        """Compile the files and pushed policies and swap; on a mistake keep the set and raise."""
        with self._lock:
            self._fingerprint = self.fingerprint()
            secrets = read_secrets()
            self._year = secrets.year
            try:
                snapshot = self.compile(self._pushed, secrets)
            except PolicyError as exc:
                self.last_error = LoadError(time.time(), exc)
                self.load_failures += 1
                raise
            snapshot.warm()
            self.swap(snapshot)
            return snapshot

    def compile(self, pushed: Sequence[Source], secrets: Secrets | None = None) -> Snapshot:
        """The would-be set of the files as they are now plus ``pushed``; nothing is swapped.

        Raises ``PolicyError`` with every problem, in the lines ``check`` prints.
        """
        files = policy_files(self.paths)
        sources, problems = read_files(files)
        if not files and not pushed and not problems:
            problems.append(no_files(self.paths))
        # One read of files and pushed together: duplicate names and rule clashes between a
        # file and a pushed policy are found like those between two files.
        secrets = secrets or read_secrets()
        policies, more = read_sources([*sources, *pushed], secrets)
        return compile_read(policies, problems + more, secrets)

    def fingerprint(self) -> tuple[tuple[str, float, int], ...]:
        """Path, mtime and size of every policy file, following symlinks.

        Kubernetes updates a ConfigMap volume by swapping the ``..data`` symlink: the files'
        names stay, their resolved targets change. Resolving each path catches that.
        """
        out = []
        for f in policy_files(self.paths):
            try:
                st = os.stat(f)
                out.append((os.path.realpath(f), st.st_mtime, st.st_size))
            except OSError:
                continue
        return tuple(out)

    def changed(self) -> bool:
        """Whether the files differ from those of the last load attempt, or the year does (the
        PII detectors were built for one year: a birth date may lie in this one)."""
        if self._year is not None and self._year != this_year():
            return True
        return self.fingerprint() != self._fingerprint
