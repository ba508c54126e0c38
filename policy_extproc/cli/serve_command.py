"""``serve``: the ext_proc / ext_authz sidecar, and the parsing of its options."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from ..admin.auth import TOKEN_ENV as ADMIN_TOKEN_ENV
from ..admin.auth import token_from_env
from ..errors import AdminError, PolicyError, StateError, TlsError
from .options import listen_options, parse_listen_address, parse_seconds, parse_size, tls_options
from .root import ENV, main

if TYPE_CHECKING:
    from ..transport.limits import Limits


@main.command(context_settings=ENV)
@listen_options
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
    callback=lambda ctx, param, value: parse_size(value),
    help="Rotate the audit log once it would grow past this size (e.g. 100M); the hash chain "
    "continues in the new file.",
)
@click.option(
    "--audit-max-age",
    default=None,
    callback=lambda ctx, param, value: parse_seconds(value, "--audit-max-age"),
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
    callback=lambda ctx, param, value: parse_seconds(value, "--audit-checkpoint-interval"),
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
    help='Webhook payload: the alert as a JSON object, or Slack\'s {"text": ...}.',
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
    callback=lambda ctx, param, value: parse_listen_address(value),
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
@tls_options
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
    help="Compile the policies in the worker processes at start, on every policy change and in "
    "a killed worker's replacement at once (lazy: on the first large body after each).",
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
    "--max-inflight",
    default=64,
    show_default=True,
    type=int,
    help="Admission control: at most this many requests being decided at once; the next one "
    "is answered at once with 503 overloaded and retry-after (0: unbounded).",
)
@click.option(
    "--max-queue-age",
    default=0.0,
    show_default=True,
    type=float,
    help="Seconds: a request whose headers reach the sidecar later than this after Envoy's "
    "request.time is shed like one over --max-inflight (0: off; Envoy and the sidecar must "
    "share a clock: a sidecar in the pod).",
)
@click.option(
    "--fail-open-route",
    multiple=True,
    help="Path glob (repeatable, e.g. '/v1/embeddings*'): a shed request to a matching path "
    "goes through unchecked instead of being refused; audited and counted all the same.",
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
@click.option(
    "--response-accounting",
    default="inline",
    show_default=True,
    type=click.Choice(["inline", "observe"]),
    help="Who reads an answer that only budgets and token limits need: the inline ext_proc "
    "filter (holds the answer while it reads it), or the observability_mode filter of the "
    "shipped Envoy configurations (off the answer path). Output guardrails stay inline.",
)
@click.option(
    "--observe-timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0.1, 479.0),
    help="Seconds: with --response-accounting observe, an answer no observe stream reported "
    "within this is charged at its estimate, audited as response_unobserved (below 480: the "
    "reservation it charges lasts 600 s).",
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
    transport: str,
    event_loop: str,
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
    max_inflight: int,
    max_queue_age: float,
    fail_open_route: tuple[str, ...],
    admin_tokens: str | None,
    decision_stream_max: int,
    response_accounting: str,
    observe_timeout: float,
    workers: int,
    allow_anonymous: bool,
    log_level: str,
    log_format: str,
    h2_limits: Limits,
    **tls_files: str | None,
) -> None:
    """Run the ext_proc / ext_authz sidecar."""
    from .. import eventloop
    from ..enforce.admission import AdmissionSettings
    from ..logformat import configure
    from ..server import ServerConfig
    from ..server import serve as run
    from ..tls import TlsFiles

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
    try:  # each part, and then the whole, validates itself (ValueError): a usage error
        admission = AdmissionSettings(max_inflight, max_queue_age, fail_open_route)
        config = ServerConfig(
            policies=policies,
            listen=listen,
            transport=transport,
            h2_limits=h2_limits,
            event_loop=event_loop,
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
            admission=admission,
            admin_token=admin_token,
            admin_tokens=admin_tokens,
            decision_stream_max=decision_stream_max,
            response_accounting=response_accounting,
            observe_timeout_s=observe_timeout,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        if workers > 1:
            from ..workers import WorkersError
            from ..workers import run as run_workers

            try:
                sys.exit(run_workers(config, workers))
            except WorkersError as exc:
                raise click.UsageError(str(exc)) from None
        eventloop.run(run(config), config.event_loop, config.transport)
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
