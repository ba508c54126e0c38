"""What auditing a decision costs on the request path.

    .venv/bin/python benchmarks/audit.py [--dir DIR] [-n N]

Prints the cost of one ``AuditLog.append`` (fsync every second in the background, and fsync on
every append), with one thread and with four contending, and of one ``OtelSink.emit`` exporting
to an in-process OTLP receiver. ``--dir`` should be on the disk the audit log will live on:
fsync on tmpfs costs nothing and says nothing. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script from anywhere: the repository root holds the package and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy_extproc.audit.chain import AuditLog, verify
from policy_extproc.audit.record import (
    AuditRecord,
    FiredRule,
    Usage,
    redaction_counts,
    utc_timestamp,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def make_record(n: int) -> AuditRecord:
    return AuditRecord(
        decision="modify",
        policy="dev_team_restrictions",
        rule="pii",
        reason="redacted 2 EMAIL, 1 US_SSN",
        user="alice@acme.example",
        environment="production",
        timestamp=utc_timestamp(),
        request_id=f"7f3c9a52-1d2e-4c8b-9a0f-{n:012d}",
        org="acme",
        team="ml-platform",
        model="gpt-4o-mini",
        provider="openai",
        compliance=("SOC2", "HIPAA"),
        fired=(
            FiredRule("dev_team_restrictions", "pii", "modify"),
            FiredRule("org_baseline", "rate_limit", "allow"),
        ),
        redactions=redaction_counts({"EMAIL": 2, "US_SSN": 1}),
        usage=Usage(1200, 350),
        cost_usd=0.00042,
        latency_us=850,
        policy_version="2024-05-01T12:00:00Z#41",
    )


def timed(
    call: Callable[[AuditRecord], object], records: list[AuditRecord], rate: float = 0
) -> list[int]:
    """The cost of each call; with ``rate``, calls are paced to that many per second."""
    costs = []
    begin = time.perf_counter()
    for i, record in enumerate(records):
        if rate:
            time.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        start = time.perf_counter_ns()
        call(record)
        costs.append(time.perf_counter_ns() - start)
    return costs


def report(label: str, costs_ns: list[int]) -> None:
    costs = sorted(costs_ns)
    p50 = costs[len(costs) // 2] / 1000
    p99 = costs[len(costs) * 99 // 100] / 1000
    p999 = costs[len(costs) * 999 // 1000] / 1000
    mean = statistics.fmean(costs) / 1000
    print(
        f"{label:<40} n={len(costs):>6}  p50 {p50:7.1f}  p99 {p99:7.1f}  p99.9 {p999:8.1f}"
        f"  max {costs[-1] / 1000:8.1f}  mean {mean:7.1f} (us)"
    )


def bench_append(directory: Path, n: int, interval: float, threads: int) -> None:
    path = directory / f"audit-{interval}-{threads}.jsonl"
    per_thread = n // threads
    batches = [[make_record(t * per_thread + i) for i in range(per_thread)] for t in range(threads)]
    costs: list[list[int]] = [[] for _ in range(threads)]
    with AuditLog(path, fsync_interval_s=interval) as log:
        timed(log.append, [make_record(-1)] * 200)  # warm up
        start = threading.Barrier(threads)

        def work(t: int) -> None:
            start.wait()
            costs[t] = timed(log.append, batches[t])

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    every = "every append" if interval == 0 else f"every {interval:g} s"
    plural = "s" if threads > 1 else ""
    report(f"append, fsync {every}, {threads} thread{plural}", [c for cs in costs for c in cs])
    result = verify(path)
    assert result.ok, result.message  # a broken chain would make the figures meaningless
    size = path.stat().st_size
    print(f"{'':<40} {result.lines} lines, {size / result.lines:.0f} bytes per line")


def bench_verify(directory: Path) -> None:
    path = directory / "audit-1.0-1.jsonl"
    start = time.perf_counter()
    result = verify(path)
    elapsed = time.perf_counter() - start
    print(f"{'verify':<40} {result.lines / elapsed:,.0f} lines/s")


def bench_otel(n: int) -> None:
    try:
        from policy_extproc.audit.otel import OtelSink
        from tests.otlp_receiver import OtlpReceiver
    except ImportError as exc:
        print(f"OtelSink.emit: not measured, OpenTelemetry does not import: {exc}")
        return
    records = [make_record(i) for i in range(n)]
    with OtlpReceiver() as receiver:
        sink = OtelSink(receiver.endpoint)
        context = {"traceparent": TRACEPARENT}
        emitted = 0
        for rate in (2000, 0):  # a steady load, then as fast as it goes (the queue overflows)
            timed(sink.emit, records[:200])  # warm up
            paced = f"{rate}/s" if rate else "flat out"
            report(f"OtelSink.emit, {paced}", timed(sink.emit, records, rate))
            with_parent = timed(lambda r: sink.emit(r, trace_context=context), records, rate)
            report(f"OtelSink.emit, {paced}, with traceparent", with_parent)
            emitted += 2 * n + 200
        start = time.perf_counter()
        sink.close()
        print(f"{'OtelSink.close (flushes the queue)':<40} {time.perf_counter() - start:.3f} s")
        print(f"{'':<40} {len(receiver.spans)} spans received of {emitted}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to write the test logs")
    parser.add_argument("-n", type=int, default=20_000, help="records per figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="audit-bench-") as tmp:
        directory = Path(tmp)
        print(f"audit logs in {directory}")
        bench_append(directory, args.n, 1.0, 1)
        bench_append(directory, args.n, 1.0, 4)
        bench_append(directory, max(1, args.n // 10), 0, 1)
        bench_append(directory, max(4, args.n // 10), 0, 4)
        bench_verify(directory)
    bench_otel(args.n)


if __name__ == "__main__":
    main()
