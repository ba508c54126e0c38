"""Inheritance, overrides and locks (DESIGN.md s5), from cases/inheritance.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from policy_extproc.errors import PolicyError
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.loader import load_sources, read_sources
from policy_extproc.policy.model import Scope
from tests.unit.test_policy_evaluate import group_cases, group_snapshot, run_case


@pytest.mark.parametrize(("group", "case"), group_cases("inheritance"))
def test_case(group: str, case: Mapping[str, Any]) -> None:
    run_case(group, case)


# Least to most specific: more keys named first decides, then the deeper level named.
ORDERED_SCOPES = [
    Scope(),
    Scope(org="acme"),
    Scope(team="ml"),
    Scope(environment="production"),
    Scope(org="acme", team="ml"),
    Scope(org="acme", environment="production"),
    Scope(team="ml", environment="production"),
    Scope(org="acme", team="ml", environment="production"),
]


def test_specificity_orders_scopes() -> None:
    shuffled = ORDERED_SCOPES[::-1]
    assert sorted(shuffled, key=lambda s: s.specificity) == ORDERED_SCOPES


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        (Scope(org="acme"), Scope(org="acme", team="ml"), True),
        (Scope(org="acme"), Scope(org="globex", team="ml"), False),
        (Scope(team="ml"), Scope(environment="production"), True),
        (Scope(org="acme", team="ml"), Scope(org="acme", team="data"), False),
        (Scope(), Scope(org="x", team="y", environment="z"), True),
    ],
)
def test_overlaps(a: Scope, b: Scope, overlap: bool) -> None:
    assert a.overlaps(b) is overlap
    assert b.overlaps(a) is overlap


def test_every_scope_that_matches_applies() -> None:
    sources = [
        (f"{i}.yaml", f"policy_name: p{i}\nscope: {{{_flow(s)}}}\nrules: []\n")
        for i, s in enumerate(ORDERED_SCOPES)
    ]
    snapshot = Snapshot(load_sources(sources))
    es = snapshot.resolve("acme", "ml", "production")
    assert [cp.policy.scope for cp in es.policies] == ORDERED_SCOPES
    assert [cp.policy.name for cp in snapshot.resolve("acme", "", "").policies] == ["p0", "p1"]
    assert [cp.policy.name for cp in snapshot.resolve("", "ml", "").policies] == ["p0", "p2"]


def _flow(scope: Scope) -> str:
    return ", ".join(
        f"{k}: {v}" for k, v in zip(("org", "team", "environment"), scope.keys, strict=True) if v
    )


def test_effective_sets_are_computed_once_and_shared() -> None:
    snapshot = group_snapshot("inheritance")
    first = snapshot.resolve("acme", "support", "staging")
    assert snapshot.resolve("acme", "support", "staging") is first
    # No policy names the development environment: the same policies apply, the same set.
    assert snapshot.resolve("acme", "support", "development") is first
    assert snapshot.resolve("acme", "support", "production") is not first


def test_warm_resolves_every_named_scope() -> None:
    snapshot = Snapshot(
        load_sources([("a.yaml", "policy_name: a\norg: acme\nteam: ml\nrules: []")])
    )
    snapshot.warm()
    assert ("acme", "ml", "") in snapshot._by_key


LOCKED = """
policy_name: org
org: acme
rules:
  - {type: content_filter, id: secrets, keywords: [password], final: true}
---
policy_name: team
org: acme
team: ml
rules:
  - {type: content_filter, id: secrets, keywords: [token]}
"""


def test_an_override_of_a_final_rule_is_refused_and_never_applied() -> None:
    with pytest.raises(PolicyError) as info:
        load_sources([("locked.yaml", LOCKED)])
    assert [str(p) for p in info.value.problems] == [
        "locked.yaml:11: policy 'team' rule 1 (content_filter): overrides rule 'secrets' of "
        "policy 'org' (locked.yaml:5), which is final (locked)"
    ]
    # Each policy is valid on its own; compiled anyway, the lock still holds.
    policies, problems = read_sources([("locked.yaml", LOCKED)])
    assert len(policies) == 2 and len(problems) == 1
    es = Snapshot(policies).resolve("acme", "ml", "")
    assert [(e.policy_name, e.rule.id) for e in es.rules] == [("org", "secrets")]


def test_overrode_names_every_replaced_policy() -> None:
    es = group_snapshot("inheritance").resolve("acme", "ml", "production")
    models = next(e for e in es.rules if e.rule.id == "models")
    assert models.policy_name == "acme_production"
    assert models.overrode == ("acme_org", "acme_ml")


def test_explain_marks_what_fired() -> None:
    _, lines = run_case(
        "inheritance",
        {
            "headers": {"x-org-id": "acme", "x-team-id": "ml"},
            "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "aurora"}]},
            "expect": {"decision": "block"},
        },
    )
    assert "  * acme_ml/models (model_access): overrides 'acme_org'" in lines
    assert "  * acme_ml/codenames (content_filter): overrides 'acme_org'" in lines
    assert "    acme_ml/weapons (content_filter): own" in lines
    assert lines[lines.index("fired:") + 1 :] == [
        "  BLOCK acme_ml/models (model_access): model 'gpt-4o' is not allowed (allowed: "
        "gpt-4o-mini)",
        "  BLOCK acme_ml/codenames (content_filter): prompt matches keyword #1 of rule 'codenames'",
        "compliance: SOC2",
    ]
