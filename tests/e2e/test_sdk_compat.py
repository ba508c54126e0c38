"""The official SDKs as clients, through a real Envoy and the real sidecar (issue 10).

- Model spelling: a deny list ``o1*`` holds against ``O1-PREVIEW``, ``openai/o1-preview`` and
  ``" o1-preview"`` (each passed before: the globs were case-sensitive and saw the raw name).
- Missing identity: a client that names no organisation gets a 400 ``missing_identity``, which
  the SDKs raise as BadRequestError; the refusal is audited. In JWT mode the token's claims
  follow the same rules (no ``org``, two of them, ``ACME``).
- Streaming: under a budget the sidecar asks OpenAI streams for usage; the SDKs' usual loops
  (``chunk.choices[0]``) work, because the usage-only chunk is taken out again, and the budget
  is charged the cost the provider reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from policy_extproc.enforce import limits
from policy_extproc.llm.request import parse_request
from policy_extproc.llm.response import Usage
from policy_extproc.mockprovider import MockProvider
from policy_extproc.policy.context import build_context
from policy_extproc.state.base import BudgetSpec
from tests.e2e.conftest import EnvoyFactory
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.e2e.test_jwt_identity import mint
from tests.envoy_harness import JWT_TEMPLATE, EnvoyProcess

pytestmark = pytest.mark.e2e

DEFAULT_CATALOG = Path(__file__).parents[2] / "policy_extproc/llm/default_catalog.yaml"
DEPLOYMENTS = "deployments: {o1-prod: o1}"
POLICY = """
- policy_name: acme_models
  org: acme
  rules:
    - {type: model_access, id: no-reasoning, deny_models: ["o1*"]}
    - {type: cost_budget, id: daily, per: user, limit_usd: 10, period: day}
"""


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    workdir = tmp_path_factory.mktemp("sdk")
    # The packaged catalog, with one Azure deployment that is not named after its model.
    catalog = workdir / "catalog.yaml"
    catalog.write_text(DEFAULT_CATALOG.read_text().replace("deployments: {}", DEPLOYMENTS))
    with running_sidecar(POLICY, workdir, admin_listen=None, catalog=str(catalog)) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(envoy_factory: EnvoyFactory, sidecar: RunningSidecar) -> EnvoyProcess:
    return envoy_factory(sidecar.port)


def openai_client(proxy: EnvoyProcess, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{proxy.url}/v1",
        api_key="sk-test",
        default_headers=headers,
        max_retries=0,
        # Straight to the local Envoy: no proxy from the environment.
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )


def identity(user: str) -> dict[str, str]:
    return {"x-org-id": "acme", "x-user-id": user}


def records_of(sidecar: RunningSidecar, user: str, phase: str = "request") -> list[Any]:
    return [r for r in list(sidecar.sink.records) if r.user == user and r.phase == phase]


def wait_for(check: Any, what: str, limit_s: float = 10.0) -> None:
    """Wait for what the sidecar does off the response path; fail, not hang."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- model spelling ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["O1-PREVIEW", "openai/o1-preview", " o1-preview"])
def test_a_deny_list_holds_against_the_spellings_of_a_model(
    proxy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider, model: str
) -> None:
    user = f"speller-{model.strip().replace('/', '-')}"
    client = openai_client(proxy, **identity(user))
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    body = info.value.response.json()
    assert body["error"]["code"] == "blocked" and body["rule"] == "no-reasoning"
    assert mock_provider.stats()["total"] == 0  # it never reached the provider
    (record,) = records_of(sidecar, user)
    assert record.decision == "block" and record.model == "o1-preview"


def test_an_allowed_model_in_capitals_still_passes(
    proxy: EnvoyProcess, mock_provider: MockProvider
) -> None:
    client = openai_client(proxy, **identity("capitals"))
    reply = client.chat.completions.create(
        model="GPT-4o-MINI", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "echo: hi"
    assert mock_provider.stats()["last_body"]["model"] == "GPT-4o-MINI"  # the bytes go on as sent


def test_an_azure_deployment_is_judged_as_its_model(
    proxy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider
) -> None:
    """The Azure client puts the deployment in the path; Azure serves o1 there, whatever the
    body's model says, so the deny list judges o1."""
    client = openai.AzureOpenAI(
        azure_endpoint=proxy.url,
        azure_deployment="o1-prod",
        api_version="2024-10-21",
        api_key="azure-test",
        default_headers=identity("azure-user"),
        max_retries=0,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.response.json()["rule"] == "no-reasoning"
    assert mock_provider.stats()["total"] == 0
    (record,) = records_of(sidecar, "azure-user")
    assert record.model == "o1"


# -- missing identity -----------------------------------------------------------------------------


def test_an_openai_client_without_an_organisation_is_refused(
    proxy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider
) -> None:
    client = openai_client(proxy, **{"x-user-id": "nobody-openai"})
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 400
    assert info.value.response.json()["error"]["code"] == "missing_identity"
    assert info.value.response.headers["x-policy-decision"] == "block"
    assert mock_provider.stats()["total"] == 0
    (record,) = records_of(sidecar, "nobody-openai")
    assert record.error_code == "missing_identity" and record.org is None


def test_an_anthropic_client_without_an_organisation_is_refused(
    proxy: EnvoyProcess, sidecar: RunningSidecar, mock_providers: dict[str, MockProvider]
) -> None:
    client = anthropic.Anthropic(
        base_url=proxy.url,
        api_key="sk-ant-test",
        default_headers={"x-user-id": "nobody-anthropic"},
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(trust_env=False),
    )
    before = mock_providers["anthropic"].stats()["total"]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="claude-3-5-haiku", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 400
    assert mock_providers["anthropic"].stats()["total"] == before
    (record,) = records_of(sidecar, "nobody-anthropic")
    assert record.error_code == "missing_identity"


# -- JWT mode: the token is the identity, by the same rules ------------------------------------


@pytest.fixture(scope="module")
def jwt_proxy(envoy_factory: EnvoyFactory, sidecar: RunningSidecar) -> EnvoyProcess:
    return envoy_factory(sidecar.port, template=JWT_TEMPLATE)


@pytest.mark.parametrize(
    ("claims", "model", "error", "code"),
    [
        # No org claim: the client's own x-org-id is stripped by Envoy, so nothing names one.
        ({"sub": "jwt-no-org"}, "gpt-4o-mini", openai.BadRequestError, "missing_identity"),
        (
            {"sub": "jwt-two-orgs", "org": ["acme", "globex"]},
            "gpt-4o-mini",
            openai.BadRequestError,
            "ambiguous_identity",
        ),
        ({"sub": "jwt-caps", "org": "ACME"}, "O1-PREVIEW", openai.PermissionDeniedError, "blocked"),
    ],
)
def test_a_tokens_identity_follows_the_same_rules(
    jwt_proxy: EnvoyProcess,
    sidecar: RunningSidecar,
    claims: dict[str, Any],
    model: str,
    error: type[openai.APIStatusError],
    code: str,
) -> None:
    client = openai.OpenAI(
        base_url=f"{jwt_proxy.url}/v1",
        api_key=mint(**claims),  # the SDK sends its API key as the bearer token
        default_headers={"x-org-id": "acme"},  # spoofed: JWT mode removes it
        max_retries=0,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )
    with pytest.raises(error) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert info.value.response.json()["error"]["code"] == code
    (record,) = records_of(sidecar, claims["sub"])
    assert record.decision == "block"
    assert record.org == ("acme" if code == "blocked" else None)


# -- streaming under a budget -------------------------------------------------------------------


def spent(sidecar: RunningSidecar, user: str) -> float:
    """What the user's daily budget has spent, read back from the state with a zero probe."""
    sc = sidecar.sidecar
    sidecar.settle()  # settlements run off the response path
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}'
    ctx = build_context(
        identity(user), parse_request("/v1/chat/completions", body), catalog=sc.catalog
    )
    es = sc.store.current.resolve(ctx.org, ctx.team, ctx.environment)
    (b,) = limits.plan(es, ctx, sc.catalog, limits.Settings(), time.time()).budgets
    probe = BudgetSpec(b.key, b.limit_usd, 0.0, b.expires_at, enforce=False)
    adm = sidecar.loop.run(sc.engine.state.admit("acme", "probe", budgets=[probe]))
    sidecar.loop.run(sc.engine.state.release("acme", "probe"))
    return adm.budgets[0].spent_before_usd


def charged(sidecar: RunningSidecar, user: str, model: str) -> float:
    """The response record's cost, checked against its usage at the catalog's price."""
    wait_for(lambda: records_of(sidecar, user, "response"), "the response's audit record")
    (record,) = records_of(sidecar, user, "response")
    assert record.usage is not None and record.usage.output_tokens > 0
    usage = Usage(record.usage.input_tokens, record.usage.output_tokens)
    cost = sidecar.sidecar.catalog.cost(model, usage)
    assert cost is not None and cost > 0 and record.cost_usd == pytest.approx(cost)
    return cost


def test_the_sdk_chat_stream_loop_works_and_the_budget_is_charged(
    proxy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider
) -> None:
    client = openai_client(proxy, **identity("streamer"))
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream a short answer"}],
        stream=True,
    )
    text = ""
    for chunk in stream:  # the loop of the SDK's README: an IndexError if a chunk had no choice
        text += chunk.choices[0].delta.content or ""
    assert text == "echo: stream a short answer"
    # The sidecar asked for usage for the budget; the provider sent it, the client never saw it.
    assert mock_provider.stats()["last_body"]["stream_options"] == {"include_usage": True}
    cost = charged(sidecar, "streamer", "gpt-4o-mini")
    assert spent(sidecar, "streamer") == pytest.approx(cost, abs=1e-6)  # stored in micro-dollars


def test_a_client_that_asks_for_usage_gets_it(proxy: EnvoyProcess, sidecar: RunningSidecar) -> None:
    client = openai_client(proxy, **identity("usage-asker"))
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    usage = chunks[-1].usage
    wait_for(lambda: records_of(sidecar, "usage-asker", "response"), "the response record")
    (record,) = records_of(sidecar, "usage-asker", "response")
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


def test_the_sdk_completions_stream_loop_works(
    proxy: EnvoyProcess, sidecar: RunningSidecar
) -> None:
    client = openai_client(proxy, **identity("legacy-streamer"))
    stream = client.completions.create(model="gpt-4o-mini", prompt="say hi", stream=True)
    text = "".join(chunk.choices[0].text for chunk in stream)
    assert text == "echo: say hi"
    charged(sidecar, "legacy-streamer", "gpt-4o-mini")


def test_the_sdk_responses_stream_needs_nothing_removed(
    proxy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider
) -> None:
    """The Responses API always reports usage in response.completed: nothing is asked, nothing
    taken out, and the budget is charged."""
    client = openai_client(proxy, **identity("responses-streamer"))
    stream = client.responses.create(model="gpt-4o-mini", input="hello there", stream=True)
    text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text == "echo: hello there"
    assert "stream_options" not in mock_provider.stats()["last_body"]
    cost = charged(sidecar, "responses-streamer", "gpt-4o-mini")
    assert spent(sidecar, "responses-streamer") == pytest.approx(
        cost, abs=1e-6
    )  # stored in micro-dollars
