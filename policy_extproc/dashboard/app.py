"""The Starlette application: sign-in and the routes (the guard of every page is ``pages``).

Pages are server-rendered Jinja2 templates (autoescaped: everything shown is escaped); htmx swaps
fragments for live validation and the live tail; no inline script or style anywhere, so the
Content-Security-Policy allows only this origin's files.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..admin.auth import Identities
from . import views
from .pages import HERE, Page, page, set_cookie, templates
from .security import COOKIE, LOGIN_COOKIE, SecurityHeaders, same
from .state import Dashboard, DashboardConfig

# -- sign-in -----------------------------------------------------------------------------------


async def login_form(request: Request, error: str = "", status: int = 200) -> Response:
    dash: Dashboard = request.app.state.dash
    if dash.sessions.open:
        return RedirectResponse("/", 303)
    csrf = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    html = templates.get_template("login.html").render(csrf=csrf, error=error, who=None)
    response = HTMLResponse(html, status)
    set_cookie(response, request, LOGIN_COOKIE, csrf)
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
    set_cookie(response, request, COOKIE, sid)
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
