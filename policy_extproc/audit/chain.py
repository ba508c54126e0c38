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
(an exclusive ``flock``): several processes need several files. Rotation is out of scope.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from policy_extproc.audit.record import AuditRecord
from policy_extproc.errors import PolicyExtprocError

GENESIS = "0" * 64
_TAIL_BLOCK = 64 * 1024

logger = logging.getLogger(__name__)
# fdatasync covers the data and the file size, which is all a reader needs; plain fsync elsewhere.
_sync = getattr(os, "fdatasync", os.fsync)


class AuditLogError(PolicyExtprocError):
    """The audit log cannot be opened or written; no decision may go out unaudited."""

    code = "audit_unavailable"
    http_status = 503


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What ``verify`` found: ``lines`` is how many lines checked out before the first bad one."""

    ok: bool
    lines: int
    first_bad_line: int | None
    message: str


def canonical_json(line: dict[str, Any]) -> str:
    """The exact text the hash is taken over."""
    return json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def line_hash(line: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``line`` without its ``hash`` key."""
    unhashed = {k: v for k, v in line.items() if k != "hash"}
    return hashlib.sha256(canonical_json(unhashed).encode()).hexdigest()


class AuditLog:
    """An append-only, hash-chained JSON-lines file; ``append`` is thread-safe."""

    def __init__(self, path: str | os.PathLike[str], *, fsync_interval_s: float = 1.0) -> None:
        if fsync_interval_s < 0:
            raise ValueError("fsync_interval_s must be >= 0")
        self._path = Path(path)
        self._interval = fsync_interval_s
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        existed = self._path.exists()
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise AuditLogError(f"{self._path}: cannot open audit log: {exc}") from exc
        try:
            # A second writer would fork the chain: two lines claiming the same prev_hash.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise AuditLogError(f"{self._path}: audit log is open by another writer") from exc
        try:
            self._last_hash = self._recover(fd)
            # Only this object writes the file (flock), so the size can be tracked, not asked.
            self._size = os.fstat(fd).st_size
            if not existed:
                _sync_directory(self._path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self._syncer: threading.Thread | None = None
        if fsync_interval_s > 0:
            self._syncer = threading.Thread(
                target=self._sync_loop, name="audit-log-fsync", daemon=True
            )
            self._syncer.start()

    @property
    def path(self) -> Path:
        """Where the log is."""
        return self._path

    @property
    def last_hash(self) -> str:
        """The hash of the last line written, or 64 zeros for an empty log."""
        return self._last_hash

    def append(self, record: AuditRecord) -> str:
        """Write ``record`` as the next line of the chain and return its hash."""
        line = record.to_dict()
        with self._lock:
            fd = self._fd
            if fd is None:
                raise AuditLogError(f"{self._path}: audit log is closed")
            line["prev_hash"] = self._last_hash
            try:
                digest = hashlib.sha256(canonical_json(line).encode()).hexdigest()
            except UnicodeEncodeError as exc:
                # A lone surrogate (bytes decoded with surrogateescape) has no UTF-8 form.
                raise AuditLogError(f"{self._path}: record text is not valid Unicode") from exc
            line["hash"] = digest
            # Written in field order, not canonical order, so a person reading the file sees the
            # decision first; verify() re-canonicalises before hashing.
            data = (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
            self._write(fd, data)
            self._size += len(data)
            self._last_hash = digest
            if self._interval == 0:
                try:
                    _sync(fd)
                except OSError as exc:
                    raise AuditLogError(f"{self._path}: fsync failed: {exc}") from exc
            else:
                self._dirty = True
        return digest

    def close(self) -> None:
        """Stop the fsync thread, fsync what is written, and close the file; idempotent."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                _sync(fd)
            except OSError as exc:
                logger.error("audit log %s: fsync on close failed: %s", self._path, exc)
            finally:
                os.close(fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _write(self, fd: int, data: bytes) -> None:
        # One write() for the whole line: with O_APPEND the kernel places it at the end in one
        # piece. A short write (disk full, a signal) is rolled back, so no partial line is left
        # for the next line to be glued onto.
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                logger.exception("audit log %s: cannot roll back a partial line", self._path)
            raise AuditLogError(f"{self._path}: write failed: {exc}") from exc

    def _sync_loop(self) -> None:
        fd = self._fd
        assert fd is not None
        while not self._stop.wait(self._interval):
            if not self._dirty:
                continue
            # Cleared before syncing: an append that lands during the fsync marks it again.
            self._dirty = False
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


def verify(path: str | os.PathLike[str], *, start_hash: str = GENESIS) -> VerifyResult:
    """Recompute every hash and link of an audit log; report the first bad line."""
    expected = start_hash
    number = 0
    try:
        with open(path, "rb") as file:
            for number, raw in enumerate(file, start=1):
                problem, expected = _check_line(raw, number, expected)
                if problem is not None:
                    return VerifyResult(False, number - 1, number, problem)
    except OSError as exc:
        return VerifyResult(False, number, None, f"cannot read {path}: {exc}")
    return VerifyResult(True, number, None, f"ok: {number} lines")


def _check_line(raw: bytes, number: int, expected_prev: str) -> tuple[str | None, str]:
    """A problem with one line (or None), and the hash the next line must link to."""
    if not raw.endswith(b"\n"):
        return f"line {number}: incomplete line (no newline: a write was cut short)", ""
    try:
        line = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except ValueError:
        return f"line {number}: not valid JSON", ""
    if not isinstance(line, dict) or "hash" not in line or "prev_hash" not in line:
        return f"line {number}: not an audit line (no hash or prev_hash)", ""
    try:
        digest = line_hash(line)
    except UnicodeEncodeError:
        return f"line {number}: not valid Unicode", ""
    if digest != line["hash"]:
        return f"line {number}: hash mismatch (record altered)", ""
    if line["prev_hash"] != expected_prev:
        if number == 1:
            return f"line 1: prev_hash does not start the chain (expected {expected_prev})", ""
        return f"line {number}: prev_hash does not match the hash of line {number - 1}", ""
    return None, str(line["hash"])


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; a line that reads two ways is tampering.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


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
