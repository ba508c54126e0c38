"""The JSON Schema of the policy format: generated from the loader's field parsers, shipped in
the package, accepting every valid policy and refusing what ``check`` refuses for simple cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from policy_extproc.cli import main
from policy_extproc.errors import PolicyError
from policy_extproc.policy.loader import load_sources
from policy_extproc.policy.schema import policy_schema
from policy_extproc.policy.yamlsource import load_documents
from policy_extproc.sources.files import policy_files

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policy_extproc" / "policy" / "policy.schema.json"
VALID = [*policy_files([ROOT / "examples" / "policies"]),
         *policy_files([ROOT / "tests" / "data" / "policy" / "valid"])]  # fmt: skip
VALIDATOR = jsonschema.Draft202012Validator(policy_schema())


def documents(path: Path) -> list[Any]:
    # The loader's own reader: JSON with tabs, YAML merge keys, as policy files are read.
    return load_documents(path.read_text())


def test_the_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(policy_schema())


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert json.loads(SHIPPED.read_text()) == policy_schema(), (
        "regenerate: policy-extproc schema > policy_extproc/policy/policy.schema.json"
    )


def test_the_command_prints_it() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == policy_schema()


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_every_valid_policy_file_validates(path: Path) -> None:
    for doc in documents(path):
        errors = [e.message for e in VALIDATOR.iter_errors(doc)]
        assert not errors, f"{path}: {errors}"


BASE = {"policy_name": "p", "org": "acme"}
REFUSED = {
    "unknown rule type": {"rules": [{"type": "nope"}]},
    "rule without type": {"rules": [{"keywords": ["x"]}]},
    "unknown rule field": {"rules": [{"type": "content_filter", "keywords": ["x"],
                                      "severity": "high"}]},
    "required field missing": {"rules": [{"type": "cost_budget"}]},
    "bad action": {"rules": [{"type": "content_filter", "keywords": ["x"], "action": "mask"}]},
    "number too small": {"rules": [{"type": "rate_limit", "requests": 0}]},
    "not a whole number": {"rules": [{"type": "rate_limit", "requests": 1.5}]},
    "bad window": {"rules": [{"type": "rate_limit", "requests": 5, "window": "week"}]},
    "bad duration": {"rules": [{"type": "approval", "models": ["o1*"], "ttl": "soon"}]},
    "unknown PII type": {"rules": [{"type": "pii", "entities": ["SHOE_SIZE"]}]},
    "bad framework": {"rules": [{"type": "compliance", "framework": "ISO"}]},
    "fraction above 1": {"rules": [{"type": "pii", "min_score": 1.5}]},
    "final not a boolean": {"rules": [{"type": "pii", "final": "yes"}]},
    "unknown policy field": {"owner": "me"},
    "bad mode": {"mode": "audit"},
    "unknown scope key": {"scope": {"region": "eu"}},
    "empty policy name": {"policy_name": ""},
}  # fmt: skip


@pytest.mark.parametrize("change", REFUSED.values(), ids=REFUSED.keys())
def test_what_check_refuses_the_schema_refuses(change: dict[str, Any]) -> None:
    doc = {**BASE, **change}
    with pytest.raises(PolicyError):
        load_sources([("p.yaml", json.dumps(doc))])
    assert list(VALIDATOR.iter_errors(doc)), f"the schema accepts {doc}"


def test_a_list_of_policies_validates() -> None:
    doc = [BASE, {"policy_name": "q", "rules": [{"type": "pii"}]}]
    assert not list(VALIDATOR.iter_errors(doc))


def test_the_schema_knows_every_policy_field() -> None:
    from policy_extproc.policy.loader import _POLICY_FIELDS

    assert set(policy_schema()["$defs"]["policy"]["properties"]) == set(_POLICY_FIELDS)
