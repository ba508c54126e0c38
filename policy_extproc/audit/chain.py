"""The durable audit log: JSON lines, append-only, each line hash-chained to the one before.

Each line is the record's dict plus ``prev_hash`` and ``hash``, where ``hash`` is the SHA-256
(hex) of the canonical JSON of the line without ``hash`` (keys sorted, no spaces, UTF-8) and
``prev_hash`` is the previous line's ``hash``, or 64 zeros on the first line. Removing, altering
or reordering a line breaks a link that ``verify`` names by line number.

Durability: ``append`` writes the whole line with one ``write`` on an ``O_APPEND`` descriptor
before it returns, so once a decision is returned the line is in the kernel and survives the
process being killed. ``fsync`` (which makes it survive the machine) runs every
``fsync_interval_s`` in a background thread, or inside every ``append`` when the interval is 0.

The file path is the operator's choice. Reopening an existing file continues its chain from its
last line, so one file holds one chain across restarts. One ``AuditLog`` owns a file at a time
(an exclusive ``flock``): several processes need several files.

Rotation (``max_bytes``, ``max_age_s``): the file is renamed to ``<name>.<UTC stamp>`` and a new
one started whose first line links to the last line of the old one, so the chain runs across
segments (``segments.verify_directory`` checks them in chain order); ``keep`` bounds how many
closed segments stay. ``reopen`` (SIGHUP) closes the file and opens the path again, for
logrotate's rename-and-signal: the chain continues from the last line written, into the new
file. A file cut short under us (``copytruncate``) is noticed and logged; it is not supported,
as the lines written between the copy and the truncation are lost.

``tee`` (a file descriptor, stdout for node log agents) gets every line too, byte for byte, so
the copy shipped can be verified as the file is. With no path, the tee is the log: each start
then begins a new chain (there is nothing to continue from).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from policy_extproc.audit import jsonline, segments
from policy_extproc.audit.record import AuditRecord, utc_timestamp
from policy_extproc.audit.verify import GENESIS, VerifyResult, canonical_json, line_hash, verify
from policy_extproc.errors import PolicyExtprocError

_TAIL_BLOCK = 64 * 1024

logger = logging.getLogger(__name__)
# fdatasync covers the data and the file size, which is all a reader needs; plain fsync elsewhere.
_sync = getattr(os, "fdatasync", os.fsync)


__all__ = ["GENESIS", "AuditLog", "AuditLogError", "VerifyResult", "canonical_json", "line_hash",
           "verify"]  # fmt: skip


class AuditLogError(PolicyExtprocError):
    """The audit log cannot be opened or written; no decision may go out unaudited."""

    code = "audit_unavailable"
    http_status = 503


class AuditLog:
    """An append-only, hash-chained JSON-lines file; ``append`` is thread-safe."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        fsync_interval_s: float = 1.0,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
        keep: int | None = None,
        tee: int | None = None,
    ) -> None:
        if fsync_interval_s < 0:
            raise ValueError("fsync_interval_s must be >= 0")
        if path is None and tee is None:
            raise ValueError("an audit log needs a path or a tee")
        self._path = Path(path) if path is not None else None
        self._interval = fsync_interval_s
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._keep = keep
        self._tee = tee
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        self._closed = False
        self._fd: int | None = None
        self._last_hash = GENESIS
        self._size = 0
        self._opened_at = time.monotonic()
        self.lines = 0  # lines written by this object
        # Called with each line's bytes once it is written (OTLP log export); never fails a write.
        self.listeners: list[Callable[[bytes], None]] = []
        if self._path is not None:
            self._fd, self._last_hash, self._size = self._open(self._path, recover=True)
        self._syncer: threading.Thread | None = None
        if fsync_interval_s > 0 and self._path is not None:
            self._syncer = threading.Thread(
                target=self._sync_loop, name="audit-log-fsync", daemon=True
            )
            self._syncer.start()

    def _open(self, path: Path, *, recover: bool) -> tuple[int, str, int]:
        existed = path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise AuditLogError(f"{path}: cannot open audit log: {exc}") from exc
        try:
            # A second writer would fork the chain: two lines claiming the same prev_hash.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise AuditLogError(f"{path}: audit log is open by another writer") from exc
        try:
            last = self._recover(fd)
            if last == GENESIS:
                # A new or empty file: continue the chain of the segment before it, if any
                # (rotated by us or renamed by logrotate), or of what this object wrote last.
                last = self._last_hash if not recover else segments.last_hash_before(path)
            # Only this object writes the file (flock), so the size can be tracked, not asked.
            size = os.fstat(fd).st_size
            if not existed:
                _sync_directory(path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._opened_at = time.monotonic()
        return fd, last, size

    @property
    def path(self) -> Path | None:
        """Where the log is (None when it goes to the tee only)."""
        return self._path

    @property
    def last_hash(self) -> str:
        """The hash of the last line written, or 64 zeros for an empty log."""
        return self._last_hash

    def append(self, record: AuditRecord) -> str:
        """Write ``record`` as the next line of the chain and return its hash."""
        return self._append(record.to_dict())

    def append_event(self, event: str, **fields: object) -> str:
        """Write a chain event (``audit_resumed``, ``shutdown``, ...) as the next line."""
        return self._append({"event": event, "timestamp": utc_timestamp(), **fields})

    def _append(self, line: dict[str, Any]) -> str:
        with self._lock:
            if self._closed:
                raise AuditLogError(f"{self._where}: audit log is closed")
            line["prev_hash"] = self._last_hash
            try:
                # Written in field order, not canonical order, so a person reading the file sees
                # the decision first; verify() re-canonicalises before hashing.
                data = jsonline.chained(line)
            except UnicodeEncodeError as exc:
                # A lone surrogate (bytes decoded with surrogateescape) has no UTF-8 form.
                raise AuditLogError(f"{self._where}: record text is not valid Unicode") from exc
            digest = line["hash"]
            if self._fd is None and self._path is not None:
                # A rotation or reopen that failed: try again, the disk may have room now.
                self._fd, _, self._size = self._open(self._path, recover=False)
            elif self._rotation_due(len(data)):
                self._rotate()
            fd = self._fd
            if fd is not None:
                self._write(fd, data)
                self._size += len(data)
                if self._interval == 0:
                    try:
                        _sync(fd)
                    except OSError as exc:
                        raise AuditLogError(f"{self._where}: fsync failed: {exc}") from exc
                else:
                    self._dirty = True
            if self._tee is not None:
                self._write_tee(data, primary=fd is None)
            self._last_hash = digest
            self.lines += 1
            for listener in self.listeners:
                try:
                    listener(data)
                except Exception:
                    logger.exception("audit line listener failed")
        return digest

    def reopen(self) -> None:
        """Close the file and open the path again (SIGHUP after logrotate renamed it)."""
        if self._path is None:
            return
        with self._lock:
            if self._closed:
                return
            self._close_fd()
            self._fd, self._last_hash, self._size = self._open(self._path, recover=False)
        logger.info("audit log %s reopened; the chain continues", self._path)

    def close(self) -> None:
        """Stop the fsync thread, fsync what is written, and close the file; idempotent."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._lock:
            self._closed = True
            self._close_fd()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def _where(self) -> str:
        return str(self._path) if self._path is not None else "audit stream"

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            _sync(fd)
        except OSError as exc:
            logger.error("audit log %s: fsync on close failed: %s", self._path, exc)
        finally:
            os.close(fd)

    def _rotation_due(self, incoming: int) -> bool:
        if self._size == 0:
            return False
        if self._max_bytes is not None and self._size + incoming > self._max_bytes:
            return True
        age = time.monotonic() - self._opened_at
        return self._max_age_s is not None and age >= self._max_age_s

    def _rotate(self) -> None:
        assert self._path is not None
        aside = segments.closed_name(self._path)
        self._close_fd()
        try:
            os.rename(self._path, aside)
        except OSError as exc:
            raise AuditLogError(f"{self._path}: cannot rotate to {aside}: {exc}") from exc
        self._fd, _, self._size = self._open(self._path, recover=False)
        if self._keep is not None:
            for old in segments.closed_segments(self._path)[: -self._keep or None]:
                with contextlib.suppress(OSError):
                    old.unlink()

    def _write(self, fd: int, data: bytes) -> None:
        # One write() for the whole line: with O_APPEND the kernel places it at the end in one
        # piece. A short write (disk full, a signal) is rolled back, so no partial line is left
        # for the next line to be glued onto.
        try:
            written = os.write(fd, data)
        except OSError as exc:  # nothing was written
            raise AuditLogError(f"{self._path}: write failed: {exc}") from exc
        if written != len(data):
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                logger.exception("audit log %s: cannot roll back a partial line", self._path)
            raise AuditLogError(
                f"{self._path}: write failed: short write ({written} of {len(data)} bytes)"
            )
        end = os.lseek(fd, 0, os.SEEK_CUR)
        if end != self._size + len(data):
            # Someone cut the file (logrotate's copytruncate) or wrote to it: what was written
            # between the copy and the cut is lost. Rename and SIGHUP instead.
            logger.error(
                "audit log %s changed size under us (%d bytes, expected %d): copytruncate is not"
                " supported, lines may be lost; rotate by renaming and sending SIGHUP",
                self._path,
                end - len(data),
                self._size,
            )
            self._size = end - len(data)

    def _write_tee(self, data: bytes, *, primary: bool) -> None:
        assert self._tee is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._tee, view) :]
        except OSError as exc:
            if primary:
                raise AuditLogError(f"audit stream: write failed: {exc}") from exc
            logger.error(
                "audit log copy to fd %d failed (the file has the line): %s", self._tee, exc
            )

    def _sync_loop(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._dirty:
                continue
            # Cleared before syncing: an append that lands during the fsync marks it again.
            self._dirty = False
            with self._lock:
                fd = self._fd  # a rotation may swap it; fsync outside the lock, appends go on
            if fd is None:
                continue
            try:
                _sync(fd)
            except OSError as exc:
                # No retry: after a failed fsync the kernel may have dropped the pages, and a
                # later fsync can succeed without them. Say so loudly.
                logger.error("audit log %s: fsync failed, lines may be lost: %s", self._path, exc)

    def _recover(self, fd: int) -> str:
        """Find the hash to continue from, setting aside a trailing partial line first."""
        size = os.fstat(fd).st_size
        if size == 0:
            return GENESIS
        if os.pread(fd, 1, size - 1) != b"\n":
            size = self._set_aside_partial_line(fd, size)
            if size == 0:
                return GENESIS
        start = _last_newline(fd, size - 1) + 1
        last = os.pread(fd, size - start, start)
        try:
            parsed = json.loads(last)
            digest = parsed["hash"]
        except (ValueError, TypeError, KeyError) as exc:
            raise AuditLogError(
                f"{self._path}: the last line is not an audit record; the chain cannot continue"
                f" (check it with `policy-extproc audit verify`)"
            ) from exc
        if not (isinstance(digest, str) and len(digest) == 64):
            raise AuditLogError(f"{self._path}: the last line has no valid hash")
        return digest

    def _set_aside_partial_line(self, fd: int, size: int) -> int:
        # A line without its newline is a write the machine did not finish (a crash, or zeros
        # left by the filesystem). It is no part of the chain; copy it aside, then cut it off.
        cut = _last_newline(fd, size) + 1
        partial = os.pread(fd, size - cut, cut)
        assert self._path is not None  # only files are recovered
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        try:
            out = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                os.write(out, partial)
                os.fsync(out)
            finally:
                os.close(out)
            os.ftruncate(fd, cut)
            os.fsync(fd)
        except OSError as exc:
            raise AuditLogError(f"{self._path}: cannot set aside a partial line: {exc}") from exc
        logger.warning(
            "audit log %s: trailing partial line (%d bytes, a write cut short) moved to %s;"
            " the chain continues from the last complete line",
            self._path,
            len(partial),
            aside,
        )
        return cut


def _last_newline(fd: int, end: int) -> int:
    """Offset of the last newline before ``end``, or -1; reads backwards, one block at a time."""
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def _sync_directory(directory: Path) -> None:
    # A new file is durable only once its directory entry is.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
