"""The ``policy-extproc`` command. Every option is also an environment variable
``POLICY_EXTPROC_<OPTION>`` (click's ``auto_envvar_prefix``), as Kubernetes deployments want."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from .admin.auth import TOKEN_ENV as ADMIN_TOKEN_ENV
from .admin.cli import approvals, policies
from .errors import AdminError, PolicyError, RequestError, StateError, TlsError

# Every option of every command reads POLICY_EXTPROC_<OPTION> (DESIGN.md s3). Click would
# derive POLICY_EXTPROC_<COMMAND>_<OPTION> for a subcommand; an explicit prefix on each command
# keeps the documented names.
ENV = {"auto_envvar_prefix": "POLICY_EXTPROC"}


# What ``eval`` exits with: scripts tell a refused or rewritten request from an allowed one.
EXIT_NOT_ALLOWED = 3


@click.group(
    context_settings={"auto_envvar_prefix": "POLICY_EXTPROC", "help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="policy-extproc", prog_name="policy-extproc")
def main() -> None:
    """Policy-enforcement sidecar for LLM traffic behind Envoy."""


OUTPUT = click.option(
    "--output",
    "output",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="json: one JSON document on stdout, for scripts.",
)


@main.command(context_settings=ENV)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@OUTPUT
def check(paths: tuple[str, ...], output: str) -> None:
    """Validate policy files and directories: one line per problem, exit 1 if any."""
    from dataclasses import asdict

    from .policy.compiler import compile_paths
    from .policy.loader import policy_files

    try:
        snapshot = compile_paths(paths)
    except PolicyError as exc:
        n = len(exc.problems)
        if output == "json":
            problems = [{**asdict(p), "line_text": str(p)} for p in exc.problems]
            click.echo(json.dumps({"ok": False, "problems": problems}, indent=2))
        else:
            for problem in exc.problems:
                click.echo(str(problem))
        click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
        sys.exit(1)
    files = len(policy_files(paths))
    if output == "json":
        summary = {"ok": True, "policies": len(snapshot), "rules": snapshot.rule_count,
                   "files": files, "version": snapshot.version}  # fmt: skip
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"ok: {len(snapshot)} policies, {snapshot.rule_count} rules in {files} file"
        f"{'s' if files != 1 else ''} (version {snapshot.version})"
    )


def _tls_options(f: Callable[..., None]) -> Callable[..., None]:
    """--tls-* for the ext_proc/ext_authz listener, --admin-tls-* for the admin API."""
    pem = click.Path(exists=True, dir_okay=False)
    for prefix, what in (
        ("admin-tls", "the admin API"),
        ("tls", "the ext_proc/ext_authz listener"),
    ):
        f = click.option(
            f"--{prefix}-client-ca",
            default=None,
            type=pem,
            help=f"PEM CA whose client certificates {what} accepts (mTLS; needs the cert).",
        )(f)
        f = click.option(
            f"--{prefix}-key", default=None, type=pem, help=f"PEM private key of {what}."
        )(f)
        f = click.option(
            f"--{prefix}-cert",
            default=None,
            type=pem,
            help=f"PEM certificate chain of {what}: TLS on (re-read when the file changes).",
        )(f)
    return f


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{v!r} is not 'name: value'", param_hint="-H")
        out[name.strip().lower()] = value.strip()
    return out


@main.command("eval", context_settings=ENV)
@click.option(
    "--policies",
    "policies",
    required=True,
    multiple=True,
    type=click.Path(exists=True),
    help="Policy file or directory (repeatable).",
)
@click.option(
    "--request",
    "request_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The LLM request body (JSON).",
)
@click.option(
    "--path",
    "api_path",
    default=None,
    help="API path of the request; default guessed from the body: /v1/messages for "
    "Anthropic's ('system' or 'anthropic_version'), a Gemini path for 'contents', a Bedrock "
    "Converse path for 'inferenceConfig', 'toolConfig' or untyped blocks, else "
    "/v1/chat/completions.",
)
@click.option("-H", "--header", "headers", multiple=True, help="'name: value' (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the audit record plus 'body'.")
def eval_(
    policies: tuple[str, ...],
    request_file: str,
    api_path: str | None,
    headers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Decide one request offline and explain why.

    Exit status: 0 when the decision is allow, 3 when it is anything else (modify, block,
    throttle, escalate), 2 when the request cannot be evaluated, 1 when the policies do not load.
    """
    from .admin.evaluate import dry_run
    from .policy.compiler import compile_paths

    try:
        snapshot = compile_paths(policies)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    try:
        run = dry_run(snapshot, Path(request_file).read_bytes(), _headers(headers), api_path or "")
    except RequestError as exc:
        click.echo(f"{request_file}: {exc.code}: {exc.message}", err=True)
        sys.exit(2)
    if as_json:
        record = run.record.to_dict()
        record["body"] = json.loads(run.body) if run.body is not None else None
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        for line in run.explanation:
            click.echo(line)
        if run.body is not None:
            click.echo("rewritten body:")
            click.echo(run.body.decode())
    if run.record.decision != "allow":
        sys.exit(EXIT_NOT_ALLOWED)


@main.command(context_settings=ENV)
def schema() -> None:
    """Print the JSON Schema of policy files (for editors and CI linters)."""
    from .policy.schema import policy_schema

    click.echo(json.dumps(policy_schema(), indent=2))


@main.command("test", context_settings=ENV)
@click.option(
    "--policies",
    "policies",
    required=True,
    multiple=True,
    type=click.Path(exists=True),
    help="Policy file or directory (repeatable).",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-v", "--verbose", is_flag=True, help="Name every test, passed ones too.")
def test_(policies: tuple[str, ...], paths: tuple[str, ...], verbose: bool) -> None:
    """Run policy tests: every *_test.yaml under PATHS; exit 1 if one fails."""
    from .policy.compiler import compile_paths
    from .policytest import PolicyTestError, find_test_files, read_cases, run_case

    try:
        snapshot = compile_paths(policies)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    files = find_test_files(paths)
    if not files:
        click.echo("no test files (*_test.yaml) found", err=True)
        sys.exit(1)
    passed = failed = 0
    errors: list[str] = []
    for file in files:
        try:
            cases = read_cases(str(file), file.read_text(encoding="utf-8"))
        except (PolicyTestError, OSError, UnicodeDecodeError) as exc:
            errors.append(str(exc))
            continue
        for case in cases:
            outcome = run_case(snapshot, case)
            if outcome.passed:
                passed += 1
                if verbose:
                    click.echo(f"PASS {case.file}:{case.line}: {case.name}")
                continue
            failed += 1
            click.echo(f"FAIL {case.file}:{case.line}: {case.name}")
            for why in outcome.failures:
                click.echo(f"     {why}")
    for message in errors:
        click.echo(f"ERROR {message}")
    summary = f"{passed} passed, {failed} failed"
    if errors:
        summary += f", {len(errors)} error{'s' if len(errors) != 1 else ''}"
    click.echo(summary)
    if failed or errors:
        sys.exit(1)


@main.command(context_settings=ENV)
@click.option(
    "--policies",
    required=True,
    multiple=True,
    type=click.Path(exists=True),
    help="Policy file or directory (repeatable; env: comma-free single path).",
)
@click.option("--listen", default="127.0.0.1:50051", show_default=True)
@click.option("--redis", default=None, help="redis://host:port/db; none: in-memory state.")
@click.option(
    "--redis-timeout",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0.001, 10.0),
    help="Seconds a Redis call may take; past it a rule's on_error (open|closed) decides.",
)
@click.option(
    "--audit-log",
    default="audit.jsonl",
    show_default=True,
    help="Hash-chained JSON-lines audit log.",
)
@click.option(
    "--fsync-interval",
    default=1.0,
    show_default=True,
    type=float,
    help="Seconds between fsyncs of the audit log (0: every record).",
)
@click.option("--otlp-endpoint", default=None, help="OTLP gRPC endpoint, e.g. localhost:4317.")
@click.option(
    "--catalog",
    default=None,
    type=click.Path(exists=True),
    help="Model catalog (prices, providers); default: the packaged one.",
)
@click.option(
    "--max-body-bytes",
    default=4 * 1024 * 1024,
    show_default=True,
    type=int,
    help="Largest request body; must agree with Envoy's buffer limits.",
)
@click.option(
    "--alert-webhook",
    default=None,
    help="URL that receives alerts: enforced blocks, approvals waiting, budget thresholds.",
)
@click.option(
    "--alert-format",
    default="json",
    show_default=True,
    type=click.Choice(["json", "slack"]),
    help="Webhook payload: the alert as a JSON object, or Slack's {\"text\": ...}.",
)
@click.option(
    "--alert-window",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0.0, 86400.0),
    help="Seconds: at most one alert per (policy, rule, user) in this window; the next one "
    "counts those suppressed.",
)
@click.option(
    "--budget-time-zone",
    default="UTC",
    show_default=True,
    help="Time zone of budget days and months (IANA name).",
)
@click.option(
    "--metrics-listen",
    default=None,
    callback=lambda ctx, param, value: _listen_address(value),
    help="HOST:PORT serving Prometheus /metrics and /healthz; unset or 'off': none.",
)
@click.option(
    "--admin-listen",
    default="127.0.0.1:50052",
    show_default=True,
    envvar="POLICY_EXTPROC_ADMIN_LISTEN",
    help="HOST:PORT of the admin API ('off': none); off loopback it needs the token in "
    "POLICY_EXTPROC_ADMIN_TOKEN.",
)
@_tls_options
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--allow-anonymous",
    is_flag=True,
    default=False,
    help="Decide requests that name no organisation by the policies of empty scope, instead "
    "of refusing them with 400 missing_identity.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="json: one object a line, with the request id and trace id of the request logging.",
)
def serve(
    policies: tuple[str, ...],
    listen: str,
    redis: str | None,
    redis_timeout: float,
    audit_log: str,
    fsync_interval: float,
    otlp_endpoint: str | None,
    catalog: str | None,
    max_body_bytes: int,
    alert_webhook: str | None,
    alert_format: str,
    alert_window: float,
    budget_time_zone: str,
    metrics_listen: str | None,
    admin_listen: str,
    workers: int,
    allow_anonymous: bool,
    log_level: str,
    log_format: str,
    **tls_files: str | None,
) -> None:
    """Run the ext_proc / ext_authz sidecar."""
    import asyncio

    from .logformat import configure
    from .server import ServerConfig
    from .server import serve as run
    from .tls import TlsFiles

    f = tls_files
    try:
        tls = TlsFiles.of(f["tls_cert"], f["tls_key"], f["tls_client_ca"], "--tls")
        admin_tls = TlsFiles.of(
            f["admin_tls_cert"], f["admin_tls_key"], f["admin_tls_client_ca"], "--admin-tls"
        )
    except TlsError as exc:
        raise click.UsageError(exc.message) from None

    configure(log_level, log_format)  # type: ignore[arg-type]
    config = ServerConfig(
        policies=policies,
        listen=listen,
        redis=redis,
        redis_timeout_s=redis_timeout,
        audit_log=audit_log or None,
        fsync_interval_s=fsync_interval,
        otlp_endpoint=otlp_endpoint,
        catalog=catalog,
        max_body_bytes=max_body_bytes,
        alert_webhook=alert_webhook,
        alert_format=alert_format,
        alert_window_s=alert_window,
        budget_time_zone=budget_time_zone,
        metrics_listen=metrics_listen or None,
        admin_listen=None if admin_listen.lower() in ("", "off", "none") else admin_listen,
        # From the environment only: a token on the command line would show in `ps`.
        admin_token=os.environ.get(ADMIN_TOKEN_ENV, "").strip() or None,  # Secrets end in \n
        tls=tls,
        admin_tls=admin_tls,
        allow_anonymous=allow_anonymous,
    )
    try:
        if workers > 1:
            from .workers import WorkersError
            from .workers import run as run_workers

            try:
                sys.exit(run_workers(config, workers))
            except WorkersError as exc:
                raise click.UsageError(str(exc)) from None
        asyncio.run(run(config))
    except PolicyError as exc:
        click.echo(str(exc), err=True)
        click.echo("policy-extproc: the policy set does not load; not serving", err=True)
        sys.exit(1)
    except OSError as exc:  # the port is taken, the audit log cannot be opened, ...
        click.echo(f"policy-extproc: cannot start: {exc}", err=True)
        sys.exit(1)
    except (AdminError, StateError, TlsError) as exc:  # no admin token; Redis down; bad cert
        click.echo(f"policy-extproc: {exc.message}; not serving", err=True)
        sys.exit(1)


def _listen_address(value: str | None) -> str | None:
    if value and value.lower() in ("off", "none"):
        return None
    if value:
        from .metrics import parse_listen

        try:
            parse_listen(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value or None


@main.command("mock-provider", context_settings=ENV)
@click.option("--listen", default="127.0.0.1:18080", show_default=True, help="HOST:PORT (0: any)")
@click.option(
    "--fail-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Fraction of requests failed with 503.",
)
@click.option("--name", default="mock", show_default=True, help="Value of x-mock-provider.")
@click.option(
    "--latency-ms", default=0.0, show_default=True, type=float, help="Delay before answering."
)
def mock_provider(listen: str, fail_rate: float, name: str, latency_ms: float) -> None:
    """A fake OpenAI/Anthropic-compatible provider that echoes what it received."""
    from .mockprovider.server import run

    run(listen, fail_rate, name, latency_ms)


@main.group(context_settings=ENV)
def audit() -> None:
    """Audit log tools."""


@audit.command(context_settings=ENV)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def verify(file: str) -> None:
    """Check the hash chain of an audit log; exit 1 at the first broken or missing link."""
    from .audit.chain import verify as verify_chain

    result = verify_chain(file)
    if not result.ok:
        click.echo(f"{file}: {result.message}")
        sys.exit(1)
    click.echo(f"{file}: ok, {result.lines} records, chain intact")


main.add_command(policies)
main.add_command(approvals)


if __name__ == "__main__":  # pragma: no cover
    main()
