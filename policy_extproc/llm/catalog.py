"""The model catalog: providers, models, list prices and each model's name at other providers.

Parsed by ``catalog_file``, read once by the edge (``sources.catalog``: the packaged
default_catalog.yaml or an operator's file) and handed to what consults it on every request for
cost estimates, budgets and failover renames, so lookups are cached. Its
``deployments`` map Azure OpenAI deployment names to the models they serve: a request to
``/openai/deployments/{name}/...`` is judged, limited and priced as that model
(``judged_model``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, cast

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
    """A provider Envoy can route to, the request format it speaks, and where it keeps data.

    ``address`` / ``port``: the host Envoy's cluster for it reaches (the spans' server.address
    and server.port), None where the catalog does not say (an Azure resource, a region).
    """

    name: str
    api: ProviderApi
    eu_resident: bool = False
    address: str | None = None
    port: int | None = None


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


@dataclass(frozen=True, slots=True)
class ModelJudge:
    """Which model a request is judged as: the catalog's Azure deployments, and nothing else.

    Small and plain, so it can travel to a worker process (``enforce/work.py``) with a request.
    """

    deployments: Mapping[str, str]  # canonical deployment name -> canonical model name

    def judged_model(self, model: str, deployment: str | None = None) -> str:
        """The canonical name of the model a request is judged, limited and priced as.

        An Azure OpenAI deployment (the path's ``/openai/deployments/{id}/``) serves its own
        model whatever the body's ``model`` says: the catalog's ``deployments`` name it; an
        unknown deployment is judged by its own name (so an allow list that does not name it
        refuses it). Otherwise the body's model, canonical (``model_names.canonical``).
        """
        if deployment is not None:
            key = canonical(deployment)
            return self.deployments.get(key, key)
        return canonical(model)


class Catalog:
    """Models, providers and prices, with cached model lookups."""

    __slots__ = (
        "_by_alias",
        "_cache",
        "_deployments",
        "_judge",
        "_models",
        "_providers",
        "prices_as_of",
    )

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
        self._judge = ModelJudge(self._deployments)
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
        """The canonical name of the model a request is judged as (``ModelJudge``)."""
        return self.judge.judged_model(model, deployment)

    @property
    def judge(self) -> ModelJudge:
        return self._judge

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
