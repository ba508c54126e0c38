"""The model catalog: providers, models, list prices and each model's name at other providers.

Loaded once (the packaged default_catalog.yaml or an operator's file) and consulted on every
request for cost estimates, budgets and failover renames, so lookups are cached. Its
``deployments`` map Azure OpenAI deployment names to the models they serve: a request to
``/openai/deployments/{name}/...`` is judged, limited and priced as that model
(``judged_model``).
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import yaml

from policy_extproc.errors import PolicyError, Problem
from policy_extproc.llm.model_names import BEDROCK_PREFIX as _BEDROCK_PREFIX
from policy_extproc.llm.model_names import canonical
from policy_extproc.llm.response import Usage

ProviderApi = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class Price:
    """List prices in USD per million tokens; cached input None where there is no discount."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None


@dataclass(frozen=True, slots=True)
class Provider:
    """A provider Envoy can route to, the request format it speaks, and where it keeps data."""

    name: str
    api: ProviderApi
    eu_resident: bool = False


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model, its home provider, its price, and its name at other providers (for failover)."""

    name: str
    provider: str
    price: Price
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


# After a known name, a variant may add only version-like segments: dates (-2024-08-06,
# -20241022, @20240620), snapshot numbers (-002, -2411, -0613), Bedrock's -v2:0, and
# -latest/-preview/-exp/-0. A descriptive word (-nano, -pro, -lite, -audio) is another model
# with another price, so it does not match. Single digits other than 0 are minor versions
# (claude-opus-4-5 is not claude-opus-4), so they do not match either.
_VERSION_SUFFIX = re.compile(r"(?:[-@:](?:\d{2,}|0|v\d+|latest|preview|exp))+")
_CACHE_LIMIT = 4096  # model names come from clients: bound the cache
_MISS = object()


class Catalog:
    """Models, providers and prices, with cached model lookups."""

    __slots__ = ("_by_alias", "_cache", "_deployments", "_models", "_providers", "prices_as_of")

    def __init__(
        self,
        providers: Mapping[str, Provider],
        models: Mapping[str, ModelInfo],
        prices_as_of: str | None = None,
        deployments: Mapping[str, str] | None = None,
    ) -> None:
        self._providers: Mapping[str, Provider] = MappingProxyType(dict(providers))
        # canonical deployment name -> canonical model name
        self._deployments = {
            canonical(name): canonical(model) for name, model in (deployments or {}).items()
        }
        self._models = {name.lower(): info for name, info in models.items()}
        by_alias: dict[str, ModelInfo | None] = {}
        for info in models.values():
            for alias in info.aliases.values():
                key = alias.lower()
                if key not in self._models:
                    # An alias claimed by two models says nothing: leave it out.
                    by_alias[key] = info if by_alias.get(key, info) is info else None
        self._by_alias = {k: v for k, v in by_alias.items() if v is not None}
        self._cache: dict[str, ModelInfo | None] = {}
        self.prices_as_of = prices_as_of

    def model(self, name: str) -> ModelInfo | None:
        """The catalog entry for a model name as a client sends it, or None if unknown."""
        hit = self._cache.get(name, _MISS)
        if hit is not _MISS:
            return cast("ModelInfo | None", hit)
        info = self._resolve(name)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[name] = info
        return info

    def judged_model(self, model: str, deployment: str | None = None) -> str:
        """The canonical name of the model a request is judged, limited and priced as.

        An Azure OpenAI deployment (the path's ``/openai/deployments/{id}/``) serves its own
        model whatever the body's ``model`` says: the catalog's ``deployments`` name it; an
        unknown deployment is judged by its own name (so an allow list that does not name it
        refuses it). Otherwise the body's model, canonical (``model_names.canonical``).
        """
        if deployment is not None:
            key = canonical(deployment)
            return self._deployments.get(key, key)
        return canonical(model)

    def deployments(self) -> Mapping[str, str]:
        """Azure deployment name to model name, both canonical (read-only)."""
        return MappingProxyType(self._deployments)

    def _resolve(self, name: str) -> ModelInfo | None:
        # "models/gemini-1.5-pro" (Gemini API), "openai/gpt-4o" (gateways): the last segment.
        key = canonical(name).rpartition("/")[2]
        info = self._models.get(key) or self._by_alias.get(key)
        if info is not None:
            return info
        m = _BEDROCK_PREFIX.match(key)
        if m is not None:
            # us.anthropic.claude-... is the alias anthropic.claude-... through a region profile.
            info = self._by_alias.get(key[m.start("vendor") :])
            if info is not None:
                return info
            key = key[m.end() :]
            info = self._models.get(key)
            if info is not None:
                return info
        return self._variant(key)

    def _variant(self, key: str) -> ModelInfo | None:
        """The longest known name that key extends with version-like segments only."""
        end = len(key)
        while True:
            end = max(key.rfind("-", 0, end), key.rfind("@", 0, end), key.rfind(":", 0, end))
            if end <= 0:
                return None
            info = self._models.get(key[:end])
            if info is not None and _VERSION_SUFFIX.fullmatch(key, end):
                return info

    def provider(self, name: str) -> Provider | None:
        """The provider of that name, or None."""
        return self._providers.get(name)

    def providers(self) -> Mapping[str, Provider]:
        """Every provider, by name (read-only)."""
        return self._providers

    def cost(self, model: str, usage: Usage) -> float | None:
        """What usage of model costs in USD at list price; None for an unknown model."""
        info = self.model(model)
        if info is None:
            return None
        price = info.price
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        cached_rate = price.cached_input_per_mtok
        if cached_rate is None:
            cached_rate = price.input_per_mtok
        return (
            (usage.input_tokens - cached) * price.input_per_mtok
            + cached * cached_rate
            + usage.output_tokens * price.output_per_mtok
        ) / 1_000_000

    def estimate_cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Cost in USD of that many uncached input and output tokens; None for unknown models."""
        info = self.model(model)
        if info is None:
            return None
        price = info.price
        return (
            input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok
        ) / 1_000_000

    def model_at(self, model: str, provider: str) -> str | None:
        """The model name to send to provider for this model, or None if it does not serve it."""
        info = self.model(model)
        if info is None:
            return None
        if info.provider == provider:
            # Keep the exact (possibly dated) name a client asked its home provider for; a
            # name that came in as another provider's alias goes back to the catalog name.
            return model if model.lower().startswith(info.name.lower()) else info.name
        return info.aliases.get(provider)


# --- loading ----------------------------------------------------------------------------------

_TOP_FIELDS = ("prices_as_of", "providers", "models", "deployments")
_PROVIDER_FIELDS = ("api", "eu_resident")
_MODEL_FIELDS = ("provider", "price", "aliases")
_PRICE_FIELDS = ("input", "output", "cached_input")
_YamlPath = tuple[Any, ...]


class _Problems:
    """Collects every problem of one file, each with the line of the closest known key."""

    def __init__(self, file: str, lines: dict[_YamlPath, int]) -> None:
        self.file = file
        self.lines = lines
        self.found: list[Problem] = []

    def add(self, path: _YamlPath, message: str) -> None:
        while path and path not in self.lines:
            path = path[:-1]
        self.found.append(Problem(self.file, self.lines.get(path, 0), message))

    def unknown(
        self, spec: dict[Any, Any], allowed: tuple[str, ...], path: _YamlPath, owner: str
    ) -> None:
        for key in spec:
            if key not in allowed:
                self.add(
                    (*path, key),
                    f"{owner}unknown field '{key}' (expected one of: {', '.join(allowed)})",
                )


def _index_lines(
    node: yaml.Node | None,
    path: _YamlPath,
    out: dict[_YamlPath, int],
    problems: list[tuple[int, str]],
) -> None:
    """Record the 1-based line of every mapping key; note duplicate keys (YAML keeps the last)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            here = (*path, key)
            if key in seen:
                problems.append((key_node.start_mark.line + 1, f"duplicate key '{key}'"))
            seen.add(key)
            out.setdefault(here, key_node.start_mark.line + 1)
            _index_lines(value_node, here, out, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.setdefault((*path, i), item.start_mark.line + 1)
            _index_lines(item, (*path, i), out, problems)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _provider(name: Any, spec: Any, out: _Problems) -> Provider | None:
    path = ("providers", name)
    if not isinstance(name, str) or not name:
        out.add(path, f"provider names must be non-empty strings, not {name!r}")
        return None
    owner = f"provider '{name}': "
    if not isinstance(spec, dict):
        out.add(path, f"{owner}settings must be a mapping such as {{api: openai}}")
        return None
    out.unknown(spec, _PROVIDER_FIELDS, path, owner)
    api = spec.get("api")
    eu = spec.get("eu_resident", False)
    ok = True
    if api not in ("openai", "anthropic"):
        out.add((*path, "api"), f"{owner}field 'api' must be 'openai' or 'anthropic'")
        ok = False
    if not isinstance(eu, bool):
        out.add((*path, "eu_resident"), f"{owner}field 'eu_resident' must be true or false")
        ok = False
    return Provider(name, cast(ProviderApi, api), eu) if ok else None


def _model(name: Any, spec: Any, providers: Collection[Any], out: _Problems) -> ModelInfo | None:
    path = ("models", name)
    if not isinstance(name, str) or not name:
        out.add(path, f"model names must be non-empty strings, not {name!r}")
        return None
    owner = f"model '{name}': "
    if not isinstance(spec, dict):
        out.add(path, f"{owner}settings must be a mapping with provider and price")
        return None
    before = len(out.found)
    out.unknown(spec, _MODEL_FIELDS, path, owner)
    provider = spec.get("provider")
    if not isinstance(provider, str):
        out.add((*path, "provider"), f"{owner}field 'provider' is required (a provider name)")
    elif provider not in providers:
        out.add((*path, "provider"), f"{owner}provider '{provider}' is not defined in providers")
    price = spec.get("price")
    if not isinstance(price, dict):
        out.add(
            (*path, "price"),
            f"{owner}field 'price' is required: "
            "{input: USD per million tokens, output: ..., cached_input: ...}",
        )
        price = {}
    else:
        out.unknown(price, _PRICE_FIELDS, (*path, "price"), owner)
        for key in _PRICE_FIELDS:
            if (key in price or key != "cached_input") and not _number(price.get(key)):
                out.add(
                    (*path, "price", key),
                    f"{owner}field 'price.{key}' must be a non-negative number",
                )
    aliases = spec.get("aliases", {})
    if not isinstance(aliases, dict):
        out.add((*path, "aliases"), f"{owner}field 'aliases' must map provider names to names")
        aliases = {}
    for target, alias in aliases.items():
        if target not in providers:
            out.add(
                (*path, "aliases", target),
                f"{owner}alias provider '{target}' is not defined in providers",
            )
        if not isinstance(alias, str) or not alias:
            out.add((*path, "aliases", target), f"{owner}alias for '{target}' must be a name")
    if len(out.found) > before:
        return None
    return ModelInfo(
        name=name,
        provider=cast(str, provider),
        price=Price(
            float(price["input"]),
            float(price["output"]),
            float(price["cached_input"]) if "cached_input" in price else None,
        ),
        aliases=MappingProxyType(dict(aliases)),
    )


def parse_catalog(text: str, file: str) -> Catalog:
    """Build a catalog from YAML (or JSON) text; PolicyError listing every problem otherwise."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise PolicyError([Problem(file, line, f"invalid YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(file, 0, f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    lines: dict[_YamlPath, int] = {}
    duplicates: list[tuple[int, str]] = []
    _index_lines(node, (), lines, duplicates)
    out = _Problems(file, lines)
    out.found.extend(Problem(file, line, message) for line, message in duplicates)
    if not isinstance(data, dict):
        out.add((), "a catalog must be a mapping with 'providers' and 'models'")
        raise PolicyError(out.found)
    out.unknown(data, _TOP_FIELDS, (), "")
    as_of = data.get("prices_as_of")
    if as_of is not None and not isinstance(as_of, str | datetime.date):
        out.add(("prices_as_of",), "field 'prices_as_of' must be a date such as 2025-12-01")
    providers: dict[str, Provider] = {}
    models: dict[str, ModelInfo] = {}
    declared = data["providers"] if isinstance(data.get("providers"), dict) else {}
    for key, kind in (("providers", "provider"), ("models", "model")):
        section = data.get(key)
        if not isinstance(section, dict) or not section:
            out.add(
                (key,),
                f"field '{key}' must be a non-empty mapping of {kind} names to their settings",
            )
            continue
        for name, spec in section.items():
            if key == "providers":
                if (provider := _provider(name, spec, out)) is not None:
                    providers[name] = provider
            # Check names against every declared provider, valid or not: one mistake, one line.
            elif (info := _model(name, spec, declared, out)) is not None:
                models[name] = info
    deployments = _deployments(data.get("deployments", {}), out)
    if out.found:
        raise PolicyError(out.found)
    return Catalog(providers, models, None if as_of is None else str(as_of), deployments)


def _deployments(section: Any, out: _Problems) -> dict[str, str]:
    """``deployments: {name: model}``: Azure deployment names and the model each serves."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        out.add(("deployments",), "field 'deployments' must map deployment names to models")
        return {}
    found: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, model in section.items():
        path = ("deployments", name)
        if not isinstance(name, str) or not canonical(name):
            out.add(path, f"deployment names must be non-empty strings, not {name!r}")
        elif not isinstance(model, str) or not canonical(model):
            out.add(path, f"deployment '{name}': the model it serves must be a model name")
        elif canonical(name) in seen:
            # Deployment names are compared as model names are: case-insensitively.
            out.add(path, f"deployment '{name}' is also spelled '{seen[canonical(name)]}'")
        else:
            seen[canonical(name)] = name
            found[name] = model
    return found


@functools.lru_cache(maxsize=1)
def _default_catalog() -> Catalog:
    text = (
        resources.files("policy_extproc.llm")
        .joinpath("default_catalog.yaml")
        .read_text(encoding="utf-8")
    )
    return parse_catalog(text, "default_catalog.yaml")


def load_catalog(path: str | None = None) -> Catalog:
    """Load a catalog file, or the packaged default when path is None."""
    if path is None:
        return _default_catalog()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([Problem(path, 0, f"cannot read catalog: {exc}")]) from exc
    return parse_catalog(text, path)
