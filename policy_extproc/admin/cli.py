"""``policy-extproc policies ...`` and ``policy-extproc approvals ...``: clients of the admin API.

Each command talks to ``--admin HOST:PORT`` (env ``POLICY_EXTPROC_ADMIN``) with the token from
``POLICY_EXTPROC_ADMIN_TOKEN``, or the file ``POLICY_EXTPROC_ADMIN_TOKEN_FILE`` names (never a
flag: it would show in ``ps``). With a token, the approver recorded is the token's name.
A refused push prints one line per problem, as ``check`` does, and exits 1.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import grpc

from .._proto import admin_pb2, admin_pb2_grpc
from ..errors import AdminError, TlsError
from .auth import TOKEN_ENV, token_from_env
from .errors import PROBLEMS_KEY

DEFAULT_ADMIN = "127.0.0.1:50052"
TIMEOUT_S = 30.0


def _address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # gRPC would take a port over 65535 modulo 2**16 and call someone else, and an empty
    # target fails with an "invalid URI" that names nothing the user typed.
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT ([::1]:PORT for IPv6)")
    return value


_address_option = click.option(
    "--admin",
    default=DEFAULT_ADMIN,
    show_default=True,
    envvar="POLICY_EXTPROC_ADMIN",
    callback=_address,
    help="HOST:PORT of the admin API (policy-extproc serve --admin-listen).",
)
_TLS_KEY = "policy_extproc.admin_tls"


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Not a parameter of each command: _client() reads them from the context.
    ctx.meta.setdefault(_TLS_KEY, {})[param.name] = value


# The client's TLS. Environment variables of their own, not POLICY_EXTPROC_TLS_*: those are the
# server's files (serve --tls-cert), and the CLI often runs in the sidecar's container.
_TLS_OPTIONS = (
    (
        "--tls-ca",
        "POLICY_EXTPROC_ADMIN_TLS_CA",
        "PEM CA that signed the admin API's certificate: TLS on (serve --admin-tls-cert).",
    ),
    (
        "--tls-cert",
        "POLICY_EXTPROC_ADMIN_CLIENT_CERT",
        "PEM client certificate, for an admin API with --admin-tls-client-ca (mTLS).",
    ),
    ("--tls-key", "POLICY_EXTPROC_ADMIN_CLIENT_KEY", "PEM key of --tls-cert."),
    (
        "--tls-server-name",
        "POLICY_EXTPROC_ADMIN_TLS_SERVER_NAME",
        "The name the admin API's "
        "certificate carries, when --admin is another (a port-forward to 127.0.0.1).",
    ),
)


def admin_option(f: Callable[..., None]) -> Callable[..., None]:
    """--admin HOST:PORT, and the client TLS options that go with it."""
    for flag, env, text in reversed(_TLS_OPTIONS):
        kind = click.STRING if flag == "--tls-server-name" else click.Path(dir_okay=False)
        f = click.option(
            flag,
            envvar=env,
            default=None,
            type=kind,
            expose_value=False,
            callback=_remember,
            help=text,
        )(f)
    return _address_option(f)


def _fail(message: str) -> NoReturn:
    click.echo(f"policy-extproc: {message}", err=True)
    sys.exit(1)


@contextmanager
def _client(admin: str) -> Iterator[Callable[..., Any]]:
    """call(method_name, request) on the admin API, with the token; errors end the command."""
    token = _token()
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with _channel(admin) as channel:
        stub = admin_pb2_grpc.PolicyAdminStub(channel)

        def call(method: str, request: Any) -> Any:
            try:
                return getattr(stub, method)(request, metadata=metadata, timeout=TIMEOUT_S)
            except grpc.RpcError as exc:
                _report(exc, admin, bool(token))

        yield call


def _channel(admin: str) -> grpc.Channel:
    tls = click.get_current_context().meta.get(_TLS_KEY, {})
    ca, cert, key = tls.get("tls_ca"), tls.get("tls_cert"), tls.get("tls_key")
    if not (ca or cert or key):
        return grpc.insecure_channel(admin)
    from ..tls import channel_credentials

    try:
        credentials = channel_credentials(ca, cert, key)
    except TlsError as exc:
        _fail(exc.message)
    options = []
    if name := tls.get("tls_server_name"):
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.secure_channel(admin, credentials, options=options)


def _token() -> str:
    # A token read from a file or a Secret often ends with a newline; gRPC refuses such a
    # header value with a bare "Invalid metadata", so it is trimmed, and what else is wrong named.
    try:
        return token_from_env() or ""
    except AdminError as exc:
        _fail(f"{exc.message} (printable ASCII only)")


def _report(exc: grpc.RpcError, admin: str, has_token: bool) -> NoReturn:
    code, details = exc.code(), exc.details() or ""
    trailers = dict(exc.trailing_metadata() or ())
    if code == grpc.StatusCode.INVALID_ARGUMENT and PROBLEMS_KEY in trailers:
        problems = details.splitlines()
        for line in problems:
            click.echo(line)
        n = len(problems)
        click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
        sys.exit(1)
    if code == grpc.StatusCode.UNAVAILABLE and "redis" not in details:
        _fail(f"cannot reach the admin API at {admin}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        _fail(f"no answer from the admin API at {admin} within {TIMEOUT_S:g} s")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        _fail(
            f"{admin} does not serve the admin API (policy_extproc.v1.PolicyAdmin): "
            "give the address of policy-extproc serve --admin-listen"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED and has_token:
        _fail(f"the admin API at {admin} rejected the token in {TOKEN_ENV}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        _fail(f"the admin API at {admin} wants a token: {TOKEN_ENV} is not set")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        _fail(f"not allowed: {details}")
    _fail(f"{code.name.lower()}: {details}")


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(ts.ToNanoseconds() / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -- policies ----------------------------------------------------------------------------------


@click.group()
def policies() -> None:
    """List, show, push and delete policies through the admin API."""


@policies.command("list")
@admin_option
def list_policies(admin: str) -> None:
    """The policies in force: name, source, scope, rules, mode."""
    with _client(admin) as call:
        resp = call("ListPolicies", admin_pb2.ListPoliciesRequest())
    rows = [["NAME", "SOURCE", "SCOPE", "RULES", "MODE", "FILE"]]
    for p in resp.policies:
        scope = [f"{k}={getattr(p, k)}" for k in ("org", "team", "environment") if p.HasField(k)]
        where = p.file if p.source == "pushed" else f"{p.file}:{p.line}"
        rows.append([p.name, p.source, ",".join(scope) or "everyone", str(p.rules), p.mode, where])
    _table(rows)
    n = len(resp.policies)
    click.echo(
        f"version {resp.version}: {n} polic{'ies' if n != 1 else 'y'}, repository version "
        f"{resp.repository_version}, loaded {_when(resp.loaded_at)}",
        err=True,
    )
    if resp.last_error:
        click.echo("the last reload was refused (the set above keeps serving):", err=True)
        for line in resp.last_error:
            click.echo(f"  {line}", err=True)


@policies.command("get")
@click.argument("name")
@admin_option
def get_policy(name: str, admin: str) -> None:
    """Print a policy's text (for a file policy: its whole file)."""
    with _client(admin) as call:
        resp = call("GetPolicy", admin_pb2.GetPolicyRequest(name=name))
    if resp.policy.source != "pushed":
        click.echo(f"# {name} is defined in {resp.policy.file}:{resp.policy.line}", err=True)
    click.echo(resp.text, nl=not resp.text.endswith("\n"))


@policies.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@admin_option
def push_policy(file: str, admin: str) -> None:
    """Add or replace the policies of FILE on every replica (validated like check)."""
    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    name = "<stdin>" if file == "-" else file
    with _client(admin) as call:
        resp = call("PutPolicies", admin_pb2.PutPoliciesRequest(text=text, file_name=name))
    click.echo(
        f"pushed {', '.join(resp.names)}: version {resp.version} "
        f"(repository version {resp.repository_version})"
    )


@policies.command("delete")
@click.argument("name")
@admin_option
def delete_policy(name: str, admin: str) -> None:
    """Remove a pushed policy from every replica."""
    with _client(admin) as call:
        resp = call("DeletePolicy", admin_pb2.DeletePolicyRequest(name=name))
    click.echo(
        f"deleted {name}: version {resp.version} (repository version {resp.repository_version})"
    )


# -- approvals ---------------------------------------------------------------------------------


@click.group()
def approvals() -> None:
    """List, approve and deny requests waiting for human approval."""


@approvals.command("list")
@click.option("--org", default="", help="Only this organisation.")
@click.option(
    "--status",
    default=None,
    type=click.Choice(["pending", "approved", "denied", "consumed"]),
    help="Only approvals in this state (default: all).",
)
@admin_option
def list_approvals(org: str, status: str | None, admin: str) -> None:
    """Unexpired approvals, oldest first."""
    request = admin_pb2.ListApprovalsRequest(org=org, status=status or "")
    with _client(admin) as call:
        resp = call("ListApprovals", request)
    rows = [["ID", "ORG", "USER", "STATUS", "EXPIRES", "BY", "DETAILS"]]
    for a in resp.approvals:
        details = " ".join(f"{k}={v}" for k, v in sorted(a.details.items()))
        by = a.approver if a.HasField("approver") else "-"
        rows.append([a.id, a.org, a.user, a.status, _when(a.expires_at), by, details])
    _table(rows)


def _decide(verdict: int, approval_id: str, reason: str, approver: str | None, admin: str) -> None:
    if approver and _token():
        _fail("--approver is for an admin API without tokens: with a token, the approver "
              "recorded is the token's name")  # fmt: skip
    if not approver and _token():
        approver = ""  # the server records the token's name
    elif not approver:
        try:
            approver = getpass.getuser()
        except (OSError, KeyError):
            _fail("who decides is audited: give --approver NAME")
    request = admin_pb2.DecideApprovalRequest(
        id=approval_id, verdict=verdict, approver=approver, reason=reason
    )
    with _client(admin) as call:
        a = call("DecideApproval", request)
    click.echo(f"{a.id}: {a.status} by {a.approver} (org {a.org}, user {a.user})")


def _decision_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.option("--reason", default="", help="Why (audited).")(f)
    f = click.option(
        "--approver",
        default=None,
        help="Who decides (audited), only without a token; default: $USER. With a token, "
        "the token's name.",
    )(f)
    return admin_option(f)


@approvals.command("approve")
@click.argument("approval_id", metavar="ID")
@_decision_options
def approve(approval_id: str, reason: str, approver: str | None, admin: str) -> None:
    """Approve a pending request: the same user may send it once, before it expires."""
    _decide(admin_pb2.VERDICT_APPROVE, approval_id, reason, approver, admin)


@approvals.command("deny")
@click.argument("approval_id", metavar="ID")
@_decision_options
def deny(approval_id: str, reason: str, approver: str | None, admin: str) -> None:
    """Deny a pending request."""
    _decide(admin_pb2.VERDICT_DENY, approval_id, reason, approver, admin)
