"""Audit logs that outlive the pod: rotation, logrotate's rename + SIGHUP, a copy on stdout,
directories of segments checked in chain order, and readiness while the log cannot be written."""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import pytest

from policy_extproc.audit.chain import GENESIS, AuditLog, AuditLogError
from policy_extproc.audit.health import WatchedSink
from policy_extproc.audit.sink import JsonlSink
from policy_extproc.audit.verify import verify_directory
from tests.unit.test_audit_chain import make_record


def _chains(directory: Path) -> list[tuple[list[str], bool, int, str | None]]:
    return [
        ([p.name for p in c.files], c.result.ok, c.result.lines, c.continues)
        for c in verify_directory(directory)
    ]


def test_size_rotation_continues_the_chain_across_segments(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync_interval_s=0, max_bytes=2000) as log:
        for i in range(40):
            log.append(make_record(i))
    files = sorted(tmp_path.iterdir())
    assert len(files) > 5
    assert all(f.stat().st_size <= 2000 for f in files)
    [(names, ok, lines, continues)] = _chains(tmp_path)
    assert ok and lines == 40 and continues is None
    assert names[-1] == "audit.jsonl"  # the live file ends the chain
    # every segment but the first links to the one before it
    first_prevs = [
        json.loads((tmp_path / n).read_bytes().splitlines()[0])["prev_hash"] for n in names
    ]
    assert first_prevs[0] == GENESIS and GENESIS not in first_prevs[1:]


def test_a_restart_after_rotation_continues_from_the_newest_segment(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync_interval_s=0, max_bytes=1500) as log:
        for i in range(10):
            log.append(make_record(i))
        last = log.last_hash
    path.unlink()  # as if rotation had just moved it and nothing was written since
    path.touch()
    with AuditLog(path, fsync_interval_s=0) as log:
        assert log.last_hash != GENESIS
        log.append(make_record(99))
    [(_, ok, _, _)] = _chains(tmp_path)
    assert ok, last


@pytest.mark.parametrize("defect", ["middle segment removed", "line cut from a segment"])
def test_a_directory_with_a_segment_gone_or_cut_fails(tmp_path: Path, defect: str) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync_interval_s=0, max_bytes=1500) as log:
        for i in range(30):
            log.append(make_record(i))
    closed = sorted(p for p in tmp_path.iterdir() if p.name != "audit.jsonl")
    victim = closed[len(closed) // 2]
    if defect == "middle segment removed":
        victim.unlink()
    else:
        victim.write_bytes(b"".join(victim.read_bytes().splitlines(keepends=True)[:-1]))
    results = _chains(tmp_path)
    # the chain splits in two: the part after the gap starts with no segment before it
    assert len(results) == 2
    assert [r[3] is None for r in results].count(True) == 1


def test_retention_keeps_the_newest_segments_and_verify_says_where_it_starts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync_interval_s=0, max_bytes=1500, keep=2) as log:
        for i in range(30):
            log.append(make_record(i))
    assert len(list(tmp_path.iterdir())) == 3
    [(_, ok, _, continues)] = _chains(tmp_path)
    assert ok and continues is not None  # older segments removed: checked from the first kept


def test_logrotate_rename_and_reopen_write_a_new_file_and_gz_segments_verify(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync_interval_s=0) as log:
        log.append(make_record(1))
        path.rename(tmp_path / "audit.jsonl.1")  # logrotate's rename, then SIGHUP
        log.reopen()
        log.append(make_record(2))
        rotated = tmp_path / "audit.jsonl.1"
        with gzip.open(tmp_path / "audit.jsonl.1.gz", "wb") as gz:
            gz.write(rotated.read_bytes())  # logrotate's compress
        rotated.unlink()
        path.rename(tmp_path / "audit.jsonl.2")
        log.reopen()
        log.append(make_record(3))
    assert len(path.read_bytes().splitlines()) == 1  # the new file has the line after reopen
    [(names, ok, lines, continues)] = _chains(tmp_path)
    assert (names, ok, lines, continues) == (
        ["audit.jsonl.1.gz", "audit.jsonl.2", "audit.jsonl"],
        True,
        3,
        None,
    )


def test_copytruncate_is_noticed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync_interval_s=0) as log:
        log.append(make_record(1))
        os.truncate(path, 0)  # logrotate copytruncate
        with caplog.at_level(logging.ERROR):
            log.append(make_record(2))
    assert "copytruncate is not supported" in caplog.text


def test_the_tee_gets_every_line_byte_for_byte(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync_interval_s=0, tee=write_end) as log:
        for i in range(3):
            log.append(make_record(i))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == path.read_bytes()


def test_stdout_only_starts_a_chain_and_fails_loudly(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    log = AuditLog(None, tee=write_end)
    log.append(make_record(1))
    copy = tmp_path / "shipped.jsonl"
    copy.write_bytes(os.read(read_end, 1 << 16))
    assert json.loads(copy.read_bytes())["prev_hash"] == GENESIS
    os.close(read_end)  # the reader is gone: EPIPE
    with pytest.raises(AuditLogError):
        log.append(make_record(2))
    log.close()
    os.close(write_end)


def test_dev_full_turns_readiness_off_logs_once_and_the_probe_turns_it_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    link = tmp_path / "audit.jsonl"
    link.symlink_to("/dev/full")  # every write: ENOSPC, through a real file descriptor
    log = AuditLog(link, fsync_interval_s=0)
    changes: list[bool] = []
    watched = WatchedSink(JsonlSink(log), log, changes.append, log_every_s=3600)
    with caplog.at_level(logging.ERROR, logger="policy_extproc.audit.health"):
        for i in range(50):
            with pytest.raises(AuditLogError, match="No space left"):
                watched.emit(make_record(i))
        assert not watched.probe()
    assert changes == [False] and watched.refused == 50
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    # room again (the symlink now points at a real file): the probe writes the event line
    log.close()
    link.unlink()
    log2 = AuditLog(link, fsync_interval_s=0)
    watched.log, watched.sink = log2, JsonlSink(log2)
    assert watched.probe() and changes == [False, True]
    watched.emit(make_record(99))
    log2.close()
    lines = [json.loads(line) for line in link.read_bytes().splitlines()]
    assert lines[0]["event"] == "audit_resumed" and lines[0]["refused"] == 50
