"""The dashboard in a background thread (uvicorn on a socket bound to port 0), and Chromium.

running_dashboard(config, identities)   -> RunningDashboard (url, app state); stopped after
chromium()                              -> the Debian chromium binary, or None
browser()                               -> a headless Playwright Chromium, or a skip/failure
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from policy_extproc.admin.auth import Identities
from policy_extproc.dashboard.app import create_app
from policy_extproc.dashboard.state import Dashboard, DashboardConfig


@dataclass
class RunningDashboard:
    url: str
    dash: Dashboard
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the dashboard's loop (its admin client lives there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def running_dashboard(
    config: DashboardConfig, identities: Identities | None = None
) -> Iterator[RunningDashboard]:
    app = create_app(config, identities)
    sock = socket.socket()
    # Accepted sockets inherit it: no Nagle delay between an answer's head and its body.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        task = loop.create_task(server.serve(sockets=[sock]))
        loop.call_soon(started.set)
        loop.run_until_complete(task)

    thread = threading.Thread(target=serve, name="dashboard", daemon=True)
    thread.start()
    started.wait(10)
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    try:
        yield RunningDashboard(f"http://127.0.0.1:{port}", app.state.dash, loop)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        loop.close()


def chromium() -> str | None:
    """Debian's chromium (installed by .ci/run when missing); never a downloaded browser."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Playwright; skips outside CI when there is none."""
    binary = chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium on PATH: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run does it in CI)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        b = pw.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
