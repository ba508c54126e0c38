"""The ``/metrics`` and ``/healthz`` endpoint: a small HTTP server on a thread of its own, so a
scrape never runs on the event loop that serves Envoy."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9090`` for IPv6; port 0 picks a free one) as (host, port)."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics listen address must be HOST:PORT, not {listen!r}")
    return host, int(port)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow scraper must not hold up shutdown


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    server_version = "policy-extproc"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            # Prometheus asks for OpenMetrics in Accept; anything else gets the text format.
            encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
            self._reply(200, content_type, encoder(self.registry))
        elif path == "/healthz":
            self._reply(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found: /metrics or /healthz\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds would drown the sidecar's own log
