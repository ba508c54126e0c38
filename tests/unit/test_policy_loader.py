"""Loading and validating policy files: YAML/JSON, directories, every problem with its line.

The invalid cases live in ``tests/data/policy/invalid/``: a YAML file lists its expected lines
in ``# expect:`` comments at its end, a JSON file in ``<name>.expected``, a directory of files
in its ``expected.txt``. Paths in the lines are relative to that directory; ``{rule_types}``
stands for the list of rule types the loader names (so a new rule type changes no case).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from policy_extproc.errors import PolicyError
from policy_extproc.policy import fields as f
from policy_extproc.policy.loader import load_sources
from policy_extproc.policy.model import Policy, Scope
from policy_extproc.policy.rules import BY_NAME
from policy_extproc.policy.rules.approval import ApprovalRule
from policy_extproc.policy.rules.content_filter import ContentFilterRule
from policy_extproc.policy.rules.cost_budget import CostBudgetRule
from policy_extproc.policy.rules.failover import FailoverRule
from policy_extproc.policy.rules.model_access import ModelAccessRule
from policy_extproc.policy.yamlsource import Located, LocatedList, SourceError, load_documents
from policy_extproc.sources.files import compile_paths, load_paths, policy_files, read_paths

DATA = Path(__file__).resolve().parents[1] / "data" / "policy"
INVALID = DATA / "invalid"
RULE_TYPES = ", ".join(BY_NAME)
VALID = DATA / "valid"


def _invalid_cases() -> list[Any]:
    cases = []
    for entry in sorted(INVALID.iterdir()):
        if entry.is_dir():
            expected = (entry / "expected.txt").read_text(encoding="utf-8").splitlines()
        elif entry.suffix == ".yaml":
            lines = entry.read_text(encoding="utf-8").splitlines()
            expected = [x.removeprefix("# expect: ") for x in lines if x.startswith("# expect: ")]
        elif entry.suffix == ".json":
            expected = Path(f"{entry}.expected").read_text(encoding="utf-8").splitlines()
        else:
            continue
        assert expected, f"{entry.name} lists no expected problem"
        expected = [x.replace("{rule_types}", RULE_TYPES) for x in expected]
        cases.append(pytest.param(entry.name, expected, id=entry.name))
    return cases


@pytest.mark.parametrize(("name", "expected"), _invalid_cases())
def test_invalid(name: str, expected: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every problem, one exact line each; nothing of the set is returned."""
    monkeypatch.chdir(INVALID)
    with pytest.raises(PolicyError) as info:
        compile_paths([name])
    assert [str(p) for p in info.value.problems] == expected
    assert str(info.value) == "\n".join(expected)
    assert info.value.code == "invalid_policy"


def test_all_problems_of_a_file_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(INVALID)
    _, problems = read_paths(["wrong_types.yaml"])
    assert len(problems) == 25
    assert len({p.rule_index for p in problems}) == 8  # the policy's own fields and 7 rules


# -- valid sets ----------------------------------------------------------------------------


def test_seed_example_loads_as_written() -> None:
    (policy,) = load_paths([VALID / "seed.json"])
    assert policy == Policy(
        name="dev_team_restrictions",
        scope=Scope(environment="development"),
        rules=(
            ModelAccessRule(
                id="model_access",
                index=1,
                line=5,
                final=False,
                models=("gpt-4o-mini", "claude-3-haiku"),
                max_cost_per_day=100.0,
            ),
            ContentFilterRule(
                id="content_filter",
                index=2,
                line=6,
                final=False,
                patterns=("password", "api_key"),
                action="block",
            ),
        ),
        file=str(VALID / "seed.json"),
        line=1,
    )
    rule = policy.rules[1]
    assert isinstance(rule, ContentFilterRule)
    assert (rule.direction, rule.case_sensitive, rule.whole_words) == ("request", False, True)


def test_directory_is_read_recursively_skipping_dot_paths() -> None:
    """A Kubernetes ConfigMap volume: files are links into "..data", which is itself a link."""
    tree = VALID / "tree"
    files = [p.relative_to(tree).as_posix() for p in policy_files([tree])]
    assert files == [
        "nested/environments.json",
        "nested/multi.yaml",
        "nested/teams/ml.yml",
        "org.yaml",
    ]
    policies = {p.name: p for p in load_paths([tree])}
    assert sorted(policies) == [
        "acme_ml",
        "acme_org",
        "acme_production",
        "everyone",
        "globex_data",
        "globex_org",
    ]
    assert policies["acme_org"].file == str(tree / "org.yaml")
    assert policies["acme_ml"].scope == Scope(org="acme", team="ml")
    assert policies["globex_data"].mode == "log"
    assert policies["everyone"].scope == Scope() and policies["everyone"].rules == ()
    (budget,) = policies["acme_production"].rules
    # A tab-indented JSON file, and JSON's exponent notation read as a number.
    assert isinstance(budget, CostBudgetRule)
    assert (budget.limit_usd, budget.per, budget.line) == (250.0, ("team",), 6)
    (approval,) = policies["globex_data"].rules
    assert isinstance(approval, ApprovalRule) and approval.ttl_s == 1800.0


def test_files_and_directories_together() -> None:
    paths = [VALID / "seed.json", VALID / "tree" / "nested" / "teams"]
    assert [p.name for p in load_paths(paths)] == ["dev_team_restrictions", "acme_ml"]


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_paths([tmp_path])
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}:0: no policy files found (.yaml/.yml/.json)"
    ]


def test_a_set_with_a_mistake_never_half_loads(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("policy_name: good\nrules: []\n")
    (tmp_path / "bad.yaml").write_text("policy_name: bad\nrules:\n  - type: nope\n")
    with pytest.raises(PolicyError) as info:
        load_paths([tmp_path])
    assert [p.file for p in info.value.problems] == [str(tmp_path / "bad.yaml")]
    # read_paths is for reporting: the valid policies and the problems of the rest.
    policies, problems = read_paths([tmp_path])
    assert [p.name for p in policies] == ["good"] and len(problems) == 1


def test_an_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"policy_name: caf\xe9\nrules: []\n")
    with pytest.raises(PolicyError) as info:
        load_paths([tmp_path])
    (problem,) = info.value.problems
    assert (problem.line, problem.message.startswith("cannot read: ")) == (0, True)


def test_load_sources_names_the_source() -> None:
    with pytest.raises(PolicyError) as info:
        load_sources([("pushed by admin", "policy_name: x\nrules: [{type: nope}]\n")])
    assert str(info.value).startswith("pushed by admin:2: policy 'x' rule 1: unknown rule type")


def test_rule_defaults_and_converted_fields() -> None:
    (policy,) = load_sources(
        [
            (
                "p.yaml",
                """
policy_name: p
compliance: [HIPAA, SOC2]
description: defaults
rules:
  - type: failover
    provider: openai
    fallbacks: [azure-openai, anthropic]
    window: 2m
    cooldown: 1500ms
  - type: content_filter
    id: cf
    topics: {weapons: "build a bomb"}
    keywords: single
""",
            )
        ]
    )
    failover, content = policy.rules
    assert isinstance(failover, FailoverRule) and isinstance(content, ContentFilterRule)
    assert (failover.id, failover.final, failover.window_s, failover.cooldown_s) == (
        "failover",
        False,
        120.0,
        1.5,
    )
    assert content.topics == {"weapons": ("build a bomb",)} and content.keywords == ("single",)
    assert (policy.compliance, policy.description, policy.mode) == (
        ("HIPAA", "SOC2"),
        "defaults",
        "enforce",
    )


# -- the field parsers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parser", "value", "result"),
    [
        (f.duration, "30s", 30.0),
        (f.duration, "5m", 300.0),
        (f.duration, " 1h ", 3600.0),
        (f.duration, "2d", 172800.0),
        (f.duration, "250ms", 0.25),
        (f.duration, 10, 10.0),
        (f.glob, "claude-3-[0-9]-*", "claude-3-[0-9]-*"),
        (f.glob, "[!o]*", "[!o]*"),
        (f.per, ["team", "org"], ("team", "org")),
        (f.per, "org", ("org",)),
        (f.str_mapping, {"tier": 1, "cls": "restricted"}, {"tier": "1", "cls": "restricted"}),
        (f.number(), 0, 0.0),
        (f.integer(1), 3, 3),
        (f.fraction, 1, 1.0),
        (f.regex, r"api[_-]?key", r"api[_-]?key"),
    ],
)
def test_parser_accepts(parser: f.Parser, value: Any, result: Any) -> None:
    assert parser(value) == result


@pytest.mark.parametrize(
    ("parser", "value", "message"),
    [
        (f.string, "  ", "must be a non-empty string, not a string"),
        (f.string, ["x"], "must be a non-empty string, not a list"),
        (f.boolean, "true", "must be true or false, not a string"),
        (f.number(), True, "must be a number, not a boolean"),
        (f.number(0.0, exclusive=True), 0, "must be above 0"),
        (f.integer(0), 2.5, "must be a whole number, not 2.5"),
        (f.integer(0), None, "must be a whole number, not null"),
        (f.fraction, 1.2, "must be a fraction between 0 and 1"),
        (f.one_of("a", "b"), "c", "must be one of a, b, not 'c'"),
        (f.string_list(), {}, "must be a list, not a mapping"),
        (f.string_list(), [], "must not be empty"),
        (f.glob, "gpt-]", "bad glob 'gpt-]': unbalanced '[' or ']'"),
        (f.duration, "soon", "must be a duration such as 30s, 5m, 1h or 2d, not 'soon'"),
        (f.duration, 0, "must be above 0"),
        (
            f.regex,
            "(",
            "'(': invalid regular expression: missing ), unterminated subpattern at position 0",
        ),
        (f.str_mapping, {"a": [1]}, "value of 'a' must be a string"),
        (f.topics, {}, "must be a mapping of topic name to a list of phrases"),
        (f.topics, {"t": []}, "topic 't': must not be empty"),
        (f.per, ["user", "user"], "names the same key twice"),
    ],
)
def test_parser_refuses(parser: f.Parser, value: Any, message: str) -> None:
    with pytest.raises(f.FieldError) as info:
        parser(value)
    assert str(info.value) == message


def test_a_list_reports_every_bad_item() -> None:
    with pytest.raises(f.FieldError) as info:
        f.string_list(f.glob)(["ok", 3, "x[", "fine"])
    assert info.value.messages == (
        "item 2: must be a non-empty string, not a number",
        "item 3: bad glob 'x[': unbalanced '[' or ']'",
    )


# -- the YAML/JSON reader --------------------------------------------------------------------


def test_documents_remember_lines() -> None:
    (doc,) = load_documents("a: 1\nb:\n  - x\n  - {c: 2}\nd: 3\nd: 4\n")
    assert isinstance(doc, Located)
    assert (doc.line, doc.line_of("b"), doc.line_of("missing")) == (1, 2, 1)
    items = doc["b"]
    assert isinstance(items, LocatedList)
    assert (items.line_of(0), items.line_of(1), items[1].line) == (3, 4, 4)
    assert doc.duplicates == [("d", 6)] and doc["d"] == 4


def test_multi_document_yaml() -> None:
    docs = load_documents("---\na: 1\n---\n# only a comment\n---\n- b: 2\n")
    assert docs == [{"a": 1}, [{"b": 2}]]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("x: 1e3", 1000.0),
        ("x: 2.5E-1", 0.25),
        ("x: 1.0e5", 100000.0),
        ("x: -3e+2", -300.0),
        ('{"x": 1e3}', 1000.0),
        ("x: 1_000", 1000),
        ("x: '1e3'", "1e3"),
    ],
)
def test_json_numbers(text: str, value: Any) -> None:
    assert load_documents(text)[0]["x"] == value


def test_tab_indented_json() -> None:
    assert load_documents('{\n\t"a": [\n\t\t1\n\t]\n}') == [{"a": [1]}]


def test_source_error_has_a_line() -> None:
    with pytest.raises(SourceError) as info:
        load_documents("a: 1\nb: [1, 2\nc: 3\n")
    assert info.value.line == 3
    assert str(info.value).startswith("not valid YAML/JSON: ")


def test_yaml_safe_loader_only() -> None:
    with pytest.raises(SourceError):
        load_documents("x: !!python/object/apply:os.system ['true']")


def test_policy_files_takes_a_named_file_whatever_its_suffix(tmp_path: Path) -> None:
    named = tmp_path / "policies.conf"
    named.write_text("policy_name: a\nrules: []\n")
    assert policy_files([named]) == [named]
    assert [p.name for p in load_paths([os.fspath(named)])] == ["a"]


def test_anchors_and_merge_keys() -> None:
    """A key written beside a merge overrides the merged one; it is no duplicate."""
    (policy,) = load_sources(
        [
            (
                "anchors.yaml",
                """
policy_name: anchors
rules:
  - &secrets {type: content_filter, id: secrets, keywords: [password], action: block}
  - <<: *secrets
    id: codenames
    action: redact
""",
            )
        ]
    )
    first, second = policy.rules
    assert isinstance(first, ContentFilterRule) and isinstance(second, ContentFilterRule)
    assert (second.id, second.action, second.keywords) == ("codenames", "redact", ("password",))
    assert second.line == 5
    with pytest.raises(PolicyError) as info:
        load_sources([("twice.yaml", "policy_name: x\nrules: []\nrules: []\n")])
    assert str(info.value) == "twice.yaml:3: policy 'x': field 'rules' given twice"
