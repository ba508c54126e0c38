"""``policy-extproc check`` and ``eval``: through click's runner, and once as a real process.

Paths are relative to tests/data/policy (the tests chdir there), as a user would type them:
policies in ``cli/``, request bodies in ``requests/``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from policy_extproc.cli import main
from policy_extproc.policy.rules import BY_NAME

DATA = Path(__file__).resolve().parents[1] / "data" / "policy"
BIN = Path(sys.executable).parent / "policy-extproc"
ACME_ML = ["-H", "x-org-id: acme", "-H", "x-team-id: ml"]


@pytest.fixture(autouse=True)
def _in_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# -- check -------------------------------------------------------------------------------------


def test_check_ok_prints_one_summary_line() -> None:
    result = run("check", "cli", "valid/seed.json")
    assert result.exit_code == 0
    assert re.fullmatch(
        r"ok: 4 policies, 8 rules in 4 files \(version [0-9a-f]{16}\)\n", result.stdout
    ), result.stdout
    assert result.stderr == ""


def test_check_counts_one_file_and_one_policy() -> None:
    result = run("check", "valid/seed.json")
    assert result.stdout.startswith("ok: 1 policies, 2 rules in 1 file (version ")


def test_check_prints_every_problem_and_exits_1() -> None:
    result = run("check", "invalid/final_override", "invalid/engine_refuses.yaml")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "invalid/engine_refuses.yaml:4: policy 'engine_refuses' rule 1 (content_filter): pattern "
        "'(\\\\w+)\\\\s+\\\\1': the linear-time engine cannot compile it: Back-references are "
        "unsupported.",
        "invalid/engine_refuses.yaml:7: policy 'engine_refuses' rule 2 (content_filter): pattern "
        "'password(?=:)': the linear-time engine cannot compile it: Zero-width assertions are not "
        "supported.",
        "invalid/engine_refuses.yaml:7: policy 'engine_refuses' rule 2 (content_filter): pattern "
        "'(?<!no )secret': the linear-time engine cannot compile it: Zero-width assertions are "
        "not supported.",
        "invalid/final_override/production.yaml:4: policy 'ml_production' rule 1 (model_access): "
        "overrides rule 'models' of policy 'team_ml' (invalid/final_override/teams/ml.yaml:7), "
        "which is final (locked)",
        "invalid/final_override/teams/ml.yaml:4: policy 'team_ml' rule 1 (content_filter): "
        "overrides rule 'secrets' of policy 'org' (invalid/final_override/org.yaml:4), which is "
        "final (locked)",
    ]
    assert result.stderr == "5 problems found\n"


def test_check_of_a_missing_path_is_a_usage_error() -> None:
    result = run("check", "no/such/dir")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


# -- eval --------------------------------------------------------------------------------------


def test_eval_explains_the_decision() -> None:
    result = run("eval", "--policies", "cli", "--request", "requests/codename.json", *ACME_ML)
    assert result.exit_code == 3, result.output  # not allow: a script can tell
    assert result.stdout.splitlines() == [
        "decision: modify (policy 'acme_org', rule 'codenames'): prompt redacted keyword #1 of "
        "rule 'codenames'",
        "request: org=acme team=ml user=- environment=- roles=- api=openai.chat "
        "model=gpt-4o-mini prompt_parts=2",
        "policies applied (least to most specific):",
        "  1. acme_org [org=acme] cli/org.yaml:2",
        "  2. acme_ml [org=acme, team=ml] cli/teams/ml.yaml:1",
        "effective rules:",
        "    acme_org/secrets (content_filter): inherited from 'acme_org', locked (final)",
        "  * acme_org/codenames (content_filter): inherited from 'acme_org'",
        "    acme_ml/models (model_access): overrides 'acme_org'",
        "    acme_ml/weapons (content_filter): own",
        "fired:",
        "  MODIFY acme_org/codenames (content_filter): prompt redacted keyword #1 of rule "
        "'codenames'",
        "redactions: codenames=1",
        "compliance: SOC2",
        "rewritten body:",
        '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":'
        '"user","content":"What is the status of [REDACTED:codenames]? See TCK-123456."}]}',
    ]


def test_eval_block_has_no_rewritten_body() -> None:
    result = run("eval", "--policies", "cli", "--request", "requests/password.json", *ACME_ML)
    assert result.exit_code == 3
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "decision: block (policy 'acme_ml', rule 'models'): model 'gpt-4o' is "
        "not allowed (allowed: gpt-4o-mini, claude-3-haiku)"
    )
    secrets = "  BLOCK acme_org/secrets (content_filter): prompt matches keyword #1 of rule "
    secrets += "'secrets'"
    assert secrets in lines
    assert "rewritten body:" not in lines


def test_eval_json_prints_the_audit_record_and_body() -> None:
    result = run(
        "eval",
        "--policies",
        "cli",
        "--request",
        "requests/codename.json",
        *ACME_ML,
        "-H",
        "x-environment: production",
        "-H",
        "X-User-Id: alice",
        "-H",
        "x-request-id: req-1",
        "--json",
    )
    assert result.exit_code == 3, result.output
    record = json.loads(result.stdout)
    seed_shape = [
        "decision",
        "policy",
        "rule",
        "reason",
        "user",
        "environment",
        "timestamp",
        "request_id",
    ]
    assert list(record)[:8] == seed_shape
    assert {
        "org",
        "team",
        "model",
        "provider",
        "mode",
        "compliance",
        "fired",
        "redactions",
        "usage",
        "cost_usd",
        "latency_us",
        "body",
    } <= set(record)
    assert {
        k: record[k]
        for k in [
            *seed_shape[:6],
            "request_id",
            "org",
            "team",
            "model",
            "mode",
            "would_decide",
            "compliance",
        ]
    } == {
        "decision": "modify",
        "policy": "acme_org",
        "rule": "codenames",
        "reason": "prompt redacted keyword #1 of rule 'codenames'",
        "user": "alice",
        "environment": "production",
        "request_id": "req-1",
        "org": "acme",
        "team": "ml",
        "model": "gpt-4o-mini",
        "mode": "log",
        "would_decide": "modify",
        "compliance": ["SOC2"],
    }
    # The production policy is in log mode: it fires, and redacts nothing.
    assert record["fired"] == [
        {"policy": "acme_org", "rule": "codenames", "action": "modify"},
        {"policy": "acme_production", "rule": "tickets", "action": "modify:log"},
    ]
    assert record["redactions"] == {"codenames": 1}
    assert record["body"]["messages"][1]["content"] == (
        "What is the status of [REDACTED:codenames]? See TCK-123456."
    )


def test_eval_json_body_is_null_when_nothing_is_rewritten() -> None:
    result = run("eval", "--policies", "cli", "--request", "requests/password.json", "--json")
    record = json.loads(result.stdout)
    assert (record["decision"], record["body"], record["fired"]) == ("allow", None, [])
    assert result.exit_code == 0


def test_eval_guesses_an_anthropic_body() -> None:
    result = run(
        "eval",
        "--policies",
        "cli",
        "--request",
        "requests/anthropic.json",
        "-H",
        "x-org-id: acme",
        "--json",
    )
    record = json.loads(result.stdout)
    assert record["redactions"] == {"codenames": 2}
    assert record["body"]["system"] == "[REDACTED:codenames] is our code name."
    assert record["body"]["messages"][0]["content"][0]["text"] == (
        "Tell me about [REDACTED:codenames]."
    )


def test_eval_with_invalid_policies_prints_the_problems() -> None:
    result = run(
        "eval", "--policies", "invalid/missing_type.yaml", "--request", "requests/password.json"
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "invalid/missing_type.yaml:3: policy 'no_type' rule 1: missing 'type' (one of "
        f"{', '.join(BY_NAME)})\n"
    )
    assert result.stdout == ""


def test_eval_with_a_malformed_request_exits_2() -> None:
    result = run("eval", "--policies", "cli", "--request", "requests/malformed.json")
    assert result.exit_code == 2
    assert result.stderr == (
        "requests/malformed.json: malformed_body: field 'messages' must be a list\n"
    )


def test_eval_refuses_a_header_without_a_colon() -> None:
    result = run(
        "eval", "--policies", "cli", "--request", "requests/password.json", "-H", "x-org-id acme"
    )
    assert result.exit_code == 2
    assert "'x-org-id acme' is not 'name: value'" in result.stderr


# -- the installed command ---------------------------------------------------------------------


def test_the_installed_command() -> None:
    check = subprocess.run(
        [str(BIN), "check", "invalid/required_fields.yaml", "valid/seed.json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DATA,
    )
    assert check.returncode == 1
    assert check.stdout.splitlines() == [
        "invalid/required_fields.yaml:3: policy 'required' rule 1 (cost_budget): 'limit_usd' "
        "is required",
        "invalid/required_fields.yaml:5: policy 'required' rule 2 (failover): 'provider' is "
        "required",
        "invalid/required_fields.yaml:5: policy 'required' rule 2 (failover): 'fallbacks' is "
        "required",
        "invalid/required_fields.yaml:7: policy 'required' rule 3 (compliance): 'framework' is "
        "required",
    ]
    assert check.stderr == "4 problems found\n"
    evaluated = subprocess.run(
        [
            str(BIN),
            "eval",
            "--policies",
            "valid/seed.json",
            "--request",
            "requests/password.json",
            "-H",
            "x-environment: development",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DATA,
    )
    assert evaluated.returncode == 3, evaluated.stderr
    record = json.loads(evaluated.stdout)
    assert (record["decision"], record["rule"], record["environment"]) == (
        "block",
        "model_access",
        "development",
    )
    assert [f["rule"] for f in record["fired"]] == ["model_access", "content_filter"]


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert re.fullmatch(r"policy-extproc, version \d+\.\d+\.\d+\S*\n", result.stdout)


def test_check_output_json() -> None:
    result = run("check", "--output", "json", "cli", "valid/seed.json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["policies"], summary["rules"], summary["files"]) == (
        True, 4, 8, 4)  # fmt: skip
    result = run("check", "--output", "json", "invalid/required_fields.yaml")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    first = report["problems"][0]
    assert (first["file"], first["line"], first["policy"], first["rule_index"],
            first["rule_type"]) == ("invalid/required_fields.yaml", 3, "required", 1,
                                    "cost_budget")  # fmt: skip
    assert first["message"] == "'limit_usd' is required"
    assert first["line_text"].startswith("invalid/required_fields.yaml:3: policy 'required'")
