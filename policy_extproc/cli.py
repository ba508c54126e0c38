"""The ``policy-extproc`` command. Every option is also an environment variable
``POLICY_EXTPROC_<OPTION>`` (click's ``auto_envvar_prefix``), as Kubernetes deployments want."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from .admin.auth import TOKEN_ENV as ADMIN_TOKEN_ENV
from .admin.auth import token_from_env
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
        body = Path(request_file).read_bytes()
        run = asyncio.run(dry_run(snapshot, body, _headers(headers), api_path or ""))
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
    from .llm.catalog import load_catalog
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
    catalog = load_catalog()  # once, not once per case
    for file in files:
        try:
            cases = read_cases(str(file), file.read_text(encoding="utf-8"))
        except (PolicyTestError, OSError, UnicodeDecodeError) as exc:
            errors.append(str(exc))
            continue
        for case in cases:
            outcome = run_case(snapshot, case, catalog=catalog)
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
    help="Hash-chained JSON-lines audit log; '-': standard output only.",
)
@click.option(
    "--audit-max-bytes",
    default=None,
    callback=lambda ctx, param, value: _size(value),
    help="Rotate the audit log once it would grow past this size (e.g. 100M); the hash chain "
    "continues in the new file.",
)
@click.option(
    "--audit-max-age",
    default=None,
    callback=lambda ctx, param, value: _seconds(value, "--audit-max-age"),
    help="Rotate the audit log once its file is this old (e.g. 1h, 1d).",
)
@click.option(
    "--audit-keep",
    default=None,
    type=click.IntRange(1),
    help="Closed audit segments to keep beside the live file (default: all; ship them first).",
)
@click.option(
    "--audit-otlp/--no-audit-otlp",
    default=True,
    show_default=True,
    help="With --otlp-endpoint: every audit line, and a checkpoint of the chain's head every "
    "--audit-checkpoint-interval, as OTLP log records.",
)
@click.option(
    "--audit-checkpoint-interval",
    default="10s",
    show_default=True,
    callback=lambda ctx, param, value: _seconds(value, "--audit-checkpoint-interval"),
    help="How often the chain's head is exported (OTLP logs).",
)
@click.option(
    "--audit-stdout/--no-audit-stdout",
    default=False,
    help="Also write every audit line, hash chain included, to standard output (log agents).",
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
@click.option(
    "--grace",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.0, 3600.0),
    help="Seconds open streams may finish after SIGTERM; the rest are cut (and audited as cut).",
)
@click.option(
    "--work-budget",
    default=64 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(0),
    help="Work one request may cost, in body bytes x text scanners (PII rules, compliance "
    "packs, content filters) in force; over it: 413 work_budget_exceeded. 0: no limit.",
)
@click.option(
    "--work-timeout",
    default=4.0,
    show_default=True,
    type=click.FloatRange(0.01, 300.0),
    help="Seconds a large body's examination may take in a worker process; over it: 413 "
    "work_budget_exceeded. The sidecar asks Envoy for this plus 0.5 s: keep it within the "
    "ext_proc filter's max_message_timeout.",
)
@click.option(
    "--offload-bytes",
    default=32 * 1024,
    show_default=True,
    type=click.IntRange(0),
    help="Bodies at least this large are examined in a worker process, off the event loop.",
)
@click.option(
    "--offload-workers",
    default=1,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Worker processes that examine large bodies (0: every body in the event loop).",
)
@click.option(
    "--offload-warm/--offload-lazy",
    default=True,
    show_default=True,
    help="Start the worker processes and compile the policies in them at start and on every "
    "policy change (lazy: on the first large body).",
)
@click.option(
    "--message-timeout",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.06, 300.0),
    help="Envoy's ext_proc message_timeout: a decision later than this is refused and "
    "audited as envoy_gave_up.",
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
    audit_max_bytes: int | None,
    audit_max_age: float | None,
    audit_keep: int | None,
    audit_stdout: bool,
    audit_otlp: bool,
    audit_checkpoint_interval: float,
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
    grace: float,
    work_budget: int,
    work_timeout: float,
    offload_bytes: int,
    offload_workers: int,
    offload_warm: bool,
    message_timeout: float,
    admin_tokens: str | None,
    decision_stream_max: int,
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
    try:
        # From the environment or a file only: a token on the command line would show in `ps`.
        admin_token = token_from_env()
    except AdminError as exc:
        raise click.UsageError(exc.message) from None

    configure(log_level, log_format)  # type: ignore[arg-type]
    config = ServerConfig(
        policies=policies,
        listen=listen,
        redis=redis,
        redis_timeout_s=redis_timeout,
        audit_log=audit_log or None,
        audit_max_bytes=audit_max_bytes,
        audit_max_age_s=audit_max_age,
        audit_keep=audit_keep,
        audit_stdout=audit_stdout,
        audit_otlp=audit_otlp,
        audit_checkpoint_s=audit_checkpoint_interval,
        fsync_interval_s=fsync_interval,
        grace_s=grace,
        otlp_endpoint=otlp_endpoint,
        catalog=catalog,
        max_body_bytes=max_body_bytes,
        alert_webhook=alert_webhook,
        alert_format=alert_format,
        alert_window_s=alert_window,
        budget_time_zone=budget_time_zone,
        metrics_listen=metrics_listen or None,
        admin_listen=None if admin_listen.lower() in ("", "off", "none") else admin_listen,
        tls=tls,
        admin_tls=admin_tls,
        allow_anonymous=allow_anonymous,
        work_budget=work_budget,
        work_timeout_s=work_timeout,
        offload_bytes=offload_bytes,
        offload_workers=offload_workers,
        offload_warm=offload_warm,
        message_timeout_s=message_timeout,
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
    except (AdminError, StateError, TlsError) as exc:  # no admin token; Redis down; bad cert
        click.echo(f"policy-extproc: {exc.message}; not serving", err=True)
        sys.exit(1)


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _size(value: str | None) -> int | None:
    if not value:
        return None
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (text[:-1], text[-1]) if text[-1:] in _SIZE_UNITS else (text, "")
    if not number.isdigit() or int(number) * _SIZE_UNITS[unit] < 4096:
        raise click.BadParameter(f"{value!r}: a size of at least 4096 bytes, such as 100M")
    return int(number) * _SIZE_UNITS[unit]


def _seconds(value: str | None, flag: str) -> float | None:
    if not value:
        return None
    from .policy.fields import FieldError, duration

    try:
        return duration(value)
    except FieldError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


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
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--checkpoints",
    "checkpoint_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="JSON lines of this log's checkpoints as the collector received them (or an OTLP JSON "
    "export): every checkpointed line must be in the log, so lines cut off the end are found.",
)
def verify(paths: tuple[str, ...], checkpoint_file: str | None) -> None:
    """Check the hash chain of audit logs; exit 1 at the first broken or missing link.

    A directory is checked as the segments of one or more chains (rotation), linked by hash.
    """
    from .audit.verify import report

    text = None
    if checkpoint_file is not None:
        text = Path(checkpoint_file).read_text(encoding="utf-8")
    try:
        lines, ok = report(paths, text, checkpoint_name=checkpoint_file or "")
    except ValueError as exc:
        raise click.BadParameter(f"{checkpoint_file}: not JSON lines: {exc}") from None
    for line in lines:
        click.echo(line)
    if not ok:
        sys.exit(1)


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
