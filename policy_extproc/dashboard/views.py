"""The pages: Policies, Try it, Decisions, Approvals, Spend and limits."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import yaml
from google.protobuf.json_format import MessageToDict
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..sources.store import pushed_file
from .client import AdminCallError
from .decisions import Query
from .pages import Denied, Page, page

DECISIONS = ("allow", "modify", "block", "throttle", "escalate")
_TRACE_ID = re.compile(r"[0-9a-fA-F]{16,32}\Z")
PROBE = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"."}]}'
NEW_POLICY = """policy_name: my_policy
scope: {org: acme, team: ml}
mode: enforce
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
    action: block
"""


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# -- policies ----------------------------------------------------------------------------------


@page("viewer")
async def policies(ctx: Page) -> Response:
    q = ctx.request.query_params
    org, team, env = q.get("org", ""), q.get("team", ""), q.get("env", "")
    ps = await ctx.dash.policies(ctx.token)
    from .policies import tree

    return ctx.render(
        "policies.html",
        ps=ps,
        tree=tree(ps.rows),
        scope={"org": org, "team": team, "env": env},
        applying=ps.applying(org, team, env),
        effective=ps.effective(org, team, env),
    )


@page("viewer")
async def policy(ctx: Page) -> Response:
    name = ctx.request.path_params["name"]
    ps = await ctx.dash.policies(ctx.token)
    row = ps.by_name.get(name)
    if row is None:
        raise Denied(404, f"no policy {name!r}")
    got = await ctx.dash.admin.get_policy(name, ctx.token)
    return ctx.render("policy.html", row=row, text=got.text, editable=row.source == "pushed")


@page("admin")
async def new_policy(ctx: Page) -> Response:
    return ctx.render("policy.html", row=None, text=NEW_POLICY, editable=True)


def _names(text: str) -> list[str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    items = data if isinstance(data, list) else [data]
    return [str(d["policy_name"]) for d in items if isinstance(d, dict) and "policy_name" in d]


async def _check(ctx: Page, text: str) -> dict[str, Any]:
    """What a push of ``text`` would meet: the check lines, and a diff per policy named."""
    ps = await ctx.dash.policies(ctx.token)
    problems: tuple[str, ...] = ()
    try:
        await ctx.dash.admin.evaluate(PROBE, {}, ctx.token, policies=text, file_name="pushed")
    except AdminCallError as exc:
        if exc.code != "invalid_argument":
            raise
        problems = exc.problems or (exc.message,)
    from .policies import diff

    diffs: list[tuple[str, str, list[tuple[str, str]]]] = []
    for name in _names(text):
        row = ps.by_name.get(name)
        old = ps.texts.get(pushed_file(name), "") if row is not None else ""
        if row is not None and row.source != "pushed":
            diffs.append(
                (name, f"{name} is defined in {row.file}: file policies are read-only", [])
            )
            continue
        lines = diff(old, text if len(_names(text)) == 1 else _one(text, name), name)
        diffs.append((name, "new policy" if row is None else "", lines))
    return {"problems": problems, "diffs": diffs, "checked": True}


def _one(text: str, name: str) -> str:
    data = yaml.safe_load(text)
    item = next(d for d in data if isinstance(d, dict) and d.get("policy_name") == name)
    return yaml.safe_dump(item, sort_keys=False)


@page("viewer")
async def validate(ctx: Page) -> Response:
    form = await ctx.request.form()
    result = await _check(ctx, _field(form, "text"))
    return ctx.render("_check.html", **result)


@page("admin")
async def push(ctx: Page) -> Response:
    form = await ctx.request.form()
    text = _field(form, "text")
    try:
        done = await ctx.dash.admin.put(text, "pushed", ctx.token)
    except AdminCallError as exc:
        if exc.code != "invalid_argument":
            raise
        result = await _check(ctx, text)
        result["problems"] = exc.problems or (exc.message,)
        # 200: htmx swaps only successful answers in; the fragment itself says it was refused.
        return ctx.render("_check.html", refused=True, **result)
    return ctx.render("_pushed.html", names=list(done.names), version=done.version)


@page("admin")
async def delete(ctx: Page) -> Response:
    form = await ctx.request.form()
    name = _field(form, "name")
    await ctx.dash.admin.delete(name, ctx.token)
    return RedirectResponse("/policies", 303)


# -- try it ------------------------------------------------------------------------------------

TRY_DEFAULTS = {"model": "gpt-4o-mini", "messages": "user: my password is hunter2",
                "org": "acme", "team": "ml", "user": "alice", "environment": "production",
                "roles": "", "tags": "", "path": "/v1/chat/completions", "body": ""}  # fmt: skip


def _try_body(values: dict[str, str]) -> bytes:
    if values["body"]:
        return values["body"].encode()
    messages = []
    for line in values["messages"].splitlines():
        role, sep, content = line.partition(":")
        if not sep or role.strip() not in ("system", "user", "assistant"):
            role, content = "user", line
        messages.append({"role": role.strip(), "content": content.strip()})
    if values["path"] == "/v1/messages":
        system = [m["content"] for m in messages if m["role"] == "system"]
        chat = [m for m in messages if m["role"] != "system"]
        body: dict[str, Any] = {"model": values["model"], "max_tokens": 1024, "messages": chat}
        if system:
            body["system"] = "\n".join(system)
        return json.dumps(body).encode()
    return json.dumps({"model": values["model"], "messages": messages}).encode()


@page("viewer")
async def try_it(ctx: Page) -> Response:
    values = dict(TRY_DEFAULTS)
    result = None
    error = None
    if ctx.request.method == "POST":
        form = await ctx.request.form()
        values = {k: _field(form, k) for k in TRY_DEFAULTS}
        headers = {f"x-{k}-id": values[k] for k in ("org", "team", "user") if values[k]}
        if values["environment"]:
            headers["x-environment"] = values["environment"]
        if values["roles"]:
            headers["x-user-roles"] = values["roles"]
        if values["tags"]:
            headers["x-request-tags"] = values["tags"]
        try:
            got = await ctx.dash.admin.evaluate(
                _try_body(values), headers, ctx.token, path=values["path"]
            )
        except AdminCallError as exc:
            if exc.code != "invalid_argument":
                raise
            error = exc.message
        else:
            record = MessageToDict(got.decision, preserving_proto_field_name=True)
            body = None
            if got.HasField("body"):
                try:
                    body = json.dumps(json.loads(got.body), indent=2, ensure_ascii=False)
                except ValueError:
                    body = got.body.decode(errors="replace")
            result = {"record": record, "explanation": list(got.explanation), "body": body}
    return ctx.render("try.html", values=values, result=result, error=error)


# -- decisions ---------------------------------------------------------------------------------

QUERY_FIELDS = ("request_id", "user", "org", "team", "decision", "policy", "rule")


def _when(value: str) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Denied(400, f"{value!r} is not a date and time (YYYY-MM-DDTHH:MM)") from None
    # The page shows and takes times in UTC, as the audit records hold them.
    return (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed).timestamp()


def _query(ctx: Page) -> tuple[Query, dict[str, str]]:
    q = ctx.request.query_params
    given = {k: q.get(k, "").strip() for k in (*QUERY_FIELDS, "since", "until")}
    query = Query(
        **{k: given[k] for k in QUERY_FIELDS},
        since=_when(given["since"]),
        until=_when(given["until"]),
    )
    return query, given


def _rows(ctx: Page) -> dict[str, Any]:
    query, given = _query(ctx)
    index = ctx.dash.index
    return {
        "entries": index.search(query, 100),
        "given": given,
        "qs": urlencode({k: v for k, v in given.items() if v}),
        "stored": len(index),
        "loaded": index.loaded,
        "source": index.source,
        "feed_error": index.error,
    }


@page("viewer")
async def decisions(ctx: Page) -> Response:
    return ctx.render("decisions.html", decisions=DECISIONS, **_rows(ctx))


@page("viewer")
async def decision_rows(ctx: Page) -> Response:
    return ctx.render("_rows.html", **_rows(ctx))


def trace_url(template: str | None, trace_id: str | None) -> str | None:
    """The tracing backend's page of ``trace_id``; only http(s) and a hex id, never a script."""
    if not template or not trace_id or not _TRACE_ID.match(trace_id):
        return None
    url = template.replace("{trace_id}", trace_id)
    return url if url.startswith(("http://", "https://")) else None


@page("viewer")
async def decision(ctx: Page) -> Response:
    entry = ctx.dash.index.get(ctx.request.path_params["id"])
    if entry is None:
        raise Denied(404, "no such decision here (it may have left the capped stream)")
    record = entry.record()
    related = (
        ctx.dash.index.search(Query(request_id=entry.request_id), 20) if entry.request_id else []
    )
    return ctx.render(
        "decision.html",
        entry=entry,
        record=record,
        pretty=json.dumps(record, indent=2, ensure_ascii=False),
        trace=trace_url(ctx.dash.config.trace_url_template, record.get("trace_id")),
        related=[e for e in related if e.id != entry.id],
    )


# -- approvals ---------------------------------------------------------------------------------


def _approval(a: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "org": a.org,
        "user": a.user,
        "status": a.status,
        "created": datetime.fromtimestamp(a.created_at.seconds, UTC).strftime("%Y-%m-%d %H:%M"),
        "expires": datetime.fromtimestamp(a.expires_at.seconds, UTC).strftime("%Y-%m-%d %H:%M"),
        "approver": a.approver if a.HasField("approver") else "",
        "reason": a.reason if a.HasField("reason") else "",
        "details": dict(sorted(a.details.items())),
    }


@page("viewer")
async def approvals(ctx: Page) -> Response:
    found = [_approval(a) for a in await ctx.dash.admin.approvals(ctx.token)]
    pending = [a for a in found if a["status"] == "pending"]
    decided = [a for a in found if a["status"] != "pending"]
    notice = ctx.request.query_params.get("done", "")
    return ctx.render("approvals.html", pending=pending, decided=decided, notice=notice)


@page("approver")
async def decide(ctx: Page) -> Response:
    form = await ctx.request.form()
    verdict = _field(form, "verdict")
    if verdict not in ("approve", "deny"):
        raise Denied(400, "verdict must be approve or deny")
    approval_id = _field(form, "id")
    # The approver is the signed-in person (the admin API takes it from their token).
    decided = await ctx.dash.admin.decide(
        approval_id,
        verdict == "approve",
        _field(form, "reason"),
        ctx.token,
        approver=ctx.session.identity.name,
    )
    done = f"{decided.id} {decided.status} by {decided.approver}"
    return RedirectResponse(f"/approvals?{urlencode({'done': done})}", 303)


# -- spend and limits --------------------------------------------------------------------------


SHOWN = 50  # rows per table; the rest are counted (a page stays fast with thousands)


def _top(rows: dict[str, tuple[float, float]]) -> list[tuple[str, tuple[float, float]]]:
    return sorted(rows.items(), key=lambda kv: (-kv[1][1], kv[0]))[:SHOWN]


@page("viewer")
async def spend(ctx: Page) -> Response:
    ps = await ctx.dash.policies(ctx.token)
    f = await ctx.dash.spend(ps)
    teams = _top(f.by_team)[:20]
    budgets = f.budgets[:15]
    charts = {
        "teams": {
            "labels": [t for t, _ in teams],
            "today": [round(v[0], 4) for _, v in teams],
            "month": [round(v[1], 4) for _, v in teams],
        },
        "blocked": {"labels": [r for r, _ in f.blocked], "counts": [n for _, n in f.blocked]},
        "budgets": {
            "labels": [f"{b.subject} {b.rule}" for b in budgets],
            "used": [round(100 * b.fraction, 1) for b in budgets],
        },
    }
    tables = [
        ("Organisations", _top(f.by_org), len(f.by_org), "by-org"),
        ("Teams", _top(f.by_team), len(f.by_team), "by-team"),
        ("Users", _top(f.by_user), len(f.by_user), "by-user"),
    ]
    return ctx.render(
        "spend.html",
        f=f,
        budgets=f.budgets[:SHOWN],
        limits=f.limits[:SHOWN],
        tables=tables,
        shown=SHOWN,
        charts=json.dumps(charts),
        stored=len(ctx.dash.index),
        loaded=ctx.dash.index.loaded,
        source=ctx.dash.index.source,
        tz=ctx.dash.config.budget_time_zone,
    )


routes = [
    Route("/policies", policies),
    Route("/policies/new", new_policy),
    Route("/policies/view/{name:path}", policy),
    Route("/policies/validate", validate, methods=["POST"]),
    Route("/policies/push", push, methods=["POST"]),
    Route("/policies/delete", delete, methods=["POST"]),
    Route("/try", try_it, methods=["GET", "POST"]),
    Route("/decisions", decisions),
    Route("/decisions/rows", decision_rows),
    Route("/decisions/{id}", decision),
    Route("/approvals", approvals),
    Route("/approvals/decide", decide, methods=["POST"]),
    Route("/spend", spend),
]
