"""Policy tooling: ``check``, ``eval``, ``schema`` and ``test`` (no sidecar needed)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from ..errors import PolicyError, RequestError
from .options import policies_option
from .root import ENV, EXIT_NOT_ALLOWED, OUTPUT, main


@main.command(context_settings=ENV)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@OUTPUT
def check(paths: tuple[str, ...], output: str) -> None:
    """Validate policy files and directories: one line per problem, exit 1 if any."""
    from dataclasses import asdict

    from ..sources.files import compile_paths, policy_files

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


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{v!r} is not 'name: value'", param_hint="-H")
        out[name.strip().lower()] = value.strip()
    return out


@main.command("eval", context_settings=ENV)
@policies_option
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
    from ..admin.evaluate import dry_run
    from ..sources.files import compile_paths

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
    from ..policy.schema import policy_schema

    click.echo(json.dumps(policy_schema(), indent=2))


@main.command("test", context_settings=ENV)
@policies_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-v", "--verbose", is_flag=True, help="Name every test, passed ones too.")
def test_(policies: tuple[str, ...], paths: tuple[str, ...], verbose: bool) -> None:
    """Run policy tests: every *_test.yaml under PATHS; exit 1 if one fails."""
    from ..policytest import PolicyTestError, find_test_files, read_cases, run_case
    from ..sources.catalog import load_catalog
    from ..sources.files import compile_paths

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
