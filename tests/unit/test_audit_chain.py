"""The audit record, the hash-chained log and the non-OpenTelemetry sinks."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from policy_extproc.audit.chain import GENESIS, AuditLog, AuditLogError, line_hash, verify
from policy_extproc.audit.record import (
    AuditRecord,
    FiredRule,
    Usage,
    redaction_counts,
    timestamp_ns,
    utc_timestamp,
)
from policy_extproc.audit.sink import AuditSink, FanoutSink, JsonlSink, RecordingSink

RECORD_KEYS = [
    "decision", "policy", "rule", "reason", "user", "environment", "timestamp", "request_id",
    "org", "team", "model", "provider", "mode", "would_decide", "compliance", "fired",
    "redactions", "usage", "cost_usd", "latency_us", "policy_version", "error_code", "alerts",
    "degraded", "trace_id", "phase", "outcome", "api", "response_model", "response_id",
    "finish_reasons", "server_address", "server_port",
]  # fmt: skip


def make_record(n: int = 0, **changes: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "decision": "modify",
        "policy": "dev_team_restrictions",
        "rule": "pii",
        "reason": "redacted 2 EMAIL, 1 US_SSN",
        "user": "alice",
        "environment": "development",
        "timestamp": "2024-05-01T12:00:00.000001Z",
        "request_id": f"req-{n}",
        "org": "acme",
        "team": "ml",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "compliance": ("SOC2",),
        "fired": (FiredRule("dev_team_restrictions", "pii", "modify"),),
        "redactions": redaction_counts({"EMAIL": 2, "US_SSN": 1}),
        "cost_usd": 0.0012,
        "latency_us": 850,
        "policy_version": "v7",
    }
    fields.update(changes)
    return AuditRecord(**fields)


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_log(path: Path, n: int) -> list[str]:
    with AuditLog(path) as log:
        return [log.append(make_record(i)) for i in range(n)]


# --- the record -------------------------------------------------------------------------------


def test_to_dict_has_every_key_in_field_order_and_keeps_nulls() -> None:
    record = make_record(reason="ok", rule=None, usage=Usage(10, 5), alerts=("budget:0.8",))
    data = record.to_dict()
    assert list(data) == RECORD_KEYS
    assert data["rule"] is None and data["trace_id"] is None
    assert data["fired"] == [{"policy": "dev_team_restrictions", "rule": "pii", "action": "modify"}]
    assert data["redactions"] == {"EMAIL": 2, "US_SSN": 1}
    assert data["usage"] == {"input_tokens": 10, "output_tokens": 5}
    assert json.loads(json.dumps(data)) == data
    assert AuditRecord.from_dict(data) == record
    hash(record)  # frozen and hashable: redactions are stored as pairs


def test_record_has_no_field_for_text() -> None:
    assert AuditRecord.__slots__ == tuple(RECORD_KEYS)


@pytest.mark.parametrize(
    "changes",
    [
        {"mode": "shadow"},
        {"timestamp": "2024-05-01 12:00:00"},
        {"timestamp": "2024-05-01T12:00:00Z"},
        {"latency_us": -1},
        {"cost_usd": float("nan")},
    ],
)
def test_record_rejects_values_no_sink_could_write(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_record(**changes)


def test_timestamps_are_exact_to_the_microsecond() -> None:
    ns = 1_714_564_800_123_456_789
    stamp = utc_timestamp(ns)
    assert stamp == "2024-05-01T12:00:00.123456Z"
    assert timestamp_ns(stamp) == 1_714_564_800_123_456_000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", utc_timestamp())


# --- the chain --------------------------------------------------------------------------------


def test_appended_lines_form_a_chain_that_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    hashes = write_log(path, 20)
    lines = [json.loads(raw) for raw in read_lines(path)]
    assert [line["hash"] for line in lines] == hashes
    assert lines[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in pairwise(lines))
    assert all(line_hash(line) == line["hash"] for line in lines)
    assert list(lines[0]) == [*RECORD_KEYS, "prev_hash", "hash"]
    result = verify(path)
    assert (result.ok, result.lines, result.first_bad_line) == (True, 20, None)


def test_empty_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).close()
    assert path.read_bytes() == b""
    assert verify(path).ok


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = write_log(path, 3)
    with AuditLog(path) as log:
        assert log.last_hash == first[-1]
        log.append(make_record(3))
    lines = [json.loads(raw) for raw in read_lines(path)]
    assert lines[3]["prev_hash"] == first[-1]
    assert verify(path).ok and verify(path).lines == 4


def test_non_ascii_text_is_kept_and_hashed_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append(make_record(reason="bloqué: «données» 🚫", user="zoë"))
    assert "«données» 🚫".encode() in path.read_bytes()
    assert verify(path).ok


def test_text_that_is_not_unicode_is_refused_not_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        with pytest.raises(AuditLogError, match="not valid Unicode"):
            log.append(make_record(user=b"al\xffce".decode(errors="surrogateescape")))
        log.append(make_record())
    assert verify(path).lines == 1


def alter(lines: list[bytes]) -> None:
    line = json.loads(lines[6])
    line["decision"] = "allow"
    lines[6] = json.dumps(line).encode() + b"\n"


def alter_and_rehash(lines: list[bytes]) -> None:
    line = json.loads(lines[6])
    line["decision"] = "allow"
    line["hash"] = line_hash(line)
    lines[6] = json.dumps(line).encode() + b"\n"


def delete_first(lines: list[bytes]) -> None:
    del lines[0]


def swap(lines: list[bytes]) -> None:
    lines[3], lines[4] = lines[4], lines[3]


def replace_line_3(bad: bytes) -> Callable[[list[bytes]], None]:
    return lambda lines: lines.__setitem__(2, bad)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (alter, "line 7: hash mismatch (record altered)"),
        (alter_and_rehash, "line 8: prev_hash does not match the hash of line 7"),
        (lambda lines: lines.pop(4), "line 5: prev_hash does not match the hash of line 4"),
        (delete_first, f"line 1: prev_hash does not start the chain (expected {GENESIS})"),
        (swap, "line 4: prev_hash does not match the hash of line 3"),
        (replace_line_3(b"{not json\n"), "line 3: not valid JSON"),
        (replace_line_3(b"\n"), "line 3: not valid JSON"),
        (replace_line_3(b'{"hash":"a","hash":"b","prev_hash":"c"}\n'), "line 3: not valid JSON"),
        (replace_line_3(b"[1, 2]\n"), "line 3: not an audit line (no hash or prev_hash)"),
        (replace_line_3(b'{"hash":"","prev_hash":"\\udc80"}\n'), "line 3: not valid Unicode"),
    ],
    ids=["altered", "rehashed", "deleted", "deleted-first", "reordered", "garbage", "blank",
         "duplicate-key", "not-an-object", "surrogate"],
)  # fmt: skip
def test_tampering_is_named_by_the_first_bad_line(
    tmp_path: Path, tamper: Callable[[list[bytes]], object], message: str
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    lines = read_lines(path)
    tamper(lines)
    path.write_bytes(b"".join(lines))
    result = verify(path)
    bad = int(message.split(":")[0].removeprefix("line "))
    assert (result.ok, result.first_bad_line, result.lines) == (False, bad, bad - 1)
    assert result.message == message


def test_a_missing_file_does_not_verify(tmp_path: Path) -> None:
    result = verify(tmp_path / "absent.jsonl")
    assert not result.ok and "cannot read" in result.message


def test_a_trailing_partial_line_is_set_aside_on_reopen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    hashes = write_log(path, 4)
    partial = read_lines(path)[1][:37]  # what a write cut short by a crash leaves behind
    with path.open("ab") as f:
        f.write(partial)
    assert verify(path).message == "line 5: incomplete line (no newline: a write was cut short)"

    with caplog.at_level(logging.WARNING), AuditLog(path) as log:
        assert log.last_hash == hashes[-1]
        log.append(make_record(4))

    [aside] = tmp_path.glob("audit.jsonl.corrupt-*")
    assert aside.read_bytes() == partial
    assert "partial line" in caplog.text and aside.name in caplog.text
    assert verify(path).ok and verify(path).lines == 5


def test_a_log_that_is_only_a_partial_line_starts_a_new_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"decision":"al')
    with AuditLog(path) as log:
        assert log.last_hash == GENESIS
        log.append(make_record())
    assert verify(path).ok
    assert len(list(tmp_path.glob("audit.jsonl.corrupt-*"))) == 1


def test_a_log_whose_last_line_is_no_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    with path.open("ab") as f:
        f.write(b"garbage\n")
    with pytest.raises(AuditLogError, match="last line is not an audit record"):
        AuditLog(path)


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path), pytest.raises(AuditLogError, match="another writer"):
        AuditLog(path)
    AuditLog(path).close()  # the lock goes with the first writer


@pytest.mark.parametrize("interval", [0, 0.01, 1.0])
def test_every_fsync_interval_writes_a_valid_chain(tmp_path: Path, interval: float) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync_interval_s=interval)
    for i in range(50):
        log.append(make_record(i))
    log.close()
    log.close()
    with pytest.raises(AuditLogError, match="closed"):
        log.append(make_record())
    assert verify(path).lines == 50


def test_concurrent_appends_form_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    threads, per_thread = 8, 250
    start = threading.Barrier(threads)
    returned: list[list[str]] = [[] for _ in range(threads)]

    with AuditLog(path) as log:

        def work(t: int) -> None:
            start.wait()
            for i in range(per_thread):
                returned[t].append(log.append(make_record(t * per_thread + i)))

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    result = verify(path)
    assert result.ok and result.lines == threads * per_thread
    in_file = [json.loads(raw)["hash"] for raw in read_lines(path)]
    assert sorted(in_file) == sorted(h for hashes in returned for h in hashes)
    for hashes in returned:  # each thread's lines appear in the order it wrote them
        positions = [in_file.index(h) for h in hashes]
        assert positions == sorted(positions)


APPEND_FOREVER = """
import sys
from policy_extproc.audit.chain import AuditLog
from policy_extproc.audit.record import AuditRecord, utc_timestamp

log = AuditLog(sys.argv[1], fsync_interval_s=1.0)
n = 0
while True:
    digest = log.append(AuditRecord(
        decision="allow", policy=None, rule=None, reason="no rule fired", user="u",
        environment="production", timestamp=utc_timestamp(), request_id=f"req-{n}",
    ))
    sys.stdout.write(digest + "\\n")
    sys.stdout.flush()
    n += 1
"""


def test_every_hash_returned_before_a_kill_is_in_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", APPEND_FOREVER, str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    returned: list[str] = []
    try:
        while len(returned) < 300:
            line = child.stdout.readline()
            assert line, "the appending process ended early"
            returned.append(line.decode().strip())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    # The last line may be cut short by the kill (a hash half-printed); only whole ones count.
    returned += [h for h in rest.decode().split("\n") if re.fullmatch(r"[0-9a-f]{64}", h)]

    in_file = [json.loads(raw)["hash"] for raw in read_lines(path)]
    assert in_file[: len(returned)] == returned
    assert verify(path).ok

    with AuditLog(path) as log:  # and the chain goes on after the crash
        log.append(make_record())
    assert verify(path).lines == len(in_file) + 1


FILE_SIZE_LIMIT = """
import os, resource, signal, sys
from policy_extproc.audit.chain import AuditLog, AuditLogError
from policy_extproc.audit.record import AuditRecord

def record(n):
    return AuditRecord(decision="allow", policy=None, rule=None, reason="r", user=None,
                       environment=None, timestamp="2024-05-01T12:00:00.000001Z", request_id=str(n))

log = AuditLog(sys.argv[1])
log.append(record(0))
# The disk "fills up" 100 bytes further on: the next line is only partly written.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(sys.argv[1]) + 100, -1))
try:
    log.append(record(1))
except AuditLogError as exc:
    print(exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (-1, -1))
log.append(record(2))
log.close()
"""


def test_a_partly_written_line_is_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    run = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, str(path)], capture_output=True, check=True
    )
    assert b"write failed: short write" in run.stdout
    assert [json.loads(raw)["request_id"] for raw in read_lines(path)] == ["0", "2"]
    assert verify(path).ok


# --- sinks ------------------------------------------------------------------------------------


def test_jsonl_sink_appends_to_its_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(AuditLog(path))
    sink.emit(make_record(1), trace_context={"traceparent": "ignored"})
    sink.emit(make_record(2))
    sink.close()
    assert [json.loads(raw)["request_id"] for raw in read_lines(path)] == ["req-1", "req-2"]
    assert verify(path).ok


def test_recording_sink_keeps_records_and_trace_context() -> None:
    sink = RecordingSink()
    context: Mapping[str, str] = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    sink.emit(make_record(1), trace_context=context)
    sink.emit(make_record(2))
    assert [r.request_id for r in sink.records] == ["req-1", "req-2"]
    assert [e.trace_context for e in sink.emitted] == [context, None]
    sink.close()
    with pytest.raises(RuntimeError):
        sink.emit(make_record(3))


class FailingSink:
    def emit(self, record: AuditRecord, *, trace_context: Mapping[str, str] | None = None) -> None:
        raise AuditLogError("disk full")

    def close(self) -> None:
        raise OSError("close failed")


def test_fanout_reaches_every_sink_and_reraises_the_first_failure() -> None:
    first, failing, last = RecordingSink(), FailingSink(), RecordingSink()
    sinks: list[AuditSink] = [first, failing, last]
    fanout = FanoutSink(sinks)
    context = {"traceparent": "x"}
    with pytest.raises(AuditLogError, match="disk full"):
        fanout.emit(make_record(1), trace_context=context)
    assert first.records == last.records == [make_record(1)]
    assert last.emitted[0].trace_context == context
    with pytest.raises(OSError, match="close failed"):
        fanout.close()
    assert first.closed and last.closed


def test_every_sink_satisfies_the_protocol(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.jsonl") as log:
        for sink in (JsonlSink(log), RecordingSink(), FanoutSink([])):
            assert isinstance(sink, AuditSink)
