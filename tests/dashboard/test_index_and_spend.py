"""The decision index (capped, searchable) and the spend figures, on records built here."""

from __future__ import annotations

from datetime import UTC, datetime

from policy_extproc.audit.record import AuditRecord, FiredRule, Usage, utc_timestamp
from policy_extproc.dashboard.decisions import DecisionIndex, Query, entry_of
from policy_extproc.dashboard.policies import PolicyRow, PolicySet, diff
from policy_extproc.dashboard.spend import compute

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC).timestamp()
POLICIES = """
- policy_name: base
  org: acme
  rules:
    - {type: cost_budget, id: team-month, per: team, limit_usd: 10, period: month}
    - {type: rate_limit, id: per-user, per: user, requests: 5, window: minute}
    - {type: content_filter, id: words, keywords: [x], final: true}
- policy_name: ml
  scope: {org: acme, team: ml}
  rules:
    - {type: rate_limit, id: per-user, per: user, requests: 2, window: minute}
"""


def record(n: int, *, at: float, **kw: object) -> AuditRecord:
    fields: dict[str, object] = {
        "decision": "allow",
        "policy": None,
        "rule": None,
        "reason": "ok",
        "user": "alice",
        "environment": "prod",
        "timestamp": utc_timestamp(int(at * 1e9)),
        "request_id": f"r{n}",
        "org": "acme",
        "team": "ml",
    }
    fields.update(kw)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def index_of(records: list[AuditRecord], maxlen: int = 1000) -> DecisionIndex:
    index = DecisionIndex(maxlen)
    for n, r in enumerate(records):
        e = entry_of(f"{n}-0", r.to_dict())
        assert e is not None
        index.add(e)
    return index


def policy_set() -> PolicySet:
    rows = [
        PolicyRow("base", "file", "p.yaml", 2, "acme", None, None, "enforce", 3, ""),
        PolicyRow("ml", "file", "p.yaml", 7, "acme", "ml", None, "enforce", 1, ""),
    ]
    return PolicySet("v1", {"p.yaml": POLICIES}, rows)


def test_the_index_is_capped_and_forgets_evicted_request_ids() -> None:
    index = index_of([record(n, at=NOW - 100 + n) for n in range(10)], maxlen=4)
    assert len(index) == 4
    assert index.search(Query(request_id="r2")) == []
    assert [e.request_id for e in index.search(Query(request_id="r9"))] == ["r9"]
    assert index.get("0-0") is None and index.get("9-0") is not None


def test_search_filters_combine_newest_first() -> None:
    blocked = {"decision": "block", "policy": "base", "rule": "words",
               "fired": (FiredRule("base", "words", "block"),)}  # fmt: skip
    records = [
        record(0, at=NOW - 50, **blocked),
        record(1, at=NOW - 40, user="bob", **blocked),
        record(2, at=NOW - 30),
        record(3, at=NOW - 20, team="ops", **blocked),
    ]
    index = index_of(records)

    def ids(**q: object) -> list[str]:
        return [e.request_id for e in index.search(Query(**q))]  # type: ignore[arg-type]

    assert ids() == ["r3", "r2", "r1", "r0"]
    assert ids(decision="block") == ["r3", "r1", "r0"]
    assert ids(decision="block", team="ml") == ["r1", "r0"]
    assert ids(decision="block", user="alice", team="ml") == ["r0"]
    assert ids(rule="words") == ["r3", "r1", "r0"]
    assert ids(rule="base/words", org="acme") == ["r3", "r1", "r0"]
    assert ids(policy="base", user="bob") == ["r1"]
    assert ids(since=NOW - 45, until=NOW - 25) == ["r2", "r1"]
    assert ids(user="nobody") == []


def test_effective_rules_say_where_each_comes_from() -> None:
    ps = policy_set()
    rows = {r.rule: r for r in ps.effective("acme", "ml", "prod")}
    assert (rows["per-user"].policy, rows["per-user"].origin) == ("ml", "overriding")
    assert rows["per-user"].overrides == ("base",)
    assert (rows["words"].origin, rows["words"].locked) == ("inherited", True)
    assert ps.applying("acme", "ml", "prod") == ["base", "ml"]
    assert {r.origin for r in ps.effective("acme", "ops", "")} == {"own"}


def test_spend_against_budgets_and_limits_in_force() -> None:
    answered = {"phase": "response", "usage": Usage(100, 50)}
    records = [
        record(0, at=NOW - 86400 * 10, cost_usd=1.0, **answered),  # this month, not today
        record(1, at=NOW - 3600, cost_usd=2.0, **answered),
        record(2, at=NOW - 30),
        record(3, at=NOW - 20),
        record(4, at=NOW - 10, team="ops"),
        record(5, at=NOW - 5, decision="throttle", policy="ml", rule="per-user"),
        record(6, at=NOW - 86400 * 40, cost_usd=50.0, **answered),  # last month
    ]
    f = compute(index_of(sorted(records, key=lambda r: r.timestamp)), policy_set(), now=NOW)
    assert f.by_team == {"ml (acme)": (2.0, 3.0)}
    assert f.by_org == {"acme": (2.0, 3.0)}
    [budget] = f.budgets
    assert (budget.subject, budget.spent, budget.limit) == ("team ml (acme)", 3.0, 10.0)
    limits = {(r.policy, r.subject): (r.requests, r.requests_limit) for r in f.limits}
    # ml's override applies to team ml, the baseline to ops; a throttled request is not counted.
    assert limits[("ml", "user alice (acme)")] == (2, 2)
    assert limits[("base", "user alice (acme)")] == (1, 5)


def test_diff_marks_lines() -> None:
    kinds = [k for k, _ in diff("a: 1\nb: 2\n", "a: 1\nb: 3\n", "p")]
    assert kinds == ["head", "head", "hunk", "same", "del", "add"]
