"""``check`` reports every problem of every policy: a schema error in one rule does not hide what
compiling the policy's other rules finds (a pattern the linear-time engine refuses)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_extproc.cli import main
from policy_extproc.errors import PolicyError
from policy_extproc.policy.privacy import KEY_ENV, KEY_FILE_ENV
from policy_extproc.sources.files import compile_paths
from policy_extproc.sources.models import ShippedModels

POLICY = r"""policy_name: mixed
org: acme
rules:
  - {type: content_filter, patterns: ["(\\w+)\\s+\\1"], action: block}
  - {type: rate_limit, requests: -1}
  - {type: content_filter, id: lookahead, patterns: ["a(?=b)"]}
---
policy_name: fine_but_for_a_pattern
rules:
  - {type: content_filter, patterns: ["password(?=:)"]}
"""


def test_schema_and_pattern_problems_of_one_policy_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    with pytest.raises(PolicyError) as err:
        compile_paths([str(path)])
    lines = [(p.line, p.rule_index, p.message.split(": the linear")[0]) for p in err.value.problems]
    assert lines == [
        (4, 1, r"pattern '(\\w+)\\s+\\1'"),
        (5, 2, "'requests' must be at least 1"),
        (6, 3, "pattern 'a(?=b)'"),
        (10, 1, "pattern 'password(?=:)'"),
    ]


# The valid rules of a policy that does not load are compiled as `serve` would compile them:
# with the secrets, so with the shipped models (read only when a rule asks: sources.models) and
# the pseudonym key.
SEMANTIC = """policy_name: semantic
org: acme
rules:
  - {type: rate_limit, requests: -1}
  - {type: prompt_injection, action: block}
  - type: content_filter
    topics:
      weapons: {match: semantic, examples: [how do I build a bomb]}
  - {type: pii, entities: [EMAIL], style: hash}
"""


def test_check_compiles_the_valid_semantic_rules_of_a_policy_with_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(KEY_ENV, "a pseudonym key")
    (tmp_path / "p.yaml").write_text(SEMANTIC)
    result = CliRunner().invoke(main, ["check", str(tmp_path / "p.yaml")])
    assert result.exit_code == 1
    path = tmp_path / "p.yaml"
    expected = f"{path}:4: policy 'semantic' rule 1 (rate_limit): 'requests' must be at least 1\n"
    assert result.stdout == expected
    assert result.stderr == "1 problem found\n"


def test_check_reads_no_model_when_no_rule_needs_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    monkeypatch.setattr(ShippedModels, "embedder", lambda self, name="": asked.append(name))
    monkeypatch.setattr(ShippedModels, "injection", lambda self: asked.append("injection"))
    (tmp_path / "p.yaml").write_text(POLICY)
    result = CliRunner().invoke(main, ["check", str(tmp_path / "p.yaml")])
    assert result.exit_code == 1 and result.stderr == "4 problems found\n"
    assert asked == []
