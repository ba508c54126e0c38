"""What the end-to-end benchmarks share: a raw HTTP/1.1 load generator (open and closed loop),
the processes under test (mock provider, sidecar, Envoys), and the sidecar's CPU time.

Used by benchmarks/e2e.py and benchmarks/overload.py; prints nothing itself, asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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

__all__ = [
    "DEFAULT_SIDECAR",
    "HEADER",
    "EnvoyPorts",
    "EnvoyProcess",
    "ManagedProcess",
    "MockProviderProcess",
    "Result",
    "chat_request",
    "closed_loop",
    "cpu_seconds",
    "envoy_for",
    "open_loop",
    "spread",
    "start_sidecar",
]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIDECAR = (
    f"{Path(sys.executable).parent / 'policy-extproc'} serve --log-level warning "
    f"--policies {ROOT / 'examples' / 'policies'} --policies {ROOT / 'benchmarks' / 'policies'} "
    "--audit-log {audit} --listen {listen}"
)
# A request not answered in this long counts as a timeout (the client gave up).
CLIENT_TIMEOUT_S = 5.0


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

    async def request(self, raw: bytes) -> tuple[int, bool, bytes]:
        """Send raw, read the whole response: (status, whether the connection stays open,
        the body of a non-chunked answer)."""
        self.writer.write(raw)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        body = b""
        if "transfer-encoding: chunked" in head:
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        elif (at := head.find("content-length:")) >= 0:
            body = await self.reader.readexactly(int(head[at + 15 :].split("\r\n", 1)[0]))
        return status, "connection: close" not in head, body

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()


@dataclass
class Result:
    """One run: latencies of the answered (200) requests, and how the others ended."""

    label: str
    latencies: list[float]
    elapsed: float
    statuses: Counter[int] = field(default_factory=Counter)  # every status, 200 included
    # The error code of each refused answer (its JSON body's error.code): overloaded (shed by
    # the sidecar), policy_timeout (Envoy's message_timeout: the shipped config's 503), ...
    codes: Counter[str] = field(default_factory=Counter)
    failed: int = 0  # connection errors and client timeouts
    sent: int = 0

    @property
    def errors(self) -> int:
        """Requests not answered 200."""
        return self.failed + sum(n for s, n in self.statuses.items() if s != 200)

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


def error_code(body: bytes) -> str:
    """The ``error.code`` of a JSON error body, else ``?``."""
    try:
        error = json.loads(body).get("error")
        return str(error.get("code") or error.get("type") or "?")
    except (ValueError, AttributeError):
        return "?"


async def _send(
    host: str, port: int, raw: bytes, idle: list[Connection], res: Result
) -> tuple[int, float]:
    """One request on an idle connection (or a new one): (status, seconds it took); counted
    in ``res`` by status (and error code)."""
    conn = idle.pop() if idle else await Connection.open(host, port)
    started = time.perf_counter()
    try:
        status, keep, body = await asyncio.wait_for(conn.request(raw), CLIENT_TIMEOUT_S)
    except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
        conn.close()
        raise
    elapsed = time.perf_counter() - started
    if keep:
        idle.append(conn)
    else:
        conn.close()
    res.statuses[status] += 1
    if status != 200:
        res.codes[error_code(body)] += 1
    return status, elapsed


async def open_loop(host: str, port: int, raw: bytes, rate: float, duration: float) -> Result:
    """Send rate requests/s for duration seconds on as many connections as in flight.

    Latency is measured from each request's scheduled send time, so a stall is not hidden by
    the requests it delays (no coordinated omission).
    """
    idle: list[Connection] = []
    count = int(rate * duration)
    res = Result(f"open {rate:g}/s", [], 0.0, sent=count)
    start = time.perf_counter()

    async def one(scheduled: float) -> None:
        try:
            status, _ = await _send(host, port, raw, idle, res)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
            res.failed += 1
            return
        if status == 200:
            res.latencies.append(time.perf_counter() - scheduled)

    tasks = []
    for i in range(count):
        scheduled = start + i / rate
        if (delay := scheduled - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    res.elapsed = time.perf_counter() - start
    for conn in idle:
        conn.close()
    return res


async def closed_loop(
    host: str, port: int, raw: bytes, connections: int, duration: float
) -> Result:
    """connections workers, each sending its next request when the last one is answered."""
    res = Result(f"closed c={connections}", [], 0.0)
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        idle: list[Connection] = []
        while time.perf_counter() < deadline:
            res.sent += 1
            try:
                status, took = await _send(host, port, raw, idle, res)
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
                res.failed += 1
                continue
            if status == 200:
                res.latencies.append(took)
        for conn in idle:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    res.elapsed = time.perf_counter() - start
    return res


def chat_request(port: int, prompt_chars: int, team: str = "ml", *, stream: bool = False) -> bytes:
    """A prepared POST /v1/chat/completions with a prompt of prompt_chars characters
    (``stream``: asking for an SSE answer, read to its end)."""
    words = ("the quick brown fox jumps over the lazy dog " * (prompt_chars // 44 + 1))[
        :prompt_chars
    ]
    payload: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": words}],
    }
    if stream:
        payload["stream"] = True
    body = json.dumps(payload)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        # The example policies' org and team: baseline and team rules (model access, keyword,
        # regex and topic filters, redaction) are all evaluated on every request.
        f"x-org-id: acme\r\nx-team-id: {team}\r\nx-user-id: bench-user\r\n"
        "x-environment: bench\r\n\r\n"
    )
    return head.encode() + body.encode()


def spread(values: Iterable[float]) -> str:
    """``median [min..max]`` of a few rounds' figures."""
    v = list(values)
    if not v:
        return "-"
    return f"{statistics.median(v):.2f} [{min(v):.2f}..{max(v):.2f}]"


def added(base: Sequence[Result], runs: Sequence[Result]) -> tuple[str, str]:
    """The added p50 and p99 of ``runs`` over the baseline's run of the same round, as spreads."""
    pairs = list(zip(base, runs, strict=True))
    p50 = [r.percentile(0.5) - b.percentile(0.5) for b, r in pairs]
    p99 = [r.percentile(0.99) - b.percentile(0.99) for b, r in pairs]
    return spread(p50), spread(p99)


def print_closed(closed: Sequence[tuple[str, Sequence[Result]]], width: int) -> None:
    """The closed loops' throughput per configuration, if any ran (names padded to at least
    ``width``, and past the longest name)."""
    width = max([width, *(len(name) + 2 for name, _ in closed)])
    if any(runs for _, runs in closed):
        print("\nclosed-loop throughput, req/s (median [min..max] of rounds):")
        for name, runs in closed:
            print(f"  {name:<{width}}{spread(len(r.latencies) / r.elapsed for r in runs)}")


# --- the processes under test --------------------------------------------------------------


class SidecarCommand(ManagedProcess):
    """A sidecar started from a command line; ready once its port accepts connections."""

    def __init__(self, command: str) -> None:
        super().__init__([], "sidecar")  # its workdir (logs, audit log) goes when it stops
        port = free_port()
        audit = self.workdir / "audit.jsonl"
        self.argv = shlex.split(command.format(listen=f"127.0.0.1:{port}", port=port, audit=audit))
        self.port = port
        # The admin API's default port is fixed, and a benchmark runs several sidecars at once:
        # none unless the command asks for one (--admin-listen overrides the environment).
        self.env = {**os.environ, "POLICY_EXTPROC_ADMIN_LISTEN": "off"}

    def start(self, timeout: float = 30.0) -> SidecarCommand:
        """Spawn; return once the port accepts a TCP connection."""
        self.spawn()

        def accepting() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        self.poll("port open", accepting, timeout)
        return self


def start_sidecar(command: str | None) -> ManagedProcess:
    """Start the ext_proc server Envoy calls; returns it started, with its port.

    The real sidecar (`policy-extproc serve` with examples/policies) unless ``command`` names
    another command ({listen}, {port} and {audit} are filled in), or is "passthrough": the
    pass-through processor, which answers every phase with nothing to do (Envoy's own cost).
    """
    if command == "passthrough":
        sidecar: ManagedProcess = PassThroughProcess()
    elif command == "passthrough-h2":
        sidecar = PassThroughProcess(transport="h2")
    else:
        sidecar = SidecarCommand(command or DEFAULT_SIDECAR)
    return sidecar.start()


def envoy_for(mock_port: int, extproc_port: int | None) -> EnvoyProcess:
    """A started Envoy in front of the mock; with ext_proc unless extproc_port is None."""
    ports = EnvoyPorts(
        extproc=extproc_port or free_port(),
        openai=mock_port,
        azure=mock_port,
        anthropic=mock_port,
        listen=0,
        admin=0,
    )
    return EnvoyProcess(ports, ext_proc=extproc_port is not None).start()


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def cpu_seconds(proc: ManagedProcess) -> float:
    """User + system CPU time of a process and its children so far (Linux /proc)."""
    if proc.proc is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _tree(proc.proc.pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / tick
