"""The ``max_prompt_tokens`` rule kind: its fields, its schema, and its check on every API format.

The estimate it compares is ``llm.tokens.estimate_request_tokens``, the one limits and budgets
charge; the cases pick limits just below and at that estimate, so they test the comparison,
not the heuristic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from policy_extproc.cli import main
from policy_extproc.errors import PolicyError
from policy_extproc.llm.request import parse_request
from policy_extproc.llm.tokens import estimate_request_tokens
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.policy.decision import Decision
from policy_extproc.policy.evaluator import check_request, decide
from policy_extproc.policy.loader import load_sources
from policy_extproc.policy.rules.max_prompt_tokens import MaxPromptTokensRule
from policy_extproc.policy.schema import policy_schema
from policy_extproc.sources.catalog import load_catalog

SECRET = "the launch code is 0000"
TEXT = f"Please summarise this: {SECRET}. " * 20

# (path, body) per API format: the same prompt text in each one's shape.
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai_chat": (
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": TEXT}]},
    ),
    "anthropic": (
        "/v1/messages",
        {
            "model": "claude-3-haiku",
            "max_tokens": 100,
            "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": TEXT}]}],
        },
    ),
    "openai_responses": ("/v1/responses", {"model": "gpt-4o-mini", "input": TEXT}),
    "openai_completions": ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": TEXT}),
}


def policy(rule: str) -> str:
    return f"policy_name: p\norg: acme\nrules:\n  - {{type: max_prompt_tokens, {rule}}}\n"


def decision_for(policy_text: str, path: str, body: dict[str, Any]) -> tuple[Decision, int]:
    """The pure decision on one request, and the request's estimated prompt tokens."""
    snapshot = Snapshot(load_sources([("p.yaml", policy_text)]))
    request = parse_request(path, json.dumps(body).encode())
    ctx = build_context({"x-org-id": "acme", "x-user-id": "u"}, request, catalog=load_catalog())
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    return decide(es, ctx, check_request(es, ctx)), estimate_request_tokens(request)


def estimate(name: str) -> int:
    path, body = FORMATS[name]
    return estimate_request_tokens(parse_request(path, json.dumps(body).encode()))


# -- the fields -----------------------------------------------------------------------------


def test_a_rule_loads_with_its_defaults() -> None:
    (p,) = load_sources([("p.yaml", policy("max_tokens: 8000"))])
    (rule,) = p.rules
    assert isinstance(rule, MaxPromptTokensRule)
    assert (rule.id, rule.max_tokens, rule.action, rule.models) == (
        "max_prompt_tokens", 8000, "block", None
    )  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("action: block", "'max_tokens' is required"),
        ("max_tokens: 0", "'max_tokens' must be at least 1"),
        ("max_tokens: 10.5", "'max_tokens' must be a whole number, not 10.5"),
        ("max_tokens: many", "'max_tokens' must be a whole number, not a string"),
        ("max_tokens: 10, action: redact", "'action' must be one of block, throttle, not 'redact'"),
        ("max_tokens: 10, models: []", "'models' must not be empty"),
        ("max_tokens: 10, tokens: 5", "'tokens': unknown field (known: id, final, alert, "
                                      "max_tokens, action, models)"),
    ],
)  # fmt: skip
def test_the_loader_refuses(rule: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_sources([("p.yaml", policy(rule))])
    assert [str(p) for p in info.value.problems] == [
        f"p.yaml:4: policy 'p' rule 1 (max_prompt_tokens): {message}"
    ]


def test_the_schema_has_the_rule_and_its_required_field() -> None:
    validator = jsonschema.Draft202012Validator(policy_schema())
    good = {"policy_name": "p", "rules": [{"type": "max_prompt_tokens", "max_tokens": 10}]}
    assert list(validator.iter_errors(good)) == []
    for bad in ({"type": "max_prompt_tokens"}, {"type": "max_prompt_tokens", "max_tokens": 0},
                {"type": "max_prompt_tokens", "max_tokens": 5, "action": "log"}):  # fmt: skip
        assert list(validator.iter_errors({"policy_name": "p", "rules": [bad]})), bad


# -- the check, on every API format -----------------------------------------------------------


@pytest.mark.parametrize("api", FORMATS)
def test_a_prompt_over_the_limit_is_blocked(api: str) -> None:
    path, body = FORMATS[api]
    limit = estimate(api) - 1
    d, tokens = decision_for(policy(f"id: size, max_tokens: {limit}"), path, body)
    assert (d.action, d.rule, d.code, d.http_status) == ("block", "size", "blocked", 403)
    assert d.reason == (
        f"prompt of ~{tokens} tokens (estimated) is over the limit of {limit} of rule 'size'"
    )
    assert SECRET not in d.reason and "summarise" not in d.reason


@pytest.mark.parametrize("api", FORMATS)
def test_a_prompt_at_the_limit_is_allowed(api: str) -> None:
    path, body = FORMATS[api]
    d, _ = decision_for(policy(f"max_tokens: {estimate(api)}"), path, body)
    assert (d.action, d.fired) == ("allow", ())


@pytest.mark.parametrize("api", ["openai_chat", "anthropic"])
def test_throttle_answers_as_a_rate_limit(api: str) -> None:
    path, body = FORMATS[api]
    d, _ = decision_for(policy("max_tokens: 5, action: throttle"), path, body)
    assert (d.action, d.code, d.http_status) == ("throttle", "rate_limited", 429)


def test_the_framing_of_chat_messages_counts() -> None:
    """Two chat messages are framed: the estimate is more than their text alone."""
    messages = [{"role": "system", "content": "a" * 40}, {"role": "user", "content": "b" * 40}]
    body = {"model": "gpt-4o-mini", "messages": messages}
    path = "/v1/chat/completions"
    assert estimate_request_tokens(parse_request(path, json.dumps(body).encode())) > 20
    d, tokens = decision_for(policy("max_tokens: 20"), path, body)
    assert d.action == "block" and f"~{tokens} tokens" in d.reason


def test_models_scope_the_rule() -> None:
    path, body = FORMATS["openai_chat"]
    scoped = policy('max_tokens: 5, models: ["gpt-4o*"]')
    assert decision_for(scoped, path, body)[0].action == "block"  # gpt-4o-mini
    other = {**body, "model": "claude-3-haiku"}
    assert decision_for(scoped, path, other)[0].action == "allow"


def test_the_most_specific_override_wins() -> None:
    """An org-wide limit, raised for one team by a rule with the same id."""
    text = policy("id: size, max_tokens: 5") + (
        "---\npolicy_name: team\norg: acme\nteam: ml\nrules:\n"
        "  - {type: max_prompt_tokens, id: size, max_tokens: 100000}\n"
    )
    snapshot = Snapshot(load_sources([("p.yaml", text)]))
    path, body = FORMATS["openai_chat"]
    request = parse_request(path, json.dumps(body).encode())
    for team, action in (("ml", "allow"), ("support", "block")):
        headers = {"x-org-id": "acme", "x-team-id": team, "x-user-id": "u"}
        ctx = build_context(headers, request, catalog=load_catalog())
        es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
        assert decide(es, ctx, check_request(es, ctx)).action == action, team


# -- through the pipeline: a policy test, decided by the dry run ----------------------------------

POLICY_TESTS = """
tests:
  - name: a short prompt passes
    headers: {x-org-id: acme, x-user-id: u}
    request: {model: gpt-4o-mini, messages: [{role: user, content: hello}]}
    expect: {decision: allow}
  - name: a long prompt is throttled
    headers: {x-org-id: acme, x-user-id: u}
    request: {model: gpt-4o-mini, messages: [{role: user, content: "%s"}]}
    expect: {decision: throttle, policy: p, rule: size}
  - name: a long prompt to claude, too
    headers: {x-org-id: acme, x-user-id: u}
    path: /v1/messages
    request: {model: claude-3-haiku, max_tokens: 10, messages: [{role: user, content: "%s"}]}
    expect: {decision: throttle, rule: size}
"""


def test_a_policy_test_runs_it_through_the_pipeline(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(policy("id: size, max_tokens: 50, action: throttle"))
    tests = tmp_path / "size_test.yaml"
    long = "word " * 400
    tests.write_text(POLICY_TESTS % (long, long))
    result = CliRunner().invoke(main, ["test", "--policies", str(policies), str(tests)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "3 passed, 0 failed"
