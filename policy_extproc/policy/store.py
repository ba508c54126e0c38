"""Holds the snapshot in force; a reload builds a whole new one and swaps it in, or keeps the old.

Requests read ``store.current`` once when they start and keep that snapshot to the end, so a swap
never changes the rules under a request in flight. A policy set with a mistake is never swapped
in: the last good set keeps serving and ``last_error`` says what is wrong (health detail, admin).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import PolicyError
from .compiler import Snapshot, compile_paths
from .loader import policy_files


@dataclass(frozen=True, slots=True)
class LoadError:
    at: float
    error: PolicyError

    def __str__(self) -> str:
        return str(self.error)


class PolicyStore:
    """The current snapshot, its source paths, and the outcome of the last reload."""

    def __init__(self, paths: Sequence[str] = (), snapshot: Snapshot | None = None) -> None:
        self.paths = tuple(paths)
        self._current = snapshot
        self.last_error: LoadError | None = None
        self.loaded_at = time.time() if snapshot is not None else 0.0
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._fingerprint: tuple[tuple[str, float, int], ...] = ()

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> Snapshot:
        if self._current is None:
            raise RuntimeError("no policy set loaded yet")
        return self._current

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
        """Compile the files at ``paths`` and swap; on a mistake keep the current set and raise."""
        self._fingerprint = self.fingerprint()
        try:
            snapshot = compile_paths(self.paths)
        except PolicyError as exc:
            self.last_error = LoadError(time.time(), exc)
            raise
        snapshot.warm()
        self.swap(snapshot)
        return snapshot

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
        """Whether the files differ from those of the last load attempt."""
        return self.fingerprint() != self._fingerprint
