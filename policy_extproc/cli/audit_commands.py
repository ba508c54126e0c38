"""``audit``: tools for the hash-chained audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .root import ENV, main


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
@click.option(
    "--output",
    "output",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="json: one JSON object (ok, records, segments, the first problem with its file, line "
    "and reason), for scripts.",
)
def verify(paths: tuple[str, ...], checkpoint_file: str | None, output: str) -> None:
    """Check the hash chain of audit logs; exit 1 at the first broken or missing link.

    A directory is checked as the segments of one or more chains (rotation), linked by hash.
    """
    from ..audit.verify import report, summary

    text = None
    if checkpoint_file is not None:
        text = Path(checkpoint_file).read_text(encoding="utf-8")
    try:
        if output == "json":
            result = summary(paths, text, checkpoint_name=checkpoint_file or "")
            click.echo(json.dumps(result, indent=2, ensure_ascii=False))
            ok = bool(result["ok"])
        else:
            lines, ok = report(paths, text, checkpoint_name=checkpoint_file or "")
            for line in lines:
                click.echo(line)
    except ValueError as exc:
        raise click.BadParameter(f"{checkpoint_file}: not JSON lines: {exc}") from None
    if not ok:
        sys.exit(1)
