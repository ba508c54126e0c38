"""Run the dashboard with uvicorn: refuse a non-loopback listener without tokens, then serve."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..admin.auth import check_listen, is_loopback, load_identities
from ..errors import AdminError
from .state import DashboardConfig

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger(__name__)


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) as (host, port); ValueError names what is wrong."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def build(config: DashboardConfig) -> Starlette:
    """The ASGI app for ``config``; AdminError for a bad tokens file or an open listener."""
    from .app import create_app

    identities = load_identities(config.admin_token, config.admin_tokens)
    if not identities and not is_loopback(config.listen):
        check_listen(config.listen, None)  # raises, with the way out
    return create_app(config, identities)


def run(config: DashboardConfig) -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn handles both and drains)."""
    import uvicorn

    try:
        app = build(config)
    except AdminError as exc:
        raise SystemExit(f"policy-extproc dashboard: {exc.message}") from None
    host, port = split_listen(config.listen)
    log.info("dashboard on http://%s:%d (admin API %s)", host, port, config.admin)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                server_header=False, proxy_headers=False)  # fmt: skip
