"""``policy-extproc audit verify --output json``: one object, the same checks and exit codes as
the text report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter

from policy_extproc.audit.chain import GENESIS, AuditLog
from policy_extproc.audit.otel_logs import OtelAuditLogs
from policy_extproc.cli import main
from tests.unit.test_audit_chain import make_record


def verify_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["audit", "verify", "--output", "json", *args])
    return result.exit_code, json.loads(result.stdout)


def write_log(path: Path, n: int, **options: Any) -> None:
    with AuditLog(path, fsync_interval_s=0, **options) as log:
        for i in range(n):
            log.append(make_record(i))


def test_an_intact_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    code, out = verify_json(str(path))
    assert code == 0
    assert out == {"ok": True, "records": 5, "segments": 1, "problem": None}


def test_an_altered_record_names_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace('"alice"', '"mallory"')
    path.write_text("".join(lines))
    code, out = verify_json(str(path))
    assert code == 1
    assert out == {
        "ok": False,
        "records": 2,
        "segments": 1,
        "problem": {"file": str(path), "line": 3, "reason": "hash mismatch (record altered)"},
    }
    # The text report says the same.
    text = CliRunner().invoke(main, ["audit", "verify", str(path)])
    assert text.exit_code == 1 and "line 3: hash mismatch (record altered)" in text.output


def test_a_directory_of_segments(tmp_path: Path) -> None:
    write_log(tmp_path / "audit.jsonl", 30, max_bytes=1500)
    files = sorted(tmp_path.iterdir())
    assert len(files) > 2
    code, out = verify_json(str(tmp_path))
    assert code == 0
    assert out == {"ok": True, "records": 30, "segments": len(files), "problem": None}


def test_a_line_cut_from_the_end_of_a_middle_segment(tmp_path: Path) -> None:
    """The chain splits in two, each intact (the second continues from a line no longer
    here), as the text report says too: only checkpoints tell a cut end."""
    write_log(tmp_path / "audit.jsonl", 30, max_bytes=5000)
    closed = sorted(p for p in tmp_path.iterdir() if p.name != "audit.jsonl")
    victim = closed[len(closed) // 2]
    assert len(victim.read_bytes().splitlines()) > 2
    victim.write_bytes(b"".join(victim.read_bytes().splitlines(keepends=True)[:-1]))
    code, out = verify_json(str(tmp_path))
    text = CliRunner().invoke(main, ["audit", "verify", str(tmp_path)])
    assert code == text.exit_code == 0
    assert out == {"ok": True, "records": 29, "segments": len(closed) + 1, "problem": None}


def test_a_directory_with_no_log(tmp_path: Path) -> None:
    code, out = verify_json(str(tmp_path))
    assert code == 1
    assert out["problem"] == {"file": str(tmp_path), "line": None, "reason": "no audit log found"}


def test_a_bad_line_in_a_segment_names_the_segment(tmp_path: Path) -> None:
    write_log(tmp_path / "audit.jsonl", 30, max_bytes=5000)
    closed = sorted(p for p in tmp_path.iterdir() if p.name != "audit.jsonl")
    victim = closed[1]
    assert len(victim.read_bytes().splitlines()) > 2
    lines = victim.read_text().splitlines(keepends=True)
    lines[1] = "{not json\n"
    victim.write_text("".join(lines))
    code, out = verify_json(str(tmp_path))
    assert code == 1
    assert out["problem"] == {"file": str(victim), "line": 2, "reason": "not valid JSON"}


@pytest.mark.parametrize("cut", [False, True])
def test_checkpoints(tmp_path: Path, cut: bool) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    lines = path.read_text().splitlines(keepends=True)
    marks = tmp_path / "checkpoints.jsonl"
    last = json.loads(lines[-1])
    marks.write_text(json.dumps({"hash": last["hash"], "lines": 4}) + "\n")
    if cut:
        path.write_text("".join(lines[:-1]))
    code, out = verify_json(str(path), "--checkpoints", str(marks))
    if not cut:
        assert code == 0 and out["ok"] and out["checkpoints"] == {"found": 1, "missing": 0}
        return
    assert code == 1
    assert out["records"] == 3 and out["checkpoints"] == {"found": 0, "missing": 1}
    assert out["problem"]["file"] == str(marks) and out["problem"]["line"] is None
    assert "(line 4 of its writer) is not in the log" in out["problem"]["reason"]


def test_checkpoints_that_are_not_json_are_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 1)
    marks = tmp_path / "checkpoints.jsonl"
    marks.write_text("not json\n")
    result = CliRunner().invoke(
        main, ["audit", "verify", "--output", "json", str(path), "--checkpoints", str(marks)]
    )
    assert result.exit_code == 2 and "not JSON lines" in result.output


def test_a_checkpoint_of_a_chain_with_no_line_yet_names_nothing_to_find(tmp_path: Path) -> None:
    # A sidecar idle for a checkpoint interval before its first request sent the empty
    # chain's head (GENESIS, older versions): it is not a line cut off the end.
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    last = json.loads(path.read_text().splitlines()[-1])
    marks = tmp_path / "checkpoints.jsonl"
    marks.write_text(
        json.dumps({"hash": GENESIS, "lines": 0}) + "\n" + json.dumps({"hash": last["hash"]}) + "\n"
    )
    code, out = verify_json(str(path), "--checkpoints", str(marks))
    assert code == 0 and out["ok"] and out["checkpoints"] == {"found": 1, "missing": 0}


def test_no_checkpoint_is_exported_before_the_first_line() -> None:
    exporter = InMemoryLogRecordExporter()
    logs = OtelAuditLogs("unused:4317", chain="test", exporter=exporter)
    try:
        assert not logs.checkpoint(GENESIS, 0)
        assert logs.checkpoint("a" * 64, 1)
    finally:
        logs.close()
    bodies = [json.loads(str(d.log_record.body)) for d in exporter.get_finished_logs()]
    assert [b["hash"] for b in bodies] == ["a" * 64]
