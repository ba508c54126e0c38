"""The dashboard in a real browser (Playwright driving Debian's Chromium) against a real sidecar
with Redis, a real Envoy and the mock providers: sign-in and roles, approving a request whose
retry then passes through Envoy, pushing policies (a refused one shows its check line, an
accepted one decides the next request), the live tail and search.

Each test writes screenshots of the pages it visits to build/screenshots/ (make test empties it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy_extproc.admin.auth import load_identities
from policy_extproc.dashboard.state import DashboardConfig
from policy_extproc.policy.loader import read_sources
from tests.dashboard.harness import RunningDashboard, browser, running_dashboard
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import REPO_ROOT, EnvoyProcess, Response, http_request
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

SHOTS = REPO_ROOT / "build" / "screenshots"
# Generous bounds for a shared, noisy machine: these wait for something, they time nothing.
WAIT_MS = 15_000
TOKENS = {"vera": "viewer", "artie": "approver", "ada": "admin"}
POLICY = """
policy_name: acme_base
org: acme
description: Baseline of every acme request.
compliance: [SOC2]
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
    action: block
    final: true
  - type: approval
    id: big-models
    models: ["gpt-4.5*"]
    ttl: 1h
  - type: rate_limit
    id: per-user-rate
    per: user
    requests: 1000
    window: minute
  - type: cost_budget
    id: team-monthly
    per: team
    limit_usd: 50
    period: month
---
policy_name: acme_ml_team
scope: {org: acme, team: ml}
rules:
  - type: pii
    id: personal-data
    entities: [EMAIL]
"""
ALICE = {"x-org-id": "acme", "x-team-id": "ml", "x-user-id": "alice", "x-environment": "prod"}
INVALID = """policy_name: acme_ml_zebras
scope: {org: acme, team: ml}
rules:
  - type: content_filter
    id: zebras
    keywords: [zebra]
    action: explode
"""
VALID = INVALID.replace("action: explode", "action: block")


def token(name: str) -> str:
    return f"tok-{name}-0123456789abcdef"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("tokens") / "admin-tokens"
    file.write_text("".join(f"{n}:{r}:{token(n)}\n" for n, r in TOKENS.items()))
    return file


@pytest.fixture(scope="module")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer, tokens_file: Path
) -> Iterator[RunningSidecar]:
    workdir = tmp_path_factory.mktemp("dashboard-sidecar")
    # One file holding both policies: a YAML list of them.
    text = yaml.safe_dump([yaml.safe_load(d) for d in POLICY.split("---\n")], sort_keys=False)
    with running_sidecar(
        text,
        workdir,
        admin_listen="127.0.0.1:0",
        admin_tokens=str(tokens_file),
        redis=redis.url,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(envoy_factory: Callable[..., EnvoyProcess], sidecar: RunningSidecar) -> EnvoyProcess:
    return envoy_factory(sidecar.port)


@pytest.fixture(scope="module")
def dashboard(
    sidecar: RunningSidecar, redis: RedisServer, tokens_file: Path
) -> Iterator[RunningDashboard]:
    config = DashboardConfig(
        admin=f"127.0.0.1:{sidecar.sidecar.admin_port}",
        redis=redis.url,
        admin_tokens=str(tokens_file),
        trace_url_template="https://tracing.example/trace/{trace_id}",
    )
    with running_dashboard(config, load_identities(None, tokens_file)) as running:
        yield running


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with browser() as b:
        yield b


@pytest.fixture
def signed_in(chrome: Any, dashboard: RunningDashboard) -> Iterator[Callable[[str], Any]]:
    """sign_in(name) -> a page of a fresh browser context signed in with that token."""
    contexts: list[Any] = []
    errors: list[str] = []

    def sign_in(name: str) -> Any:
        context = chrome.new_context(viewport={"width": 1360, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        # A CSP violation or a script error is a bug: collect them, assert none at the end
        # (the 4xx answers the tests ask for on purpose are not).
        page.on("console", lambda m: errors.append(m.text) if _bug(m) else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{dashboard.url}/policies")
        assert page.url.endswith("/login")
        page.fill("#token", token(name))
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/policies$"))
        assert page.text_content("#who-name") == name
        return page

    yield sign_in
    for context in contexts:
        context.close()
    assert errors == [], errors


def _bug(message: Any) -> bool:
    refused = re.match(r"Failed to load resource: .* status of 40[13]", message.text)
    return bool(message.type == "error" and not refused)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def chat(proxy: EnvoyProcess, text: str, *, model: str = "gpt-4o-mini", **headers: str) -> Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return http_request(proxy.url, "/v1/chat/completions", body, headers={**ALICE, **headers})


def post_status(page: Any, path: str, form: dict[str, str]) -> int:
    """POST a form from inside the page with its CSRF token (what a crafted request could do)."""
    csrf = json.loads(page.get_attribute("body", "hx-headers"))["x-csrf-token"]
    return int(
        page.evaluate(
            """async ([path, form]) => {
                const r = await fetch(path, {method: "POST", body: new URLSearchParams(form)});
                return r.status;
            }""",
            [path, {**form, "csrf": csrf}],
        )
    )


def test_sign_in_refuses_an_unknown_token(chrome: Any, dashboard: RunningDashboard) -> None:
    context = chrome.new_context()
    page = context.new_page()
    page.goto(f"{dashboard.url}/decisions")
    page.fill("#token", "tok-nobody-0123456789")
    page.click("button[type=submit]")
    assert page.text_content(".error") == "unknown token"
    shot(page, "00-sign-in")
    context.close()


def test_a_viewer_reads_but_cannot_approve_or_push(
    signed_in: Callable[[str], Any], sidecar: RunningSidecar, proxy: EnvoyProcess
) -> None:
    refused = chat(proxy, "write a poem", model="gpt-4.5-preview")
    assert refused.json()["error"]["code"] == "approval_required"
    page = signed_in("vera")
    # The scope tree and the rules in force for acme/ml, with their origin and mode.
    page.click("text=team ml")
    rows = page.locator("#effective tbody tr")
    origins = {
        row.locator("td").nth(0).inner_text(): row.locator("td").nth(3).inner_text()
        for row in rows.all()
    }
    assert origins["secrets"] == "inherited locked"
    assert origins["personal-data"] == "own"
    assert "file" in page.inner_text("#policy-list") and "read-only" in page.inner_text(
        "#policy-list"
    )
    shot(page, "01-policies-viewer")
    page.goto(page.url.split("/policies")[0] + "/policies/view/acme_base")
    assert "policy_name: acme_base" in page.inner_text("#policy-text")
    assert page.locator("#editor").count() == 0
    shot(page, "02-policy-file-read-only")
    page.click("text=Approvals")
    row = page.locator("#pending tbody tr", has_text=refused.json()["approval_id"])
    assert "approving needs the approver role" in row.inner_text()
    assert row.locator("button").count() == 0
    shot(page, "03-approvals-viewer")
    # Nor can a hand-made request do it: the dashboard and the admin API both refuse.
    approval_id = refused.json()["approval_id"]
    verdict = {"id": approval_id, "verdict": "approve"}
    assert post_status(page, "/approvals/decide", verdict) == 403
    assert post_status(page, "/policies/push", {"text": VALID}) == 403
    # And without the CSRF token, nothing is done for anyone.
    no_csrf = page.evaluate(
        """async () => (await fetch("/policies/push", {method: "POST",
             body: new URLSearchParams({text: "x"})})).status"""
    )
    assert no_csrf == 403


def test_an_approver_approves_and_the_retry_passes_through_envoy(
    signed_in: Callable[[str], Any], proxy: EnvoyProcess, sidecar: RunningSidecar
) -> None:
    refused = chat(proxy, "summarise the quarter", model="gpt-4.5-preview")
    assert refused.status == 403
    approval_id = refused.json()["approval_id"]
    page = signed_in("artie")
    page.click("text=Approvals")
    row = page.locator("#pending tbody tr", has_text=approval_id)
    assert "gpt-4.5-preview" in row.inner_text()
    shot(page, "04-approvals-pending")
    row.locator("input[name=reason]").fill("Q3 report")
    row.locator("button[value=approve]").click()
    page.wait_for_url(re.compile(r"/approvals\?done="))
    assert page.inner_text("#notice") == f"{approval_id} approved by artie"
    decided = page.locator("#decided tbody tr", has_text=approval_id)
    assert "artie" in decided.inner_text() and "Q3 report" in decided.inner_text()
    shot(page, "05-approvals-decided")
    again = chat(
        proxy, "summarise the quarter", model="gpt-4.5-preview", **{"x-approval-id": approval_id}
    )
    assert again.status == 200, again.body
    verdict = [r for r in sidecar.sink.records if r.phase == "approval"][-1]
    assert verdict.reason == "approved by artie: Q3 report"


def test_an_admin_pushes_a_refused_then_an_accepted_policy(
    signed_in: Callable[[str], Any], proxy: EnvoyProcess, sidecar: RunningSidecar
) -> None:
    assert chat(proxy, "a zebra").status == 200
    page = signed_in("ada")
    page.click("text=New policy")
    page.fill("#text", INVALID)
    # The live validation shows exactly the lines check prints for this text.
    _, problems = read_sources([("pushed", INVALID)])
    expected = [str(p).split(": ", 1)[1] for p in problems]
    assert expected
    page.wait_for_selector(".check-bad")
    for line in expected:
        page.wait_for_selector(f".problems >> text={line}")
    shot(page, "06-policy-invalid")
    page.click("#push")
    page.wait_for_selector("text=Push refused")
    assert chat(proxy, "a zebra").status == 200  # nothing changed
    page.fill("#text", VALID)
    page.wait_for_selector(".check-ok")
    assert "+    action: block" in page.inner_text(".diff")
    shot(page, "07-policy-valid-diff")
    page.click("#push")
    page.wait_for_selector("text=Pushed")
    shot(page, "08-policy-pushed")
    blocked = chat(proxy, "a zebra")
    for _ in range(100):  # every replica applies a push within a second: wait for this one
        if blocked.status == 403:
            break
        page.wait_for_timeout(100)
        blocked = chat(proxy, "a zebra")
    assert blocked.status == 403
    assert (blocked.json()["policy"], blocked.json()["rule"]) == ("acme_ml_zebras", "zebras")
    # The pushed policy is editable: the diff is against the text in force.
    page.goto(page.url.split("/policies")[0] + "/policies/view/acme_ml_zebras")
    page.wait_for_selector(".check-ok")
    page.fill("#text", VALID.replace("[zebra]", "[zebra, okapi]"))
    page.wait_for_selector(".d-add >> text=okapi")
    assert "keywords: [zebra]" in page.inner_text(".d-del")
    shot(page, "09-policy-edit-diff")
    # And deletable by an admin; deleting asks first.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_url(re.compile(r"/policies$"))
    assert "acme_ml_zebras" not in page.inner_text("#policy-list")
    passes = chat(proxy, "a zebra")
    for _ in range(100):
        if passes.status == 200:
            break
        page.wait_for_timeout(100)
        passes = chat(proxy, "a zebra")
    assert passes.status == 200


def test_try_it_is_a_dry_run(signed_in: Callable[[str], Any]) -> None:
    page = signed_in("vera")
    page.click("text=Try it")
    page.fill("textarea[name=messages]", "user: mail me at bob@example.com")
    page.click("#run")
    page.wait_for_selector("#try-decision")
    assert page.inner_text("#try-decision") == "modify"
    assert "[EMAIL]" in page.inner_text("#rewritten")
    shot(page, "10-try-it")


def test_a_blocked_request_appears_in_the_live_tail_and_is_found_by_id(
    signed_in: Callable[[str], Any], proxy: EnvoyProcess, dashboard: RunningDashboard
) -> None:
    page = signed_in("vera")
    page.click("text=Decisions")
    page.wait_for_selector("#decisions")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    blocked = chat(proxy, "this is confidential", traceparent=f"00-{trace_id}-00f067aa0ba902b7-01")
    assert blocked.status == 403
    rid = blocked.json()["request_id"]
    # No reload: the tail updates itself. Wait for the row, with a bound, timing nothing.
    row = page.locator(f'#decisions tr[data-request-id="{rid}"]').first
    row.wait_for(state="visible", timeout=WAIT_MS)
    assert "block" in row.inner_text() and "acme_base" in row.inner_text()
    shot(page, "11-decisions-live")
    for _ in range(5):  # fill the tail with others, so that the search has to find it
        chat(proxy, "hello")
    page.fill("input[name=request_id]", rid)
    page.click("#search")
    page.wait_for_url(re.compile(r"request_id="))
    ids = page.locator("#decisions tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.requestId)"
    )
    assert ids and set(ids) == {rid}
    shot(page, "12-decisions-search")
    page.locator(f'#decisions tr[data-request-id="{rid}"] a').first.click()
    page.wait_for_selector("#record")
    record = page.inner_text("#record")
    assert rid in record and "keyword #1 of rule 'secrets'" in record
    assert "confidential" not in record  # the record never holds what the user wrote
    link = page.get_attribute("#trace-link", "href")
    assert link is not None and link.startswith("https://tracing.example/trace/")
    shot(page, "13-decision-record")


def test_spend_and_limits_shows_budgets_limits_and_charts(
    signed_in: Callable[[str], Any], proxy: EnvoyProcess, sidecar: RunningSidecar
) -> None:
    for _ in range(3):
        assert chat(proxy, "hello there").status == 200
    sidecar.settle()
    page = signed_in("vera")
    page.click("text=Spend and limits")
    for _ in range(50):  # the answers' cost reaches the stream after the response phase
        if "team ml (acme)" in page.inner_text("#budgets"):
            break
        page.wait_for_timeout(200)
        page.reload()
    assert "acme_base/team-monthly" in page.inner_text("#budgets")
    assert "acme_base/per-user-rate" in page.inner_text("#limits")
    assert "acme_base/secrets" in page.inner_text("#blocked")
    # Chart.js drew into the canvases (a real chart, not an empty box).
    drawn = page.evaluate(
        "() => ['chart-teams', 'chart-budgets', 'chart-blocked']"
        ".map(id => Chart.getChart(document.getElementById(id)) !== undefined)"
    )
    assert drawn == [True, True, True]
    shot(page, "14-spend")
