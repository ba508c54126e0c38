"""The ``policy-extproc`` command. Every option is also an environment variable
``POLICY_EXTPROC_<OPTION>`` (click's ``auto_envvar_prefix``), as Kubernetes deployments want."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .admin.auth import TOKEN_ENV as ADMIN_TOKEN_ENV
from .admin.auth import token_from_env
from .admin.cli import approvals, policies
from .errors import AdminError, PolicyError, RequestError, StateError

# Every option of every command reads POLICY_EXTPROC_<OPTION> (DESIGN.md s3). Click would
# derive POLICY_EXTPROC_<COMMAND>_<OPTION> for a subcommand; an explicit prefix on each command
# keeps the documented names.
ENV = {"auto_envvar_prefix": "POLICY_EXTPROC"}


@click.group(
    context_settings={"auto_envvar_prefix": "POLICY_EXTPROC", "help_option_names": ["-h", "--help"]}
)
def main() -> None:
    """Policy-enforcement sidecar for LLM traffic behind Envoy."""


@main.command(context_settings=ENV)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def check(paths: tuple[str, ...]) -> None:
    """Validate policy files and directories: one line per problem, exit 1 if any."""
    from .policy.compiler import compile_paths
    from .policy.loader import policy_files

    try:
        snapshot = compile_paths(paths)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem))
        n = len(exc.problems)
        click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
        sys.exit(1)
    files = len(policy_files(paths))
    click.echo(
        f"ok: {len(snapshot)} policies, {snapshot.rule_count} rules in {files} file"
        f"{'s' if files != 1 else ''} (version {snapshot.version})"
    )


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
    help="API path of the request; default /v1/messages when the body looks like "
    "Anthropic's (has 'system' or 'anthropic_version'), else /v1/chat/completions.",
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
    """Decide one request offline and explain why."""
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
        return
    for line in run.explanation:
        click.echo(line)
    if run.body is not None:
        click.echo("rewritten body:")
        click.echo(run.body.decode())


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
@click.option("--alert-webhook", default=None, help="URL that receives budget and approval alerts.")
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
@click.option(
    "--admin-tokens",
    default=None,
    type=click.Path(),
    help="Admin identities: a file of name:role:token lines (role viewer, approver or admin), "
    f"or a directory of such files (a mounted Secret); {ADMIN_TOKEN_ENV} (or "
    f"{ADMIN_TOKEN_ENV}_FILE) adds one admin token named 'admin'.",
)
@click.option(
    "--decision-stream-max",
    default=100_000,
    show_default=True,
    type=click.IntRange(0),
    help="With --redis: also append every audit record to the Redis Stream "
    "policy-extproc:decisions, capped near this many entries (the dashboard reads it); 0: off.",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
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
    budget_time_zone: str,
    metrics_listen: str | None,
    admin_listen: str,
    admin_tokens: str | None,
    decision_stream_max: int,
    workers: int,
    log_level: str,
) -> None:
    """Run the ext_proc / ext_authz sidecar."""
    import asyncio
    import logging

    from .server import ServerConfig
    from .server import serve as run

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        # From the environment or a file only: a token on the command line would show in `ps`.
        admin_token = token_from_env()
    except AdminError as exc:
        raise click.UsageError(exc.message) from None
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
        budget_time_zone=budget_time_zone,
        metrics_listen=metrics_listen or None,
        admin_listen=None if admin_listen.lower() in ("", "off", "none") else admin_listen,
        admin_token=admin_token,
        admin_tokens=admin_tokens,
        decision_stream_max=decision_stream_max,
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
    except (AdminError, StateError) as exc:  # admin API open without a token; Redis down
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


@main.command(context_settings=ENV)
@click.option(
    "--admin",
    default="127.0.0.1:50052",
    show_default=True,
    envvar="POLICY_EXTPROC_ADMIN",
    help="HOST:PORT of a sidecar's admin API (serve --admin-listen).",
)
@click.option(
    "--redis",
    default=None,
    help="redis://host:port/db the sidecars share: decisions of all replicas from their stream; "
    "none: the live stream of the --admin replica, from now on.",
)
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to serve.")
@click.option(
    "--admin-tokens",
    default=None,
    type=click.Path(),
    help="The sidecars' admin identities (name:role:token lines, a file or a Secret directory): "
    "people sign in with their token. None (and no POLICY_EXTPROC_ADMIN_TOKEN): loopback only.",
)
@click.option(
    "--trace-url-template",
    default=None,
    help="Link to a decision's trace, e.g. http://jaeger:16686/trace/{trace_id}.",
)
@click.option(
    "--max-decisions",
    default=100_000,
    show_default=True,
    type=click.IntRange(1),
    help="Decisions held for the live tail, search and spend (the stream's cap).",
)
@click.option(
    "--budget-time-zone",
    default="UTC",
    show_default=True,
    help="Time zone of budget days and months, as the sidecars' (IANA name).",
)
def dashboard(
    admin: str,
    redis: str | None,
    listen: str,
    admin_tokens: str | None,
    trace_url_template: str | None,
    max_decisions: int,
    budget_time_zone: str,
) -> None:
    """Serve the web dashboard: policies, dry runs, decisions, approvals, spend."""
    import logging

    from .dashboard.serve import run, split_listen
    from .dashboard.state import DashboardConfig

    try:
        split_listen(listen)
        admin_token = token_from_env()
    except (ValueError, AdminError) as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(
        DashboardConfig(
            admin=admin,
            listen=listen,
            redis=redis,
            trace_url_template=trace_url_template,
            admin_token=admin_token,
            admin_tokens=admin_tokens,
            max_decisions=max_decisions,
            budget_time_zone=budget_time_zone,
        )
    )


main.add_command(policies)
main.add_command(approvals)


if __name__ == "__main__":  # pragma: no cover
    main()
