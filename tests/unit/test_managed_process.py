"""The harness's ``ManagedProcess`` (tests/envoy_harness.py, which benchmarks/_load.py's
processes are) stops what its process forked: a wrapper's children must not outlive a run,
holding ports and CPU for the next measurement."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.envoy_harness import ManagedProcess

# A shell that forks a long sleep and waits on it, as `env`, `py-spy record --` or a sidecar
# with workers do; a SIGTERM ends the shell, not the sleep, unless the signal goes to the group.
FORKS = 'sleep 300 & echo "child $!"; echo "listening on 127.0.0.1:1"; wait'


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _child(proc: ManagedProcess) -> int:
    return int(proc.stdout_path.read_text().split("child ", 1)[1].split()[0])


def _assert_stop_ends(proc: ManagedProcess, child: int) -> None:
    """The child runs, and ``proc.stop()`` ends it (killed here if the test fails)."""
    try:
        assert _running(child)
        proc.stop(timeout=5)
        assert not _running(child)
    finally:
        if _running(child):
            os.kill(child, 9)


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_stop_ends_what_the_process_forked(tmp_path: Path) -> None:
    proc = ManagedProcess(["sh", "-c", FORKS], "forks", workdir=tmp_path).start(timeout=10)
    _assert_stop_ends(proc, _child(proc))


def test_stop_ends_the_children_of_a_process_that_already_exited(tmp_path: Path) -> None:
    script = 'sleep 300 & echo "child $!"; echo "listening on 127.0.0.1:1"'  # no wait: exits
    proc = ManagedProcess(["sh", "-c", script], "exits", workdir=tmp_path)
    proc.spawn()
    assert proc.proc is not None
    proc.proc.wait(10)
    _assert_stop_ends(proc, _child(proc))


def test_a_process_that_does_not_come_up_is_stopped_with_its_children(tmp_path: Path) -> None:
    script = 'sleep 300 & echo "child $!"; wait'  # never says it listens
    proc = ManagedProcess(["sh", "-c", script], "silent", workdir=tmp_path)
    with pytest.raises(TimeoutError):
        proc.start(timeout=1)
    child = _child(proc)
    try:
        deadline = time.monotonic() + 5
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child)
    finally:
        if _running(child):
            os.kill(child, 9)
