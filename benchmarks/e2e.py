"""End-to-end latency through a real Envoy: what the ext_proc sidecar adds to each request.

Starts a mock provider, the sidecar (by default the pass-through ext_proc server of
tests/envoy_harness.py, which measures the cost of Envoy's ext_proc round trips alone), and two
Envoys from the same template, one with the ext_proc filter and one without. Then, for each
target (the mock directly, Envoy without ext_proc, Envoy with it):

- open loop: requests sent at a fixed rate whatever the answers do, latency measured from each
  request's scheduled send time, so a stall is not hidden by the requests it delays;
- closed loop: C connections sending back to back, for the maximum throughput.

Prints figures; asserts nothing. Usage:

    .venv/bin/python benchmarks/e2e.py [--rate 300] [--duration 10] [--concurrency 16]
        [--sidecar-cmd 'policy-extproc serve --policies examples/policies --listen {listen}']
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from tests.envoy_harness import (
    EnvoyPorts,
    EnvoyProcess,
    ManagedProcess,
    MockProviderProcess,
    PassThroughProcess,
    free_port,
)

# --- the load generator: raw HTTP/1.1 over keep-alive connections ----------------------------


class Connection:
    """One keep-alive HTTP/1.1 client connection that sends a prepared request and reads replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        """Connect, with Nagle off as HTTP clients do."""
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bool]:
        """Send raw, read the whole response: (status, whether the connection stays open)."""
        self.writer.write(raw)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        if "transfer-encoding: chunked" in head:
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        elif (at := head.find("content-length:")) >= 0:
            await self.reader.readexactly(int(head[at + 15 :].split("\r\n", 1)[0]))
        return status, "connection: close" not in head

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()


@dataclass
class Result:
    """Latencies of one run."""

    label: str
    latencies: list[float]
    errors: int
    elapsed: float

    def percentile(self, q: float) -> float:
        """The q-quantile of the latencies, in milliseconds (nearest rank)."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    def row(self, target: str) -> str:
        """One line of the report table."""
        done = len(self.latencies)
        p = [self.percentile(q) for q in (0.5, 0.9, 0.99, 1.0)]
        return (
            f"{target:<22}{self.label:<16}{done:>8}{self.errors:>7}{done / self.elapsed:>9.0f}"
            + "".join(f"{v:>9.2f}" for v in p)
        )


HEADER = (
    f"{'target':<22}{'mode':<16}{'ok':>8}{'errors':>7}{'req/s':>9}"
    f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
)


async def _send(host: str, port: int, raw: bytes, idle: list[Connection]) -> tuple[int, float]:
    """One request on an idle connection (or a new one): (status, seconds it took)."""
    conn = idle.pop() if idle else await Connection.open(host, port)
    started = time.perf_counter()
    try:
        status, keep = await conn.request(raw)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        conn.close()
        raise
    elapsed = time.perf_counter() - started
    if keep:
        idle.append(conn)
    else:
        conn.close()
    return status, elapsed


async def open_loop(host: str, port: int, raw: bytes, rate: float, duration: float) -> Result:
    """Send rate requests/s for duration seconds on as many connections as in flight."""
    idle: list[Connection] = []
    latencies: list[float] = []
    errors = 0
    count = int(rate * duration)
    start = time.perf_counter()

    async def one(scheduled: float) -> None:
        nonlocal errors
        try:
            status, _ = await _send(host, port, raw, idle)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            return
        if status != 200:
            errors += 1
        else:  # from the scheduled time: a late send counts against the system (no omission)
            latencies.append(time.perf_counter() - scheduled)

    tasks = []
    for i in range(count):
        scheduled = start + i / rate
        if (delay := scheduled - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for conn in idle:
        conn.close()
    return Result(f"open {rate:g}/s", latencies, errors, elapsed)


async def closed_loop(
    host: str, port: int, raw: bytes, connections: int, duration: float
) -> Result:
    """connections workers, each sending its next request when the last one is answered."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        idle: list[Connection] = []
        while time.perf_counter() < deadline:
            try:
                status, took = await _send(host, port, raw, idle)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                continue
            if status == 200:
                latencies.append(took)
            else:
                errors += 1
        for conn in idle:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return Result(f"closed c={connections}", latencies, errors, time.perf_counter() - start)


def chat_request(port: int, prompt_chars: int, team: str = "ml") -> bytes:
    """A prepared POST /v1/chat/completions with a prompt of prompt_chars characters."""
    words = ("the quick brown fox jumps over the lazy dog " * (prompt_chars // 44 + 1))[
        :prompt_chars
    ]
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": words}]})
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        # The example policies' org and team: baseline and team rules (model access, keyword,
        # regex and topic filters, redaction) are all evaluated on every request.
        f"x-org-id: acme\r\nx-team-id: {team}\r\nx-user-id: bench-user\r\n"
        "x-environment: bench\r\n\r\n"
    )
    return head.encode() + body.encode()


# --- the processes under test --------------------------------------------------------------


class SidecarCommand(ManagedProcess):
    """A sidecar started from a command line; ready once its port accepts connections."""

    def __init__(self, command: str) -> None:
        port = free_port()
        audit = Path(tempfile.mkdtemp(prefix="bench-audit-")) / "audit.jsonl"
        argv = shlex.split(command.format(listen=f"127.0.0.1:{port}", port=port, audit=audit))
        super().__init__(argv, "sidecar")
        self.port = port

    def start(self, timeout: float = 30.0) -> SidecarCommand:
        """Spawn; return once the port accepts a TCP connection."""
        self.spawn()

        def accepting() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        self.poll("port open", accepting, timeout)
        return self


ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIDECAR = (
    f"{Path(sys.executable).parent / 'policy-extproc'} serve --log-level warning "
    f"--policies {ROOT / 'examples' / 'policies'} --policies {ROOT / 'benchmarks' / 'policies'} "
    "--audit-log {audit} --listen {listen}"
)


def start_sidecar(command: str | None) -> ManagedProcess:
    """Start the ext_proc server Envoy calls; returns it started, with its port.

    The real sidecar (`policy-extproc serve` with examples/policies) unless --sidecar-cmd names
    another command ({listen} and {port} are filled in) or --passthrough asks for the
    pass-through processor, which answers every phase with nothing to do (Envoy's own cost).
    """
    if command == "passthrough":
        sidecar: ManagedProcess = PassThroughProcess()
    else:
        sidecar = SidecarCommand(command or DEFAULT_SIDECAR)
    return sidecar.start()


async def measure(
    targets: dict[str, int], args: argparse.Namespace, report: Callable[[str], None]
) -> dict[tuple[str, str], Result]:
    """Warm up, then run each mode against each target; print rows as they come."""
    results: dict[tuple[str, str], Result] = {}
    for name, port in targets.items():
        raw = chat_request(port, args.prompt_chars, args.team)
        await closed_loop("127.0.0.1", port, raw, 4, args.warmup)  # connections, caches, JIT-free
        if args.mode in ("open", "both"):
            results[name, "open"] = await open_loop(
                "127.0.0.1", port, raw, args.rate, args.duration
            )
            report(results[name, "open"].row(name))
        if args.mode in ("closed", "both"):
            res = await closed_loop("127.0.0.1", port, raw, args.concurrency, args.duration)
            results[name, "closed"] = res
            report(res.row(name))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=300.0, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per target")
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: connections")
    parser.add_argument("--mode", choices=["open", "closed", "both"], default="both")
    parser.add_argument("--prompt-chars", type=int, default=400, help="size of the user prompt")
    parser.add_argument("--sidecar-cmd", help="command starting the sidecar; {listen} is filled in")
    parser.add_argument(
        "--team",
        default="ml",
        help="team of the requests: ml (a budget: the sidecar reads every response for its "
        "usage) or support (no rule reads the response: 2 ext_proc messages per request)",
    )
    parser.add_argument(
        "--passthrough",
        action="store_true",
        help="measure a do-nothing ext_proc server instead of the sidecar",
    )
    parser.add_argument("--no-direct", action="store_true", help="skip the mock-direct target")
    args = parser.parse_args(argv)

    started: list[ManagedProcess] = []
    try:
        mock = MockProviderProcess("openai").start()
        started.append(mock)
        sidecar = start_sidecar("passthrough" if args.passthrough else args.sidecar_cmd)
        started.append(sidecar)
        ports = EnvoyPorts(
            extproc=sidecar.port,
            openai=mock.port,
            azure=mock.port,
            anthropic=mock.port,
            listen=0,
            admin=0,
        )
        with_ext = EnvoyProcess(ports, ext_proc=True)
        started.append(with_ext)
        with_ext.start()
        without = EnvoyProcess(ports, ext_proc=False)
        started.append(without)
        without.start()
        targets = {"envoy": without.port, "envoy+ext_proc": with_ext.port}
        if not args.no_direct:
            targets = {"mock (direct)": mock.port, **targets}
        sidecar_name = (
            "pass-through ext_proc (tests/envoy_harness.py)"
            if args.passthrough
            else args.sidecar_cmd or "policy-extproc serve, examples/policies"
        )
        print(
            f"sidecar: {sidecar_name}\nprompt: {args.prompt_chars} chars, {args.duration:g} s "
            f"per run, Envoy --concurrency 1\n\n{HEADER}",
            flush=True,
        )
        results = asyncio.run(measure(targets, args, lambda row: print(row, flush=True)))
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in reversed(started):
            with contextlib.suppress(Exception):
                proc.stop()

    print()
    for mode in ("open", "closed"):
        base, ext = results.get(("envoy", mode)), results.get(("envoy+ext_proc", mode))
        if base and ext:
            added = [ext.percentile(q) - base.percentile(q) for q in (0.5, 0.99)]
            print(f"ext_proc adds ({ext.label}): p50 {added[0]:+.2f} ms, p99 {added[1]:+.2f} ms")
            if mode == "closed":
                rates = [len(r.latencies) / r.elapsed for r in (base, ext)]
                print(f"closed-loop throughput: {rates[0]:.0f} -> {rates[1]:.0f} req/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
