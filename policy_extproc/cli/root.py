"""The root of the ``policy-extproc`` command, shared by every command module.

Every option is also an environment variable ``POLICY_EXTPROC_<OPTION>`` (click's
``auto_envvar_prefix``), as Kubernetes deployments want.
"""

from __future__ import annotations

import click

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
