"""The guard every dashboard page goes through, and what a page handler is given.

``page(role)`` wraps a handler: a session (or sign-in), the role, and on POST the CSRF token;
the handler gets a ``Page`` (the request, the session, ``render``). Route modules (``views``)
import this, and ``app`` imports them: no module imports the application back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from .client import AdminCallError
from .security import COOKIE, SESSION_S, Session, loopback_host, same
from .state import Dashboard

HERE = Path(__file__).parent
STATUS = {"permission_denied": 403, "unauthenticated": 401, "invalid_argument": 400,
          "not_found": 404, "failed_precondition": 409, "unavailable": 502}  # fmt: skip

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class Denied(Exception):
    """Ends a request with a status and a message shown to the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Page:
    """One request's context: the dashboard, the session, and the cookie to set if new."""

    def __init__(self, request: Request, session: Session, new_sid: str | None) -> None:
        self.request = request
        self.session = session
        self.new_sid = new_sid
        self.dash: Dashboard = request.app.state.dash

    @property
    def token(self) -> str | None:
        return self.session.token

    def may(self, role: str) -> bool:
        return self.session.identity.may(role)

    def require(self, role: str) -> None:
        if not self.may(role):
            who = self.session.identity
            raise Denied(403, f"{who.name} has the role {who.role}; this needs {role}")

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = templates.get_template(template).render(
            who=self.session.identity,
            csrf=self.session.csrf,
            open=self.dash.sessions.open,
            path=self.request.url.path,
            may=self.may,
            **values,
        )
        response = HTMLResponse(html, status)
        if self.new_sid is not None:
            set_cookie(response, self.request, COOKIE, self.new_sid)
        return response


def set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(SESSION_S),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


Handler = Callable[[Page], Awaitable[Response]]


def page(role: str = "viewer") -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Guard a route: a session (or sign-in), the role, and on POST the CSRF token."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            dash: Dashboard = request.app.state.dash
            sid = request.cookies.get(COOKIE)
            session = dash.sessions.get(sid)
            new_sid = None
            if dash.sessions.open:
                # No token: this host only, also by name (no DNS rebinding onto it).
                if not loopback_host(request.headers.get("host", "")):
                    return PlainTextResponse("this dashboard answers loopback only", 403)
                if session is None:
                    new_sid, session = dash.sessions.local()
            elif session is None:
                if request.headers.get("hx-request"):
                    return Response(status_code=401, headers={"hx-redirect": "/login"})
                return RedirectResponse("/login", 303)
            ctx = Page(request, session, new_sid)
            try:
                if request.method == "POST":
                    await _check_csrf(request, session)
                ctx.require(role)
                return await handler(ctx)
            except Denied as exc:
                return ctx.render("error.html", exc.status, message=exc.message)
            except AdminCallError as exc:
                status = STATUS.get(exc.code, 502)
                return ctx.render("error.html", status, message=str(exc), problems=exc.problems)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


async def _check_csrf(request: Request, session: Session) -> None:
    given = request.headers.get("x-csrf-token")
    if not given:
        form = await request.form()
        value = form.get("csrf")
        given = value if isinstance(value, str) else None
    if not same(given, session.csrf):
        raise Denied(403, "the form is stale or was not sent by this dashboard (CSRF check)")
