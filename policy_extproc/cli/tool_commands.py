"""Companions of the sidecar: the web ``dashboard``, and the ``mock-provider`` for demos."""

from __future__ import annotations

import click

from ..admin.auth import token_from_env
from ..errors import AdminError
from .root import ENV, main


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
    from ..mockprovider.server import run

    run(listen, fail_rate, name, latency_ms)


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

    from ..dashboard.serve import run, split_listen
    from ..dashboard.state import DashboardConfig

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
