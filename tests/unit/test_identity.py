"""Identity is canonical and required: one spelling per value, one value per identity, an org.

Pure tests of ``policy.context`` and of the compiled scope index; the same cases through the
ext_proc server are in tests/integration/test_identity_grpc.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.errors import AmbiguousIdentity, MissingIdentity, PolicyError
from policy_extproc.llm.request import parse_request
from policy_extproc.policy.compiler import Snapshot, compile_read
from policy_extproc.policy.context import (
    DEFAULT_IDENTITY,
    IdentityConfig,
    build_context,
    require_identity,
)
from policy_extproc.policy.identity import canonical
from policy_extproc.policy.loader import load_sources, read_sources
from policy_extproc.sources.catalog import load_catalog
from tests.policy_eval import evaluate
from tests.unit.test_policy_evaluate import group_cases, run_case


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("acme", "acme"),
        ("ACME", "acme"),
        ("  Acme\t", "acme"),
        ("Development", "development"),
        ("\u00a0acme\u3000", "acme"),  # NBSP, ideographic space
        ("\uff21\uff23\uff2d\uff25", "acme"),  # fullwidth letters
        ("Stra\u00dfe", "strasse"),  # case folding, not only lower()
        ("ml-Engineer", "ml-engineer"),
        ("", ""),
    ],
)
def test_canonical_identity_values(raw: str, want: str) -> None:
    assert canonical(raw) == want


def ctx_of(headers: Mapping[str, str], claims: Mapping[str, Any] | None = None, **kw: Any) -> Any:
    return build_context({k.lower(): v for k, v in headers.items()}, None, claims=claims, **kw)


@pytest.mark.parametrize(
    ("headers", "claims", "want"),
    [
        ({"x-org-id": "ACME"}, None, {"org": "acme"}),
        ({"x-org-id": " acme "}, None, {"org": "acme"}),
        ({"x-org-id": "acme", "x-team-id": "ML"}, None, {"team": "ml"}),
        (
            {"x-org-id": "acme", "x-environment": "Development"},
            None,
            {"environment": "development"},
        ),
        (
            {"x-org-id": "acme", "x-user-roles": "ML-Engineer, Analyst ,,"},
            None,
            {"roles": frozenset({"ml-engineer", "analyst"})},
        ),
        # A user id keeps its case (JWT ``sub`` is case-sensitive, RFC 7519 s4.1.2); trimmed.
        ({"x-org-id": "acme", "x-user-id": " Alice "}, None, {"user": "Alice"}),
        # An empty item is no second value ("acme," from a sloppy client or a proxy).
        ({"x-org-id": "acme,"}, None, {"org": "acme"}),
        # Claims win over headers, and are canonical too.
        ({"x-org-id": "globex"}, {"org": "ACME"}, {"org": "acme"}),
        (
            {},
            {"org": ["Acme"], "roles": ["Admin", "ops"]},
            {"org": "acme", "roles": {"admin", "ops"}},
        ),
    ],
)
def test_context_holds_canonical_identity(
    headers: dict[str, str], claims: dict[str, Any] | None, want: dict[str, Any]
) -> None:
    ctx = ctx_of(headers, claims)
    for key, value in want.items():
        assert getattr(ctx, key) == value, key


@pytest.mark.parametrize(
    ("headers", "claims", "source"),
    [
        ({"x-org-id": "acme, x"}, None, "x-org-id"),  # folded by the client
        ({"x-org-id": "acme,acme"}, None, "x-org-id"),  # a repeated header, folded by Envoy
        ({"x-org-id": "acme", "x-team-id": "ml,support"}, None, "x-team-id"),
        ({"x-org-id": "acme", "x-environment": "dev, prod"}, None, "x-environment"),
        ({"x-org-id": "acme", "x-user-id": "alice,bob"}, None, "x-user-id"),
        ({}, {"org": ["acme", "globex"]}, "claim 'org'"),
        ({}, {"org": "acme,globex"}, "claim 'org'"),
        ({"x-org-id": "acme"}, {"sub": "u1", "team": ["ml", "support"]}, "claim 'team'"),
    ],
)
def test_two_values_for_one_identity_are_refused(
    headers: dict[str, str], claims: dict[str, Any] | None, source: str
) -> None:
    with pytest.raises(AmbiguousIdentity) as info:
        ctx_of(headers, claims)
    assert info.value.code == "ambiguous_identity" and info.value.http_status == 400
    assert info.value.message.startswith(f"{source} carries 2 values")
    # For the audit record of the refusal: the rest of the identity, the ambiguous one empty.
    lenient = ctx_of(headers, claims, strict=False)
    field = source.removeprefix("claim ").strip("'").removeprefix("x-").removesuffix("-id")
    field = {"sub": "user"}.get(field, field)
    assert getattr(lenient, field) == ""


@pytest.mark.parametrize(
    ("headers", "claims"),
    [({}, None), ({"x-org-id": ""}, None), ({"x-org-id": " , "}, None), ({}, {"sub": "u1"})],
)
def test_a_request_naming_no_organisation_is_refused(
    headers: dict[str, str], claims: dict[str, Any] | None
) -> None:
    ctx = ctx_of(headers, claims)
    with pytest.raises(MissingIdentity) as info:
        require_identity(ctx, DEFAULT_IDENTITY)
    assert info.value.code == "missing_identity" and info.value.http_status == 400
    require_identity(ctx, IdentityConfig(allow_anonymous=True))  # the operator's opt-out


def test_an_organisation_is_enough() -> None:
    require_identity(ctx_of({"x-org-id": "acme"}))
    require_identity(ctx_of({}, {"org": "acme"}))


# -- the compiled side: scope values and roles ---------------------------------------------------

POLICIES = """
- policy_name: everyone
  rules:
    - {type: content_filter, id: global-word, keywords: [forbidden], action: block}
- policy_name: acme_written_in_capitals
  scope: {org: ACME}
  rules:
    - {type: content_filter, id: acme-word, keywords: [secret], action: block}
- policy_name: acme_dev
  scope: {org: acme, environment: " Development "}
  rules:
    - {type: content_filter, id: dev-word, keywords: [prod-password], action: block}
- policy_name: acme_roles
  scope: {org: acme, team: ML}
  rules:
    - {type: model_access, id: interns, roles: [Intern], models: [gpt-4o-mini]}
"""


def snapshot() -> Snapshot:
    return Snapshot(load_sources([("p.yaml", POLICIES)]))


def decide(headers: Mapping[str, str], text: str, model: str = "gpt-4o") -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    request = parse_request("/v1/chat/completions", json.dumps(body).encode())
    return evaluate(snapshot(), build_context(dict(headers), request, catalog=load_catalog()))


@pytest.mark.parametrize(
    ("headers", "text", "model", "rule"),
    [
        ({"x-org-id": "acme"}, "a secret", "gpt-4o", "acme-word"),
        ({"x-org-id": "ACME"}, "a secret", "gpt-4o", "acme-word"),
        ({"x-org-id": "Acme "}, "a secret", "gpt-4o", "acme-word"),
        (
            {"x-org-id": "acme", "x-environment": "DEVELOPMENT"},
            "prod-password",
            "gpt-4o",
            "dev-word",
        ),
        (
            {"x-org-id": "acme", "x-environment": "development"},
            "prod-password",
            "gpt-4o",
            "dev-word",
        ),
        (
            {"x-org-id": "acme", "x-team-id": "ml", "x-user-roles": "INTERN"},
            "hi",
            "gpt-4o",
            "interns",
        ),
        (
            {"x-org-id": "acme", "x-team-id": "Ml", "x-user-roles": "intern"},
            "hi",
            "gpt-4o",
            "interns",
        ),
        # Policies of empty scope apply to everyone, identified or not.
        ({}, "forbidden", "gpt-4o", "global-word"),
        ({"x-org-id": "ACME"}, "forbidden", "gpt-4o", "global-word"),
    ],
)
def test_policies_meet_every_spelling_of_their_scope(
    headers: dict[str, str], text: str, model: str, rule: str
) -> None:
    decision = decide(headers, text, model)
    assert decision.action == "block" and decision.rule == rule


def test_an_anonymous_request_meets_only_the_policies_of_empty_scope() -> None:
    assert decide({}, "a secret").action == "allow"
    assert decide({"x-org-id": "globex"}, "a secret").action == "allow"


def test_check_sees_an_override_of_a_locked_rule_spelled_in_another_case() -> None:
    text = """
- policy_name: base
  org: acme
  rules: [{type: model_access, id: models, deny_models: ["o1*"], final: true}]
- policy_name: team
  scope: {org: ACME, team: ml}
  rules: [{type: model_access, id: models, models: ["*"]}]
"""
    with pytest.raises(PolicyError) as info:
        compile_read(*read_sources([("p.yaml", text)]))
    assert "which is final (locked)" in str(info.value)


@pytest.mark.parametrize(("group", "case"), group_cases("identity"))
def test_identity_case(group: str, case: Mapping[str, Any]) -> None:
    run_case(group, case)


# -- the operator's opt-out ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "want"),
    [
        ([], {}, False),
        (["--allow-anonymous"], {}, True),
        ([], {"POLICY_EXTPROC_ALLOW_ANONYMOUS": "1"}, True),
        ([], {"POLICY_EXTPROC_ALLOW_ANONYMOUS": "false"}, False),
    ],
)
def test_serve_takes_the_opt_out_as_a_flag_or_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], want: bool
) -> None:
    from policy_extproc.cli.serve_command import serve

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ctx = serve.make_context("serve", ["--policies", ".", *argv])
    assert ctx.params["allow_anonymous"] is want


def test_the_engine_and_identity_configs_agree() -> None:
    from policy_extproc.enforce.engine import EngineConfig

    assert EngineConfig(allow_anonymous=True).identity.allow_anonymous
    assert EngineConfig(identity=IdentityConfig(allow_anonymous=True)).allow_anonymous
    assert not EngineConfig().identity.allow_anonymous


async def test_watching_decisions_by_organisation_takes_any_spelling() -> None:
    from policy_extproc.admin.live import LiveDecisions
    from tests.unit.test_admin_live import record

    live = LiveDecisions()
    sub = live.subscribe(org=" ACME")
    assert sub.wants(record(1, org="acme"))  # records hold the canonical form
    assert not sub.wants(record(2, org="globex"))


_space = st.sampled_from(["", " ", "\t", "\u00a0", "\u3000"])


@st.composite
def _spelled(draw: st.DrawFn, value: str) -> str:
    mixed = "".join(c.upper() if draw(st.booleans()) else c for c in value)
    if draw(st.booleans()):  # fullwidth letters
        mixed = "".join(chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in mixed)
    return draw(_space) + mixed + draw(_space)


@settings(max_examples=200, deadline=None)
@given(org=_spelled("acme"), env=_spelled("development"))
def test_no_spelling_of_an_organisation_or_environment_escapes_its_policy(
    org: str, env: str
) -> None:
    decision = decide({"x-org-id": org, "x-environment": env}, "prod-password")
    assert decision.action == "block" and decision.rule == "dev-word", (org, env)
