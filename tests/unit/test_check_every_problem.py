"""``check`` reports every problem of every policy: a schema error in one rule does not hide what
compiling the policy's other rules finds (a pattern the linear-time engine refuses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_extproc.errors import PolicyError
from policy_extproc.sources.files import compile_paths

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
