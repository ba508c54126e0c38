"""The catalog file: YAML (or JSON) text to a ``Catalog``, every problem with its line.

Fields: ``prices_as_of``, ``providers`` ({name: {api, eu_resident, address}}), ``models`` ({name:
{provider, price: {input, output, cached_input}, aliases}}) and ``deployments`` ({Azure
deployment name: model}); see default_catalog.yaml. Unknown fields and duplicate keys are
errors, reported all at once as ``check`` reports policies.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Collection
from types import MappingProxyType
from typing import Any, cast

import yaml

from policy_extproc.errors import PolicyError, Problem
from policy_extproc.llm.catalog import Catalog, ModelInfo, Price, Provider, ProviderApi
from policy_extproc.llm.model_names import canonical

_TOP_FIELDS = ("prices_as_of", "providers", "models", "deployments")
_PROVIDER_FIELDS = ("api", "eu_resident", "address")
# host or host:port (a DNS name or an IPv4 address; an IPv6 one in brackets), no scheme, no path.
_ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?\Z")
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
    address = spec.get("address")
    host, port = None, None
    if address is not None:
        m = _ADDRESS.match(address) if isinstance(address, str) else None
        if m is None or (m.group("port") is not None and not 0 < int(m.group("port")) < 65536):
            out.add(
                (*path, "address"),
                f"{owner}field 'address' must be host or host:port (api.openai.com:443), "
                "without a scheme or path",
            )
            ok = False
        else:
            host, port = m.group("host"), m.group("port")
    provider = Provider(name, cast(ProviderApi, api), eu, host, None if port is None else int(port))
    return provider if ok else None


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
