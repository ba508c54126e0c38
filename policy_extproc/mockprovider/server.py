"""The mock provider server: connection handling, failure injection, control and stats, CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import threading
from collections.abc import Sequence
from typing import Any

from policy_extproc.mockprovider._http import (
    MAX_HEADER_BYTES,
    HttpError,
    Request,
    encode_head,
    read_body,
    read_head,
)
from policy_extproc.mockprovider.apis import BadRequest, Json, Reply, dumps
from policy_extproc.mockprovider.routes import api_for, error_body, stream_type


class MockProvider:
    """The fake provider server: `async with` it in a running loop, or start()/stop() a thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "mock",
        fail_rate: float = 0.0,
        latency_ms: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.host, self.port, self.name = host, port, name
        self.fail_rate, self.latency_ms = fail_rate, latency_ms
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # stats are read from test threads
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.reset()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:18081."""
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget the requests counted so far."""
        with self._lock:
            self._total = 0
            self._by_path: dict[str, int] = {}
            self._last: tuple[str | None, dict[str, str], Any] = (None, {}, None)

    def configure(self, *, fail_rate: float | None = None, latency_ms: float | None = None) -> None:
        """Change failure rate or latency at run time."""
        if fail_rate is not None:
            if not 0.0 <= fail_rate <= 1.0:
                raise ValueError("fail_rate must be between 0 and 1")
            self.fail_rate = fail_rate
        if latency_ms is not None:
            if latency_ms < 0:
                raise ValueError("latency_ms must not be negative")
            self.latency_ms = latency_ms

    def settings(self) -> Json:
        """Current name, fail_rate and latency_ms."""
        return {"name": self.name, "fail_rate": self.fail_rate, "latency_ms": self.latency_ms}

    def stats(self) -> Json:
        """Requests received: total, per path, and the last one's path, headers and body."""
        with self._lock:
            path, headers, body = self._last
            return {
                "name": self.name,
                "total": self._total,
                "by_path": dict(self._by_path),
                "last_path": path,
                "last_headers": dict(headers),
                "last_body": body,
            }

    async def start_serving(self) -> None:
        """Bind and start accepting in the running loop; port 0 picks a free port."""
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, limit=MAX_HEADER_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop accepting and close open keep-alive connections."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> MockProvider:
        await self.start_serving()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self, timeout: float = 10.0) -> MockProvider:
        """Serve from a background thread with its own event loop; returns once listening."""
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            try:
                await self.start_serving()
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                started.set()
            await self._stopping.wait()
            await self.aclose()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), daemon=True, name=f"mock-provider-{self.name}"
        )
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"mock provider {self.name} did not start in {timeout}s")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread started by start()."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        self._thread = None

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        try:
            while (req := await read_head(reader)) is not None:
                if req.headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                req.body = await read_body(reader, req)
                await self._respond(req, writer)
                if not req.keep_alive:
                    break
        except HttpError as exc:
            body = dumps(error_body("", exc.status, str(exc)))
            await self._send(writer, exc.status, "application/json", body, keep_alive=False)
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            pass  # the peer went away or sent garbage framing: nothing left to answer
        except asyncio.CancelledError:
            # Shutdown cancels idle keep-alive connections; the task ends here either way, and
            # Python 3.11's stream callback would otherwise print each as an error.
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        body: bytes,
        *,
        keep_alive: bool,
    ) -> None:
        headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("x-mock-provider", self.name),
            ("connection", "keep-alive" if keep_alive else "close"),
        ]
        if status in (429, 503, 529):
            headers.append(("retry-after", "1"))
        writer.write(encode_head(status, headers) + body)
        await writer.drain()

    async def _send_sse(
        self, writer: asyncio.StreamWriter, frames: list[bytes], content_type: str
    ) -> None:
        headers = [
            ("content-type", content_type),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
            ("x-mock-provider", self.name),
        ]
        writer.write(encode_head(200, headers))
        for frame in frames:  # one chunk per event, flushed, so a client sees them arrive apart
            writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    def _record(self, req: Request) -> None:
        try:
            body: Any = json.loads(req.body) if req.body else None
        except ValueError:
            body = req.body.decode("utf-8", "replace")
        with self._lock:
            self._total += 1
            self._by_path[req.path] = self._by_path.get(req.path, 0) + 1
            self._last = (req.path, dict(req.headers), body)

    def _control(self, req: Request) -> tuple[int, Json]:
        if req.method == "POST":
            try:
                change = json.loads(req.body or b"{}")
                if change.pop("reset", False):
                    self.reset()
                self.configure(**change)
            except (ValueError, TypeError, AttributeError) as exc:
                return 400, error_body("", 400, f"bad control request: {exc}")
        return 200, self.settings()

    async def _respond(self, req: Request, writer: asyncio.StreamWriter) -> None:
        json_type = "application/json"
        if req.path in ("/healthz", "/mock/stats", "/mock/control"):
            status, body = 200, {"status": "ok"}
            if req.path == "/mock/stats":
                body = self.stats()
            elif req.path == "/mock/control":
                status, body = self._control(req)
            await self._send(writer, status, json_type, dumps(body), keep_alive=req.keep_alive)
            return
        self._record(req)
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        status, reply = self._answer(req)
        if isinstance(reply, list):
            await self._send_sse(writer, reply, stream_type(req.path))
        else:
            await self._send(writer, status, json_type, dumps(reply), keep_alive=req.keep_alive)

    def _answer(self, req: Request) -> tuple[int, Reply]:
        api = api_for(f"{req.path}?{req.query}")
        if api is None or req.method != "POST":
            return 404, error_body(req.path, 404, f"Invalid URL ({req.method} {req.path})")
        forced = req.headers.get("x-mock-status", "")
        status = int(forced) if forced.isdigit() and 400 <= int(forced) <= 599 else 0
        if not status and self.fail_rate and self._rng.random() < self.fail_rate:
            status = 503
        if status:
            return status, error_body(req.path, status, f"mock provider {self.name}: {status}")
        try:
            payload = json.loads(req.body)
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
            return 200, api(payload)
        except BadRequest as exc:
            return 400, error_body(req.path, 400, str(exc))
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            return 400, error_body(req.path, 400, f"We could not parse the JSON body: {exc}")


async def serve(
    host: str,
    port: int,
    *,
    fail_rate: float = 0.0,
    name: str = "mock",
    latency_ms: float = 0.0,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled; ready is set once listening."""
    async with MockProvider(host, port, name=name, fail_rate=fail_rate, latency_ms=latency_ms):
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') into host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def run(listen: str, fail_rate: float = 0.0, name: str = "mock", latency_ms: float = 0.0) -> None:
    """Serve on listen until SIGINT or SIGTERM; prints one 'listening on URL' line when ready."""
    host, port = parse_listen(listen)

    async def serve_until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with MockProvider(
            host, port, name=name, fail_rate=fail_rate, latency_ms=latency_ms
        ) as provider:
            # Harnesses that bind port 0 read the real port from this line.
            print(f"mock-provider {name} listening on {provider.url}", flush=True)
            await stop.wait()

    asyncio.run(serve_until_signalled())


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: mock-provider --listen HOST:PORT [--fail-rate F] [--name NAME] [--latency-ms MS]."""
    parser = argparse.ArgumentParser(
        prog="policy-extproc mock-provider",
        description="An OpenAI- and Anthropic-compatible fake LLM provider for demos and tests.",
    )
    parser.add_argument("--listen", default="127.0.0.1:18080", help="HOST:PORT (port 0: any)")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction failed with 503")
    parser.add_argument("--name", default="mock", help="value of the x-mock-provider header")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    args = parser.parse_args(argv)
    if not 0.0 <= args.fail_rate <= 1.0:
        parser.error("--fail-rate must be between 0 and 1")
    run(args.listen, args.fail_rate, args.name, args.latency_ms)
    return 0
