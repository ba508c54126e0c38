"""Model names are canonical: case, white space and provider prefixes do not count, and an Azure
deployment is judged (and priced) as the model the catalog says it serves.

The glob cases of the policy language are in tests/data/policy/cases/model_access.yaml; here the
name functions, the catalog's deployments, and deployments through evaluation and budgets.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.enforce import limits
from policy_extproc.errors import PolicyError
from policy_extproc.llm import model_names
from policy_extproc.llm.catalog_file import parse_catalog
from policy_extproc.llm.request import LlmRequest, parse_request
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.policy.loader import load_sources
from policy_extproc.sources.catalog import load_catalog
from tests.policy_eval import evaluate

DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "policy_extproc/llm/default_catalog.yaml"


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("o1-preview", "o1-preview"),
        ("O1-PREVIEW", "o1-preview"),
        (" o1-preview", "o1-preview"),
        ("o1-preview\n", "o1-preview"),
        ("openai/o1-preview", "o1-preview"),
        ("OpenAI/ o1-preview", "o1-preview"),
        ("anthropic/claude-3-5-sonnet", "claude-3-5-sonnet"),
        ("azure/gpt-4o", "gpt-4o"),
        ("bedrock/anthropic.claude-3-haiku-v1:0", "anthropic.claude-3-haiku-v1:0"),
        ("vertex_ai/gemini-1.5-pro", "gemini-1.5-pro"),
        ("gemini/gemini-2.0-flash", "gemini-2.0-flash"),
        ("models/gemini-1.5-pro", "gemini-1.5-pro"),
        ("openai/azure/gpt-4o", "gpt-4o"),
        ("\uff2f1-mini", "o1-mini"),  # fullwidth O
        ("openrouter/o1", "openrouter/o1"),  # not a prefix we know: kept
        ("", ""),
    ],
)
def test_canonical_model_names(raw: str, want: str) -> None:
    assert model_names.canonical(raw) == want


@pytest.mark.parametrize(
    ("key", "want"),
    [
        ("o1-preview", ("o1-preview",)),
        ("openrouter/o1", ("openrouter/o1", "o1")),
        ("accounts/x/models/o1", ("accounts/x/models/o1", "o1")),
        ("anthropic.claude-3-opus-v1:0", ("anthropic.claude-3-opus-v1:0", "claude-3-opus-v1:0")),
        ("us.anthropic.claude-3-opus", ("us.anthropic.claude-3-opus", "claude-3-opus")),
    ],
)
def test_spellings_a_deny_list_sees(key: str, want: tuple[str, ...]) -> None:
    assert model_names.spellings(key) == want


# -- the catalog's deployments ---------------------------------------------------------------

CATALOG = """
providers:
  openai: {api: openai}
  azure-openai: {api: openai}
models:
  o1: {provider: openai, price: {input: 15.0, output: 60.0}}
  gpt-4o: {provider: openai, price: {input: 2.5, output: 10.0}}
  gpt-4o-mini: {provider: openai, price: {input: 0.15, output: 0.6}}
deployments:
  o1-prod: o1
  Chat-Main: GPT-4o
"""


def catalog() -> Any:
    return parse_catalog(CATALOG, "catalog.yaml")


@pytest.mark.parametrize(
    ("model", "deployment", "want"),
    [
        ("gpt-4o-mini", None, "gpt-4o-mini"),
        (" GPT-4o-mini", None, "gpt-4o-mini"),
        ("gpt-4o-mini", "o1-prod", "o1"),  # Azure serves the deployment, not the body's model
        ("", "O1-PROD", "o1"),  # deployment names are case-insensitive too
        ("", "chat-main", "gpt-4o"),
        ("gpt-4o-mini", "unknown-deployment", "unknown-deployment"),  # judged by its own name
    ],
)
def test_judged_model(model: str, deployment: str | None, want: str) -> None:
    assert catalog().judged_model(model, deployment) == want


def test_the_default_catalog_has_a_deployments_mapping() -> None:
    text = DEFAULT_CATALOG.read_text(encoding="utf-8")
    assert "\ndeployments:" in text
    assert load_catalog().judged_model("x", "gpt-4o") == "gpt-4o"  # named after its model


@pytest.mark.parametrize(
    ("deployments", "problem"),
    [
        ("deployments: [o1]", "field 'deployments' must map deployment names to models"),
        (
            "deployments: {o1-prod: 3}",
            "deployment 'o1-prod': the model it serves must be a model name",
        ),
        (
            "deployments: {o1-prod: ' '}",
            "deployment 'o1-prod': the model it serves must be a model name",
        ),
        (
            "deployments: {o1-prod: o1, O1-Prod: o1}",
            "deployment 'O1-Prod' is also spelled 'o1-prod'",
        ),
    ],
)
def test_bad_deployments_are_reported(deployments: str, problem: str) -> None:
    text = CATALOG.split("deployments:")[0] + deployments + "\n"
    with pytest.raises(PolicyError) as info:
        parse_catalog(text, "catalog.yaml")
    assert [p.message for p in info.value.problems] == [problem]
    assert info.value.problems[0].line == text.count("\n")


# -- deployments through evaluation and budgets ---------------------------------------------

POLICIES = """
- policy_name: models
  org: acme
  rules:
    - {type: model_access, id: models, models: ["gpt-4o*"], deny_models: ["o1*"]}
- policy_name: approvals
  org: acme
  rules:
    - {type: approval, id: big, models: ["o1*"]}
"""
AZURE = "/openai/deployments/{}/chat/completions"


def azure_request(deployment: str, body_model: str = "gpt-4o-mini") -> LlmRequest:
    body = {"model": body_model, "messages": [{"role": "user", "content": "hi"}]}
    request = parse_request(AZURE.format(deployment), json.dumps(body).encode())
    # The parser fills ``deployment`` from the path; set here so this test stands on its own.
    return replace(request, deployment=deployment)


def judged(request: LlmRequest) -> Any:
    snapshot = Snapshot(load_sources([("p.yaml", POLICIES)]))
    ctx = build_context({"x-org-id": "acme"}, request, catalog=catalog())
    return ctx, evaluate(snapshot, ctx)


@pytest.mark.parametrize(
    ("deployment", "body_model", "action", "reason"),
    [
        # A deployment of o1 is o1, whatever the body says: the deny list holds.
        ("o1-prod", "gpt-4o-mini", "block", "model 'o1' (deployment 'o1-prod') is denied"),
        ("O1-Prod", "gpt-4o", "block", "model 'o1' (deployment 'O1-Prod') is denied"),
        # A deployment of gpt-4o passes the allow list, even if the body names another model.
        ("Chat-Main", "o1", "allow", ""),
        # An unknown deployment is judged by its own name, and fails the allow list.
        ("team-deployment", "gpt-4o", "block", "model 'team-deployment' (deployment"),
        # ... and a deny list sees it too.
        ("o1-experimental", "gpt-4o", "block", "model 'o1-experimental' (deployment"),
    ],
)
def test_a_deployment_is_judged_as_its_model(
    deployment: str, body_model: str, action: str, reason: str
) -> None:
    _, decision = judged(azure_request(deployment, body_model))
    assert decision.action == action
    assert reason in decision.reason


def test_approvals_by_model_see_the_deployments_model() -> None:
    from policy_extproc.enforce.approvals import triggered

    request = azure_request("o1-prod", "gpt-4o-mini")
    snapshot = Snapshot(load_sources([("p.yaml", POLICIES)]))
    ctx = build_context({"x-org-id": "acme"}, request, catalog=catalog())
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    assert [t.reason for t in triggered(es, ctx, 0.0)] == ["model 'o1' needs approval"]
    spelled = build_context(
        {"x-org-id": "acme"}, replace(request, deployment=None, model="O1"), catalog=load_catalog()
    )
    assert [t.reason for t in triggered(es, spelled, 0.0)] == ["model 'o1' needs approval"]


def test_budgets_price_a_deployment_as_its_model() -> None:
    """The estimate reserved and the cost charged use the resolved model (o1's price, not the
    body's gpt-4o-mini): a deployment of an expensive model cannot be charged as a cheap one."""
    cat = catalog()
    settings = limits.Settings()
    via_deployment = limits.estimate(azure_request("o1-prod", "gpt-4o-mini"), cat, settings)
    direct = limits.estimate(
        replace(azure_request("o1-prod"), deployment=None, model="o1"), cat, settings
    )
    assert via_deployment.price_known and via_deployment.usd == pytest.approx(direct.usd)
    cheap = limits.estimate(
        replace(azure_request("o1-prod"), deployment=None, model="gpt-4o-mini"), cat, settings
    )
    assert via_deployment.usd > cheap.usd


# -- a property: no spelling of a denied model passes ------------------------------------------

_DENY = """
- policy_name: deny
  org: acme
  rules:
    - {type: model_access, id: models, models: ["gpt-4o*"], deny_models: ["o1*", "claude-3-opus*"]}
"""
_DENIED = ["o1", "o1-preview", "o1-mini-2024-09-12", "claude-3-opus-20240229"]
_space = st.sampled_from(["", " ", "\t", "\n", "\u00a0", "\u3000", "  "])


@st.composite
def _spelling(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(_DENIED))
    name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    prefixes = draw(st.lists(st.sampled_from(model_names.PROVIDER_PREFIXES), max_size=2))
    prefix = "".join(p.upper() if draw(st.booleans()) else p for p in prefixes)
    return draw(_space) + prefix + name + draw(_space)


@settings(max_examples=300, deadline=None)
@given(model=_spelling())
def test_no_spelling_of_a_denied_model_passes(model: str) -> None:
    snapshot = Snapshot(load_sources([("p.yaml", _DENY)]))
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    request = parse_request("/v1/chat/completions", json.dumps(body).encode())
    ctx = build_context({"x-org-id": "acme"}, request, catalog=load_catalog())
    decision = evaluate(snapshot, ctx)
    assert decision.action == "block" and "is denied" in decision.reason, model
