"""The dashboard over HTTP against a real sidecar (no Redis: one replica's live stream): sign-in,
CSRF, loopback-only without tokens, escaping of what records hold, and the headers."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from policy_extproc.admin.auth import load_identities
from policy_extproc.audit.record import AuditRecord, utc_timestamp
from policy_extproc.dashboard.security import CSP
from policy_extproc.dashboard.serve import build
from policy_extproc.dashboard.state import DashboardConfig
from policy_extproc.dashboard.views import trace_url
from policy_extproc.errors import AdminError
from tests.dashboard.harness import RunningDashboard, running_dashboard
from tests.e2e.sidecars import RunningSidecar, running_sidecar

POLICY = "policy_name: base\norg: acme\nrules:\n  - {type: content_filter, id: s, keywords: [x]}\n"
VIEWER = "tok-vera-0123456789abcdef"
HOSTILE = '<img src=x onerror="alert(1)">'


class Client:
    def __init__(self, url: str, host: str | None = None) -> None:
        self.netloc = url.split("://", 1)[1]
        self.host = host or self.netloc
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(self.netloc, timeout=10)
        all_headers = {"host": self.host, **headers}
        if self.cookies:
            all_headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = urlencode(form) if form is not None else None
        if body is not None:
            all_headers["content-type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        for key, value in resp.getheaders():
            if key.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, text

    def sign_in(self, token: str) -> int:
        _, _, page = self.request("GET", "/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf
        status, _, _ = self.request("POST", "/login", {"csrf": csrf.group(1), "token": token})
        return status

    def csrf(self) -> str:
        _, _, page = self.request("GET", "/approvals")
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found
        return found.group(1)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSidecar, Path]]:
    workdir = tmp_path_factory.mktemp("dashboard-app")
    tokens = workdir / "tokens"
    tokens.write_text(f"vera:viewer:{VIEWER}\n")
    with running_sidecar(
        POLICY, workdir, admin_listen="127.0.0.1:0", admin_tokens=str(tokens)
    ) as running:
        yield running, tokens


@pytest.fixture(scope="module")
def dashboard(sidecar: tuple[RunningSidecar, Path]) -> Iterator[RunningDashboard]:
    running, tokens = sidecar
    config = DashboardConfig(
        admin=f"127.0.0.1:{running.sidecar.admin_port}", admin_tokens=str(tokens)
    )
    with running_dashboard(config, load_identities(None, tokens)) as board:
        yield board


def test_pages_need_a_session_and_forms_a_csrf_token(dashboard: RunningDashboard) -> None:
    client = Client(dashboard.url)
    status, headers, _ = client.request("GET", "/decisions")
    assert (status, headers["location"]) == (303, "/login")
    # A sign-in form without the cookie it was issued with is refused (login CSRF).
    stranger = Client(dashboard.url)
    status, _, _ = stranger.request("POST", "/login", {"csrf": "forged", "token": VIEWER})
    assert status == 403
    assert client.sign_in("tok-nobody") == 401
    assert client.sign_in(VIEWER) == 303
    status, _, page = client.request("GET", "/decisions")
    assert status == 200 and "vera" in page
    status, _, _ = client.request("POST", "/logout", {})
    assert status == 403  # no CSRF token: not even a sign-out
    status, _, _ = client.request("POST", "/logout", {"csrf": client.csrf()})
    assert status == 303
    assert client.request("GET", "/decisions")[0] == 303


def test_every_answer_carries_a_strict_csp(dashboard: RunningDashboard) -> None:
    client = Client(dashboard.url)
    client.sign_in(VIEWER)
    for path in ("/login", "/policies", "/spend", "/static/app.js"):
        _, headers, _ = client.request("GET", path)
        assert headers["content-security-policy"] == CSP
        assert headers["x-frame-options"] == "DENY"
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    _, _, page = client.request("GET", "/spend")
    assert "<script>" not in page and " style=" not in page and "onclick" not in page


def test_what_records_hold_is_escaped(
    dashboard: RunningDashboard, sidecar: tuple[RunningSidecar, Path]
) -> None:
    running, _ = sidecar
    record = AuditRecord(
        decision="block",
        policy="base",
        rule="s",
        reason=f"because {HOSTILE}",
        user=HOSTILE,
        environment=None,
        timestamp=utc_timestamp(),
        request_id="req-hostile",
        org="acme",
    )
    client = Client(dashboard.url)
    client.sign_in(VIEWER)
    # Into the live stream the dashboard watches, as the sidecar's audit would put it: offered
    # again until it shows (the dashboard may still be subscribing; a bound, not a timing).
    deadline = time.monotonic() + 30
    found = None
    while found is None and time.monotonic() < deadline:
        if running.sidecar.control.live.subscribers:
            running.loop.run(_emit(running, record))
        time.sleep(0.1)
        _, _, page = client.request("GET", "/decisions?request_id=req-hostile")
        found = page if "req-hostile" in page else None
    assert found is not None, "the record never reached the dashboard"
    assert HOSTILE not in found
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in found


async def _emit(running: RunningSidecar, record: AuditRecord) -> None:
    running.sidecar.control.live.emit(record)


def test_a_viewer_is_refused_what_needs_more(dashboard: RunningDashboard) -> None:
    client = Client(dashboard.url)
    client.sign_in(VIEWER)
    csrf = client.csrf()
    for path, form in (
        ("/policies/push", {"text": POLICY}),
        ("/policies/delete", {"name": "base"}),
        ("/approvals/decide", {"id": "apr_x", "verdict": "approve"}),
    ):
        status, _, page = client.request("POST", path, {**form, "csrf": csrf})
        assert status == 403 and "vera has the role viewer" in page
    assert client.request("GET", "/policies/new")[0] == 403


def test_without_tokens_only_loopback(tmp_path: Path) -> None:
    with pytest.raises(AdminError, match="refusing to serve"):
        build(DashboardConfig(admin="127.0.0.1:1", listen="0.0.0.0:8080"))
    with (
        running_sidecar(POLICY, tmp_path, admin_listen="127.0.0.1:0") as running,
        running_dashboard(
            DashboardConfig(admin=f"127.0.0.1:{running.sidecar.admin_port}")
        ) as board,
    ):
        # No sign-in on loopback: the local admin; but not under another host name.
        status, _, page = Client(board.url).request("GET", "/approvals")
        assert status == 200 and "local admin" in page
        status, _, _ = Client(board.url, host="evil.example:8080").request("GET", "/approvals")
        assert status == 403


@pytest.mark.parametrize(
    ("template", "trace_id", "url"),
    [
        ("https://t/trace/{trace_id}", "4bf92f3577b34da6a3ce929d0e0e4736",
         "https://t/trace/4bf92f3577b34da6a3ce929d0e0e4736"),
        ("javascript:alert('{trace_id}')", "4bf92f3577b34da6a3ce929d0e0e4736", None),
        ("https://t/{trace_id}", "'><script>", None),
        (None, "4bf92f3577b34da6a3ce929d0e0e4736", None),
    ],
)  # fmt: skip
def test_trace_links_are_http_and_hex_only(
    template: str | None, trace_id: str, url: str | None
) -> None:
    assert trace_url(template, trace_id) == url


def test_the_command_refuses_an_open_listener_and_a_bad_address() -> None:
    from click.testing import CliRunner

    from policy_extproc.cli import main

    env = {k: None for k in ("POLICY_EXTPROC_ADMIN_TOKEN", "POLICY_EXTPROC_ADMIN_TOKEN_FILE",
                             "POLICY_EXTPROC_ADMIN_TOKENS", "POLICY_EXTPROC_LISTEN")}  # fmt: skip
    runner = CliRunner()
    opened = runner.invoke(main, ["dashboard", "--listen", "0.0.0.0:18080"], env=env)
    assert opened.exit_code == 1
    assert "refusing to serve" in opened.output and "loopback" in opened.output
    bad = runner.invoke(main, ["dashboard", "--listen", "nowhere"], env=env)
    assert bad.exit_code == 2 and "'nowhere' is not HOST:PORT" in bad.output
