"""Checking audit logs: one file, or a directory of segments in chain order.

A line's ``hash`` is the SHA-256 (hex) of the canonical JSON of the line without ``hash`` (keys
sorted, no spaces, UTF-8); ``prev_hash`` is the previous line's ``hash``, or 64 zeros on the
first line of a chain. A chain may run across files (rotation, ``segments.py``): a directory is
checked by linking each file's first ``prev_hash`` to another file's last ``hash``, whatever the
files are called (our rotation's names, logrotate's ``.1`` or date suffixes, ``.gz``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy_extproc.audit import segments

GENESIS = segments.GENESIS


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


def verify(
    path: str | os.PathLike[str], *, start_hash: str = GENESIS, seen: set[str] | None = None
) -> VerifyResult:
    """Recompute every hash and link of an audit log; report the first bad line.

    ``seen``, if given, collects the hash of every line that checked out (for checkpoints).
    """
    expected = start_hash
    number = 0
    try:
        with segments.open_binary(Path(path)) as file:
            for number, raw in enumerate(file, start=1):
                problem, expected = _check_line(raw, number, expected)
                if problem is not None:
                    return VerifyResult(False, number - 1, number, problem)
                if seen is not None:
                    seen.add(expected)
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


@dataclass(frozen=True, slots=True)
class ChainResult:
    """One chain found in a directory: its files in chain order and what verifying them found.

    ``continues`` is set when the first file does not start at the genesis: older segments were
    removed (retention), and the chain is checked from there.
    """

    files: tuple[Path, ...]
    result: VerifyResult
    continues: str | None = None


def verify_directory(
    directory: str | os.PathLike[str], *, seen: set[str] | None = None
) -> list[ChainResult]:
    """Find the chains of every audit file in ``directory`` and check each from end to end."""
    heads: dict[Path, tuple[str, str | None]] = {}  # file -> (first prev_hash, last hash)
    bad: list[ChainResult] = []
    for path in sorted(Path(directory).iterdir()):
        if not path.is_file() or ".jsonl" not in path.name or ".corrupt-" in path.name:
            continue
        try:
            first, last = segments.first_line(path), segments.last_line(path)
            if first is None:
                continue  # a fresh file, nothing in it yet
            heads[path] = (str(json.loads(first)["prev_hash"]), _hash_of(last))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            message = f"{path.name}: line 1: not an audit line ({exc})"
            bad.append(ChainResult((path,), VerifyResult(False, 0, 1, message)))
    ends = {last for _, last in heads.values() if last is not None}
    following: dict[str, list[Path]] = {}
    for path, (prev, _) in heads.items():
        following.setdefault(prev, []).append(path)
    starts = [p for p, (prev, _) in heads.items() if prev == GENESIS or prev not in ends]
    results: list[ChainResult] = []
    reached: set[Path] = set()
    for start in sorted(starts, key=lambda p: p.name):
        results.append(_follow(start, heads, following, reached, seen))
    for path in sorted(set(heads) - reached):  # in a loop of links: no start to reach it from
        message = f"{path.name}: its chain links back to itself"
        results.append(ChainResult((path,), VerifyResult(False, 0, None, message)))
    return bad + results


def _follow(
    start: Path,
    heads: dict[Path, tuple[str, str | None]],
    following: dict[str, list[Path]],
    reached: set[Path],
    seen: set[str] | None,
) -> ChainResult:
    prev = heads[start][0]
    continues = None if prev == GENESIS else prev
    files: list[Path] = []
    total = 0
    path: Path | None = start
    while path is not None and path not in reached:
        reached.add(path)
        files.append(path)
        result = verify(path, start_hash=prev, seen=seen)
        total += result.lines
        if not result.ok:
            message = f"{path.name}: {result.message}"
            return ChainResult(
                tuple(files), VerifyResult(False, total, result.first_bad_line, message), continues
            )
        last = heads[path][1]
        nxt = following.get(last or "", [])
        if len(nxt) > 1:
            names = ", ".join(p.name for p in nxt)
            message = f"the chain forks after {path.name}: {names} all continue it"
            return ChainResult(tuple(files), VerifyResult(False, total, None, message), continues)
        prev, path = last or "", (nxt[0] if nxt else None)
    return ChainResult(
        tuple(files), VerifyResult(True, total, None, f"ok: {total} lines"), continues
    )


def _hash_of(line: bytes | None) -> str | None:
    if line is None:
        return None
    digest = json.loads(line).get("hash")
    return digest if isinstance(digest, str) else None


def checkpoints(text: str) -> list[tuple[str, int | None]]:
    """The (hash, lines) checkpoints in ``text``: JSON lines of checkpoint bodies, audit lines, or
    a collector's OTLP JSON export (``resourceLogs``), whose log bodies are those. A checkpoint
    of a chain with no line yet (``GENESIS``, sent by older versions) names no line: left out."""
    found: list[tuple[str, int | None]] = []
    for raw in text.splitlines():
        if raw.strip():
            _collect(json.loads(raw), found)
    return [(h, n) for h, n in found if h != GENESIS]


def _collect(value: Any, found: list[tuple[str, int | None]]) -> None:
    if isinstance(value, dict):
        digest = value.get("hash")
        if isinstance(digest, str) and len(digest) == 64 and "prev_hash" not in value:
            lines = value.get("lines")
            found.append((digest, lines if isinstance(lines, int) else None))
            return
        for key, item in value.items():
            if key == "stringValue" and isinstance(item, str) and item.startswith("{"):
                try:
                    _collect(json.loads(item), found)
                except ValueError:
                    continue
            else:
                _collect(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)


def report(
    paths: Sequence[str], checkpoint_text: str | None = None, *, checkpoint_name: str = ""
) -> tuple[list[str], bool]:
    """What ``audit verify`` prints for files, directories and checkpoints, and whether all
    is well (ValueError: the checkpoints are not JSON lines)."""
    out: list[str] = []
    ok = True
    seen: set[str] = set()
    for path in paths:
        if not Path(path).is_dir():
            result = verify(path, seen=seen)
            ok = ok and result.ok
            out.append(
                f"{path}: ok, {result.lines} records, chain intact"
                if result.ok
                else f"{path}: {result.message}"
            )
            continue
        chains = verify_directory(path, seen=seen)
        if not chains:
            out.append(f"{path}: no audit log found")
            ok = False
        for chain in chains:
            names = ", ".join(p.name for p in chain.files)
            if not chain.result.ok:
                out.append(f"{path}: {chain.result.message} (chain {names})")
                ok = False
                continue
            start = (
                "from the first line"
                if chain.continues is None
                else f"from a segment no longer here (prev_hash {chain.continues[:16]}...)"
            )
            n = len(chain.files)
            out.append(
                f"{path}: ok, {chain.result.lines} records in {n} file{'s' if n != 1 else ''},"
                f" chain intact {start}: {names}"
            )
    if checkpoint_text is not None:
        marks = checkpoints(checkpoint_text)
        missing = [(h, n) for h, n in marks if h not in seen]
        for digest, lines in missing:
            at = f" (line {lines} of its writer)" if lines is not None else ""
            out.append(
                f"checkpoint {digest[:16]}...{at} is not in the log: lines were cut off the "
                "end, or the log was replaced"
            )
        if not missing:
            out.append(f"{checkpoint_name}: all {len(marks)} checkpoints found in the log")
        ok = ok and not missing
    return out, ok


def _reason(message: str, file: str) -> str:
    """A result's message without the file and line it names (reported as fields)."""
    message = message.removeprefix(f"{file}: ")
    head, sep, rest = message.partition(": ")
    if sep and head.startswith("line ") and head[5:].isdigit():
        return rest
    return message


def summary(
    paths: Sequence[str], checkpoint_text: str | None = None, *, checkpoint_name: str = ""
) -> dict[str, Any]:
    """What ``audit verify --output json`` prints: ``ok``, the ``records`` that checked out,
    the ``segments`` (files) read, and the first ``problem`` (``file``, ``line`` or null,
    ``reason``) or null; with checkpoints, how many were ``found`` and ``missing`` too.

    The same checks as ``report`` (ValueError: the checkpoints are not JSON lines).
    """
    records = files = 0
    problem: dict[str, Any] | None = None
    seen: set[str] = set()

    def found(file: str, line: int | None, reason: str) -> None:
        nonlocal problem
        if problem is None:
            problem = {"file": file, "line": line, "reason": reason}

    for path in paths:
        if not Path(path).is_dir():
            result = verify(path, seen=seen)
            records += result.lines
            files += 1
            if not result.ok:
                found(path, result.first_bad_line, _reason(result.message, path))
            continue
        chains = verify_directory(path, seen=seen)
        if not chains:
            found(path, None, "no audit log found")
        for chain in chains:
            records += chain.result.lines
            files += len(chain.files)
            if not chain.result.ok:
                last = chain.files[-1]
                reason = _reason(chain.result.message, last.name)
                found(str(last), chain.result.first_bad_line, reason)
    out: dict[str, Any] = {"ok": False, "records": records, "segments": files}
    if checkpoint_text is not None:
        marks = checkpoints(checkpoint_text)
        missing = [(h, n) for h, n in marks if h not in seen]
        out["checkpoints"] = {"found": len(marks) - len(missing), "missing": len(missing)}
        for digest, lines in missing[:1]:
            at = f" (line {lines} of its writer)" if lines is not None else ""
            found(checkpoint_name, None, f"checkpoint {digest[:16]}...{at} is not in the log: "
                  "lines were cut off the end, or the log was replaced")  # fmt: skip
    out["ok"] = problem is None
    out["problem"] = problem
    return out
