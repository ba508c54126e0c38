"""The Starlette application: sign-in, the guard every page goes through, and the routes.

Pages are server-rendered Jinja2 templates (autoescaped: everything shown is escaped); htmx swaps
fragments for live validation and the live tail; no inline script or style anywhere, so the
Content-Security-Policy allows only this origin's files.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..admin.auth import Identities
from .client import AdminCallError
from .security import COOKIE, LOGIN_COOKIE, SESSION_S, SecurityHeaders, Session, loopback_host, same
from .state import Dashboard, DashboardConfig

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
            _cookie(response, self.request, COOKIE, self.new_sid)
        return response


def _cookie(response: Response, request: Request, name: str, value: str) -> None:
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


# -- sign-in -----------------------------------------------------------------------------------


async def login_form(request: Request, error: str = "", status: int = 200) -> Response:
    dash: Dashboard = request.app.state.dash
    if dash.sessions.open:
        return RedirectResponse("/", 303)
    csrf = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    html = templates.get_template("login.html").render(csrf=csrf, error=error, who=None)
    response = HTMLResponse(html, status)
    _cookie(response, request, LOGIN_COOKIE, csrf)
    return response


async def login(request: Request) -> Response:
    dash: Dashboard = request.app.state.dash
    if dash.sessions.open:
        return RedirectResponse("/", 303)
    form = await request.form()
    csrf, token = form.get("csrf"), form.get("token")
    # Double submit: the form's token must be the one this browser got in its cookie.
    if not isinstance(csrf, str) or not same(csrf, request.cookies.get(LOGIN_COOKIE)):
        return await login_form(request, "the sign-in form is stale: try again", 403)
    signed = dash.sessions.sign_in(token) if isinstance(token, str) else None
    if signed is None:
        return await login_form(request, "unknown token", 401)
    sid, _ = signed
    response = RedirectResponse("/", 303)
    _cookie(response, request, COOKIE, sid)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@page("viewer")
async def logout(ctx: Page) -> Response:
    ctx.dash.sessions.end(ctx.request.cookies.get(COOKIE))
    response = RedirectResponse("/login" if not ctx.dash.sessions.open else "/", 303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


@page("viewer")
async def home(ctx: Page) -> Response:
    return RedirectResponse("/policies", 303)


def create_app(config: DashboardConfig, identities: Identities | None = None) -> Starlette:
    """The dashboard as an ASGI application (uvicorn serves it)."""
    from . import views

    dash = Dashboard(config, identities if identities is not None else Identities())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await dash.start()
        try:
            yield
        finally:
            await dash.stop()

    routes = [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        *views.routes,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dash = dash
    app.add_middleware(SecurityHeaders)
    return app
