"""Sign-in, sessions, CSRF and the headers every answer carries.

A person signs in with an admin token (the same ``name:role:token`` identities as the admin
API); the session is kept here, server-side, under a random id in an HttpOnly, SameSite=Strict
cookie, and calls to the admin API carry that person's own token, so the admin API enforces
the role again. Every POST carries the session's CSRF token (a form field or, for htmx, the
``x-csrf-token`` header), compared in constant time. With no token configured the dashboard
listens on loopback only and everyone on this host is the local admin.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..admin.auth import Identities, Identity

COOKIE = "pe_session"
LOGIN_COOKIE = "pe_login"  # the CSRF token of the sign-in form, before there is a session
SESSION_S = 8 * 3600.0
MAX_SESSIONS = 10_000
LOCAL = Identity("local", "admin")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in person: who, their token (to call the admin API as them), the CSRF token."""

    identity: Identity
    token: str | None
    csrf: str
    expires: float


class Sessions:
    """Sessions by random id, in this process (one dashboard replica, or sticky sessions)."""

    def __init__(self, identities: Identities) -> None:
        self.identities = identities
        self._by_id: dict[str, Session] = {}

    @property
    def open(self) -> bool:
        """No token configured: no sign-in (loopback only)."""
        return not self.identities

    def sign_in(self, token: str) -> tuple[str, Session] | None:
        identity = self.identities.identify(token.strip())
        if identity is None:
            return None
        return self._new(identity, token.strip())

    def local(self) -> tuple[str, Session]:
        return self._new(LOCAL, None)

    def _new(self, identity: Identity, token: str | None) -> tuple[str, Session]:
        now = time.time()
        if len(self._by_id) >= MAX_SESSIONS:
            self._by_id = {k: s for k, s in self._by_id.items() if s.expires > now}
            if len(self._by_id) >= MAX_SESSIONS:  # still full: the oldest go
                oldest = sorted(self._by_id, key=lambda k: self._by_id[k].expires)
                for k in oldest[: MAX_SESSIONS // 10]:
                    del self._by_id[k]
        sid = secrets.token_urlsafe(32)
        session = Session(identity, token, secrets.token_urlsafe(32), now + SESSION_S)
        self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        session = self._by_id.get(sid or "")
        if session is None:
            return None
        if session.expires < time.time():
            self._by_id.pop(sid or "", None)
            return None
        if (
            session.token is not None
            and self.identities.identify(session.token) != session.identity
        ):
            self._by_id.pop(sid or "", None)  # the token was revoked or its role changed
            return None
        return session

    def end(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two non-empty strings."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


class SecurityHeaders:
    """Adds the CSP and the other protective headers to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in HEADERS.items():
                    if key == "cache-control" and scope["path"].startswith("/static/"):
                        headers[key] = "public, max-age=3600"
                    elif key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, with_headers)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def loopback_host(host_header: str) -> bool:
    """Whether a Host header names this host (no DNS rebinding onto an open dashboard)."""
    host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    if host_header.startswith("["):
        host = host_header.split("]")[0] + "]"
    return host in LOOPBACK_HOSTS
