"""``policy-extproc test``: policy tests in ``*_test.yaml`` files, decided by the dry run."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from policy_extproc.cli import main
from policy_extproc.policytest import PolicyTestError, read_cases
from policy_extproc.sources.files import policy_files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "policies"

POLICY = """
policy_name: acme
org: acme
rules:
  - {type: content_filter, id: secrets, keywords: [confidential], action: block}
  - {type: pii, id: contacts, entities: [EMAIL]}
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "acme.yaml").write_text(POLICY)
    return d


def _tests(tmp_path: Path, text: str, name: str = "acme_test.yaml") -> Path:
    path = tmp_path / "tests" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


CASES = """
tests:
  - name: hello passes
    headers: {x-org-id: acme, x-user-id: u}
    request: {model: gpt-4o, messages: [{role: user, content: hello}]}
    expect: {decision: allow}
  - name: secrets are blocked
    headers: {x-org-id: acme, x-user-id: u}
    request: {model: gpt-4o, messages: [{role: user, content: "a confidential plan"}]}
    expect: {decision: block, policy: acme, rule: secrets}
  - name: mail is masked
    headers: {x-org-id: acme, x-user-id: u}
    request: {model: gpt-4o, messages: [{role: user, content: "write to a@example.org"}]}
    expect: {decision: modify, rule: contacts, body_contains: "[EMAIL]"}
  - name: a bad body is refused with its code
    headers: {x-org-id: acme, x-user-id: u}
    request: "not json"
    expect: {decision: block, code: malformed_body}
"""


def test_all_pass(policies: Path, tmp_path: Path) -> None:
    _tests(tmp_path, CASES)
    result = run("test", "--policies", str(policies), str(tmp_path / "tests"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "4 passed, 0 failed"
    assert "FAIL" not in result.stdout


def test_a_failure_is_named_with_its_line_and_why(policies: Path, tmp_path: Path) -> None:
    path = _tests(tmp_path, CASES.replace("decision: allow}", "decision: block, rule: x}", 1)
                  .replace('body_contains: "[EMAIL]"', 'body_contains: "[PHONE]"'))  # fmt: skip
    result = run("test", "--policies", str(policies), str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"FAIL {path}:3: hello passes" in lines
    assert "     decision: expected 'block', got 'allow'" in lines
    assert "     rule: expected 'x', got ''" in lines
    assert f"FAIL {path}:11: mail is masked" in lines
    assert any("body_contains: expected '[PHONE]'" in line for line in lines)
    assert lines[-1] == "2 passed, 2 failed"


def test_every_test_file_under_a_directory_runs(policies: Path, tmp_path: Path) -> None:
    _tests(tmp_path, CASES, "a_test.yaml")
    _tests(tmp_path, CASES, "b_test.yml")
    _tests(tmp_path, "not: a test file", "helper.yaml")  # not named *_test: not read
    result = run("test", "--policies", str(policies), str(tmp_path / "tests"))
    assert result.stdout.splitlines()[-1] == "8 passed, 0 failed"


def test_a_broken_test_file_is_an_error(policies: Path, tmp_path: Path) -> None:
    path = _tests(tmp_path, "tests:\n  - name: no expectation\n    request: {}\n")
    result = run("test", "--policies", str(policies), str(path))
    assert result.exit_code == 1
    assert f"ERROR {path}:2: test 'no expectation': 'expect' needs a 'decision'" in result.stdout
    assert result.stdout.splitlines()[-1] == "0 passed, 0 failed, 1 error"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- 1\n", "a test file holds 'tests:', a list of cases"),
        ("tests: [{name: x, request: {}, expect: {decision: maybe}}]\n", "decision must be"),
        ("tests: [{name: x, request: {}, expect: {decision: allow, colour: red}}]\n",
         "unknown expectation 'colour'"),
        ("tests: [{name: x, request: {}, expect: {decision: allow}, extra: 1}]\n",
         "unknown field 'extra'"),
        ("tests: [{name: x, request: 3, expect: {decision: allow}}]\n", "'request' must be"),
        ("tests: [{name: x, path: v1, request: {}, expect: {decision: allow}}]\n",
         "'path' must be a path"),
        ("tests: [{request: {}, expect: {decision: allow}}]\n", "needs a 'name'"),
        ("tests: [\n", "not valid YAML/JSON"),
    ],
)  # fmt: skip
def test_malformed_test_files(text: str, message: str) -> None:
    with pytest.raises(PolicyTestError, match=message.replace("(", r"\(").replace("[", r"\[")):
        read_cases("t_test.yaml", text)


def test_invalid_policies_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy_name: x\nrules: [{type: nope}]\n")
    _tests(tmp_path, CASES)
    result = run("test", "--policies", str(bad), str(tmp_path / "tests"))
    assert result.exit_code == 1
    assert "bad.yaml" in result.stderr


def test_no_test_files_is_an_error(policies: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("test", "--policies", str(policies), str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert "no test files" in result.stderr


def test_policy_loader_skips_test_files_beside_policies() -> None:
    files = policy_files([EXAMPLES])
    assert files and not any(f.name.endswith("_test.yaml") for f in files)


def test_the_example_policies_pass_their_tests() -> None:
    result = run("test", "--policies", str(EXAMPLES), str(EXAMPLES))
    assert result.exit_code == 0, result.output
    passed = int(result.stdout.splitlines()[-1].split()[0])
    assert passed >= 8
