"""Just enough HTTP/1.1 (RFC 9112) for the mock: keep-alive, Content-Length and chunked bodies."""

from __future__ import annotations

import asyncio
import http
from collections.abc import Sequence

MAX_HEADER_BYTES = 64 * 1024
# Above the 4 MiB limit of envoy/envoy.yaml, so what tests see is Envoy's limit, not the mock's.
MAX_BODY_BYTES = 16 * 1024 * 1024


class HttpError(Exception):
    """A request the mock refuses before it reaches an API handler; carries the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    """One parsed HTTP/1.1 request: header names lower-cased, path without its query."""

    __slots__ = ("body", "headers", "method", "path", "query", "version")

    def __init__(
        self, method: str, path: str, version: str, headers: dict[str, str], query: str = ""
    ) -> None:
        self.method, self.path, self.version, self.headers = method, path, version, headers
        self.query = query  # Gemini's alt=sse asks for a stream
        self.body = b""

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the response (RFC 9112 section 9.3)."""
        conn = self.headers.get("connection", "").lower()
        return "close" not in conn if self.version == "HTTP/1.1" else "keep-alive" in conn


async def read_head(reader: asyncio.StreamReader) -> Request | None:
    """The next request's line and headers; None when the peer closed an idle connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HttpError(400, "incomplete request head") from exc
        return None  # the peer closed an idle keep-alive connection
    except asyncio.LimitOverrunError as exc:
        raise HttpError(431, "request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError as exc:
        raise HttpError(400, "bad request line") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            key, sep, value = line.partition(":")
            if not sep:
                raise HttpError(400, "bad header line")
            key = key.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    path, _, query = target.partition("?")
    return Request(method, path, version, headers, query)


async def read_body(reader: asyncio.StreamReader, req: Request) -> bytes:
    """The request body, framed by Transfer-Encoding: chunked or Content-Length (RFC 9112 6)."""
    if "chunked" in req.headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        total = 0
        while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16):
            total += size
            if total > MAX_BODY_BYTES:
                raise HttpError(413, "request body too large")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, ignored
            pass
        return b"".join(parts)
    try:
        length = int(req.headers.get("content-length") or 0)
    except ValueError as exc:
        raise HttpError(400, "bad content-length") from exc
    if length > MAX_BODY_BYTES:
        raise HttpError(413, "request body too large")
    return await reader.readexactly(length) if length else b""


def encode_head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    """A response's status line and headers."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")
