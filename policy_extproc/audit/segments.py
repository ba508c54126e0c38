"""The files of one audit chain: the live file and the closed segments rotation left beside it.

Our rotation names a closed segment ``<name>.<UTC stamp>``
(``audit.jsonl.20261201T221500.123456Z``), which sorts by age. logrotate's names
(``audit.jsonl.1``, ``audit.jsonl-20261201``, ``.gz``) are read too: ``verify`` orders
segments by their hash links, not by name.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

GENESIS = "0" * 64
_STAMP = re.compile(r"\.\d{8}T\d{6}\.\d{6}Z\Z")
_TAIL = 64 * 1024


def closed_name(path: Path) -> Path:
    """Where rotation moves the live file now."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return path.with_name(f"{path.name}.{stamp}")


def closed_segments(path: Path) -> list[Path]:
    """The segments our rotation closed, oldest first."""
    found = [p for p in path.parent.glob(f"{glob_escape(path.name)}.*") if _STAMP.search(p.name)]
    return sorted(found, key=lambda p: p.name)


def siblings(path: Path) -> list[Path]:
    """Every earlier segment of the chain of ``path`` (ours and logrotate's), newest first."""
    out = [
        p
        for p in path.parent.glob(f"{glob_escape(path.name)}[.-]*")
        if p.is_file() and ".corrupt-" not in p.name
    ]
    return sorted(out, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def last_hash_before(path: Path) -> str:
    """The hash a new, empty ``path`` continues from: the newest earlier segment's last line."""
    for segment in siblings(path):
        last = last_line(segment)
        if last is not None:
            try:
                digest = json.loads(last)["hash"]
            except (ValueError, TypeError, KeyError):
                continue
            if isinstance(digest, str) and len(digest) == 64:
                return digest
    return GENESIS


def open_binary(path: Path) -> IO[bytes]:
    """The segment's bytes, uncompressed if it is gzip (logrotate's ``compress``)."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def first_line(path: Path) -> bytes | None:
    """The first line of a segment (None when it is empty)."""
    with open_binary(path) as file:
        line = file.readline()
    return line or None


def last_line(path: Path) -> bytes | None:
    """The last complete line of a segment (None when there is none)."""
    if not path.name.endswith(".gz"):
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL)
            file.seek(start)
            complete = file.read()
        complete = complete[: complete.rfind(b"\n") + 1]
        if start == 0 or complete.count(b"\n") > 1:  # the whole last line is in the tail
            return complete.splitlines(keepends=True)[-1] if complete else None
    last = None
    for line in lines(path):
        if line.endswith(b"\n"):
            last = line
    return last


def lines(path: Path) -> Iterator[bytes]:
    """Every line of a segment, with its newline."""
    with open_binary(path) as file:
        yield from file


def glob_escape(name: str) -> str:
    """``name`` as a literal in a glob pattern."""
    return re.sub(r"([*?\[])", r"[\1]", name)
