"""The model catalog: the packaged default, lookups of dated variants, costs, failover names."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_extproc.errors import PolicyError
from policy_extproc.llm.catalog import (
    Catalog,
    ModelInfo,
    Price,
    Provider,
)
from policy_extproc.llm.catalog_file import parse_catalog
from policy_extproc.llm.response import Usage
from policy_extproc.sources.catalog import load_catalog


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


REQUIRED_MODELS = {
    "openai": [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o1",
        "o1-mini",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-4.5-preview",
        "gpt-5",
        "gpt-5-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
    ],
    "anthropic": [
        "claude-3-haiku",
        "claude-3-5-haiku",
        "claude-3-5-sonnet",
        "claude-3-7-sonnet",
        "claude-sonnet-4",
        "claude-opus-4",
        "claude-3-opus",
    ],
    "google": [
        "gemini-1.5-pro",
        "gemini-1.5-flash",
        "gemini-2.0-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
    ],
    "mistral": ["mistral-large", "mistral-small", "codestral", "mistral-embed"],
}


def test_default_catalog_has_the_common_models(catalog: Catalog) -> None:
    assert catalog.prices_as_of == "2025-12-01"
    for provider, names in REQUIRED_MODELS.items():
        for name in names:
            info = catalog.model(name)
            assert info is not None and info.name == name, name
            assert info.provider == provider
            assert info.price.input_per_mtok > 0
            if provider == "openai":
                assert info.aliases.get("azure-openai") == name
            if provider == "anthropic":
                assert info.aliases["bedrock"].startswith(f"anthropic.{name}-20")


def test_default_catalog_providers(catalog: Catalog) -> None:
    providers = catalog.providers()
    assert set(providers) >= {
        "openai",
        "azure-openai",
        "azure-openai-eu",
        "anthropic",
        "google",
        "mistral",
        "bedrock",
    }
    assert catalog.provider("mistral") == Provider(
        "mistral", "openai", eu_resident=True, address="api.mistral.ai", port=443
    )
    assert catalog.provider("azure-openai") == Provider("azure-openai", "openai", False)
    assert catalog.provider("azure-openai-eu") == Provider("azure-openai-eu", "openai", True)
    assert catalog.provider("anthropic") == Provider(
        "anthropic", "anthropic", False, "api.anthropic.com", 443
    )
    assert catalog.provider("nope") is None
    with pytest.raises(TypeError):
        providers["x"] = Provider("x", "openai")  # type: ignore[index]


def test_default_catalog_prices(catalog: Catalog) -> None:
    gpt4o = catalog.model("gpt-4o")
    assert gpt4o is not None
    assert gpt4o.price == Price(2.50, 10.00, 1.25)
    mistral = catalog.model("mistral-large")
    assert mistral is not None and mistral.price.cached_input_per_mtok is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("o1-2024-12-17", "o1"),
        ("o1-preview", "o1"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-4.5-preview-2025-02-27", "gpt-4.5-preview"),
        ("GPT-4o", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "claude-3-5-sonnet"),
        ("models/gemini-1.5-pro", "gemini-1.5-pro"),
        ("models/gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("mistral-large-latest", "mistral-large"),
        ("mistral-large-2411", "mistral-large"),
        ("codestral-2501", "codestral"),
        # Different models with different prices must not fall back to a shorter name.
        ("gpt-4o-mini-tts", None),
        ("gpt-4o-audio-preview", None),
        ("gemini-2.5-flash-lite", None),
        ("claude-opus-4-7", None),
        ("o1-pro-2025-03-19", "o1-pro"),
        ("gpt-5-nano", "gpt-5-nano"),
        ("chatgpt-4o-latest", None),
        ("llama-3-70b", None),
        ("", None),
        ("-", None),
        ("gpt-4o-", None),
    ],
)
def test_model_lookup(catalog: Catalog, name: str, expected: str | None) -> None:
    info = catalog.model(name)
    assert (info.name if info else None) == expected
    assert catalog.model(name) is info  # cached


def test_lookup_cache_is_bounded() -> None:
    cat = Catalog({"p": Provider("p", "openai")}, {"m": ModelInfo("m", "p", Price(1.0, 2.0))})
    for i in range(10_000):
        cat.model(f"m-{i:04d}")
    assert len(cat._cache) <= 4096
    assert cat.model("m-2024") is not None


@pytest.mark.parametrize(
    ("model", "usage", "cost"),
    [
        # gpt-4o: 2.50 in, 1.25 cached, 10.00 out per million
        ("gpt-4o", Usage(1_000_000, 0), 2.50),
        ("gpt-4o", Usage(0, 1_000_000), 10.00),
        ("gpt-4o", Usage(1000, 500, 400), (600 * 2.50 + 400 * 1.25 + 500 * 10.00) / 1e6),
        ("gpt-4o-2024-08-06", Usage(2_000_000, 1_000_000, 2_000_000), 2 * 1.25 + 10.00),
        # cached above input is clamped: never a negative uncached count
        ("gpt-4o", Usage(100, 0, 500), 100 * 1.25 / 1e6),
        # no cached rate: cached tokens cost the input rate
        ("mistral-large", Usage(1_000_000, 1_000_000, 500_000), 2.00 + 6.00),
        ("claude-3-5-sonnet-20241022", Usage(115, 42, 100), (15 * 3 + 100 * 0.3 + 42 * 15) / 1e6),
        ("text-embedding-3-small", Usage(1_000_000, 0), 0.02),
        ("unknown-model", Usage(1, 1), None),
    ],
)
def test_cost(catalog: Catalog, model: str, usage: Usage, cost: float | None) -> None:
    got = catalog.cost(model, usage)
    if cost is None:
        assert got is None
    else:
        assert got == pytest.approx(cost)


@pytest.mark.parametrize(
    ("model", "tokens_in", "tokens_out", "cost"),
    [
        ("gpt-4o-mini", 1_000_000, 1_000_000, 0.15 + 0.60),
        ("claude-opus-4", 2000, 1000, (2000 * 15 + 1000 * 75) / 1e6),
        ("o1", 0, 0, 0.0),
        ("nope", 10, 10, None),
    ],
)
def test_estimate_cost(
    catalog: Catalog, model: str, tokens_in: int, tokens_out: int, cost: float | None
) -> None:
    got = catalog.estimate_cost(model, tokens_in, tokens_out)
    assert got == (None if cost is None else pytest.approx(cost))


@pytest.mark.parametrize(
    ("model", "provider", "expected"),
    [
        ("gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o-2024-08-06", "openai", "gpt-4o-2024-08-06"),  # native: the name as sent
        ("gpt-4o", "azure-openai", "gpt-4o"),
        ("gpt-4o-2024-08-06", "azure-openai-eu", "gpt-4o"),
        ("gpt-4o", "anthropic", None),
        ("gpt-4o", "no-such-provider", None),
        ("claude-3-5-sonnet-20241022", "bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0"),
        ("claude-3-5-sonnet-20241022", "anthropic", "claude-3-5-sonnet-20241022"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic", "claude-3-5-sonnet"),
        ("claude-sonnet-4", "bedrock", "anthropic.claude-sonnet-4-20250514-v1:0"),
        ("claude-sonnet-4", "azure-openai", None),
        ("gemini-2.5-pro", "google", "gemini-2.5-pro"),
        ("unknown", "openai", None),
    ],
)
def test_model_at(catalog: Catalog, model: str, provider: str, expected: str | None) -> None:
    assert catalog.model_at(model, provider) == expected


def test_load_catalog_from_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "prices_as_of: 2026-01-15\n"
        "providers:\n"
        "  local: {api: openai, eu_resident: true}\n"
        "  backup: {api: openai}\n"
        "models:\n"
        "  my-model:\n"
        "    provider: local\n"
        "    price: {input: 1, output: 2, cached_input: 0.5}\n"
        "    aliases: {backup: my-model-v2}\n",
        encoding="utf-8",
    )
    cat = load_catalog(str(path))
    assert cat.prices_as_of == "2026-01-15"
    assert cat.model("my-model") == ModelInfo(
        "my-model", "local", Price(1.0, 2.0, 0.5), {"backup": "my-model-v2"}
    )
    assert cat.model("my-model-v2") is cat.model("my-model")  # an alias name resolves too
    assert cat.model_at("my-model", "backup") == "my-model-v2"
    assert cat.cost("my-model", Usage(10, 10, 10)) == pytest.approx(25 / 1e6)


def test_load_catalog_json(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(
        '{"providers": {"p": {"api": "anthropic"}},'
        ' "models": {"m": {"provider": "p", "price": {"input": 1, "output": 1}}}}'
    )
    assert load_catalog(str(path)).model("m") is not None


BAD_CATALOGS = [
    ("providers: [\n", ["2: invalid YAML: expected the node content, but found '<stream end>'"]),
    ("", ["0: a catalog must be a mapping with 'providers' and 'models'"]),
    ("- a\n", ["0: a catalog must be a mapping with 'providers' and 'models'"]),
    (
        "providers: {}\nmodels: {}\nprice: 1\n",
        [
            "3: unknown field 'price' "
            "(expected one of: prices_as_of, providers, models, deployments)",
            "1: field 'providers' must be a non-empty mapping of provider names to their settings",
            "2: field 'models' must be a non-empty mapping of model names to their settings",
        ],
    ),
    (
        "providers:\n"
        "  p: {api: grpc}\n"
        "  q: {api: openai, eu_resident: yes-please, region: eu}\n"
        "  r: openai\n"
        "models:\n"
        "  m1:\n"
        "    provider: nowhere\n"
        "    price: {input: -1, cached_input: cheap, extra: 1}\n"
        "    aliases: {p: x, zz: y}\n"
        "  m2: {price: {input: 1, output: 1}, aliases: [a]}\n"
        "  m3: {provider: q}\n"
        "  m4: {provider: q, price: {input: 1, output: 1}, alias: {}}\n",
        [
            "2: provider 'p': field 'api' must be 'openai' or 'anthropic'",
            "3: provider 'q': unknown field 'region' (expected one of: api, eu_resident, address)",
            "3: provider 'q': field 'eu_resident' must be true or false",
            "4: provider 'r': settings must be a mapping such as {api: openai}",
            "7: model 'm1': provider 'nowhere' is not defined in providers",
            "8: model 'm1': unknown field 'extra' (expected one of: input, output, cached_input)",
            "8: model 'm1': field 'price.input' must be a non-negative number",
            "8: model 'm1': field 'price.output' must be a non-negative number",
            "8: model 'm1': field 'price.cached_input' must be a non-negative number",
            "9: model 'm1': alias provider 'zz' is not defined in providers",
            "10: model 'm2': field 'provider' is required (a provider name)",
            "10: model 'm2': field 'aliases' must map provider names to names",
            "11: model 'm3': field 'price' is required: "
            "{input: USD per million tokens, output: ..., cached_input: ...}",
            "12: model 'm4': unknown field 'alias' (expected one of: provider, price, aliases)",
        ],
    ),
    (
        "providers:\n  p: {api: openai}\n  p: {api: anthropic}\n"
        "models:\n  m: {provider: p, price: {input: 1, output: 1}}\n",
        ["3: duplicate key 'p'"],
    ),
    (
        "prices_as_of: [1]\nproviders: {p: {api: openai}}\n"
        "models: {m: {provider: p, price: {input: true, output: 1}}}\n",
        [
            "1: field 'prices_as_of' must be a date such as 2025-12-01",
            "3: model 'm': field 'price.input' must be a non-negative number",
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "problems"), BAD_CATALOGS, ids=[str(i) for i in range(len(BAD_CATALOGS))]
)
def test_malformed_catalog(tmp_path: Path, text: str, problems: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_catalog(str(path))
    assert [str(p) for p in info.value.problems] == [f"{path}:{p}" for p in problems]
    assert info.value.code == "invalid_policy"


def test_missing_catalog_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError) as info:
        load_catalog(missing)
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == (missing, 0)
    assert problem.message.startswith("cannot read catalog: [Errno 2] No such file or directory")


def test_parse_catalog_names_the_file() -> None:
    with pytest.raises(PolicyError, match=r"^inline:0: a catalog must be a mapping"):
        parse_catalog("3", "inline")


MODEL = "models: {m: {provider: p, price: {input: 1, output: 2}}}\n"


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [("api.openai.com:443", "api.openai.com", 443), ("llm.internal", "llm.internal", None),
     ("10.0.0.7:8443", "10.0.0.7", 8443), ("[fd00::1]:443", "[fd00::1]", 443)],
)  # fmt: skip
def test_a_provider_address_is_host_and_port(
    tmp_path: Path, address: str, host: str, port: int | None
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f'providers: {{p: {{api: openai, address: "{address}"}}}}\n' + MODEL)
    provider = load_catalog(str(path)).provider("p")
    assert provider is not None and (provider.address, provider.port) == (host, port)


@pytest.mark.parametrize(
    "address", ["https://api.openai.com", "api.openai.com/v1", "h:0", "h:70000", "", "a b", "7"]
)
def test_a_provider_address_with_a_scheme_path_or_bad_port_is_refused(
    tmp_path: Path, address: str
) -> None:
    path = tmp_path / "c.yaml"
    value = address if address == "7" else f'"{address}"'
    path.write_text(f"providers: {{p: {{api: openai, address: {value}}}}}\n" + MODEL)
    with pytest.raises(PolicyError) as info:
        load_catalog(str(path))
    assert "field 'address' must be host or host:port" in str(info.value.problems[0])


def test_the_request_context_is_given_the_catalog_it_judges_by() -> None:
    """The core reads no catalog of its own: a request's context needs the one in force."""
    from policy_extproc.llm.request import parse_request
    from policy_extproc.policy.context import build_context

    body = b'{"model": "my-gpt", "messages": [{"role": "user", "content": "hi"}]}'
    request = parse_request("/openai/deployments/my-gpt/chat/completions", body)
    with pytest.raises(TypeError, match="needs the catalog"):
        build_context({"x-org-id": "acme"}, request)
    catalog = parse_catalog(
        "providers: {openai: {api: openai}}\n"
        "models: {gpt-4o: {provider: openai, price: {input: 1, output: 2}}}\n"
        "deployments: {my-gpt: gpt-4o}\n",
        "catalog.yaml",
    )
    assert build_context({"x-org-id": "acme"}, request, catalog=catalog).model == "gpt-4o"
    assert build_context({"x-org-id": "acme"}, None).model == ""  # no request, no catalog
