"""Policy text -> validated ``Policy`` values, or every problem at once.

A policy set never half-loads: ``load_sources`` returns all policies or raises ``PolicyError``
listing every problem found, each as ``file:line: policy 'name' rule N (type): message``.
Reading the files is the edge's work (``policy_extproc.sources.files``); this module is given
(file name, text) pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..detect.pii import ENTITIES
from ..errors import PolicyError, Problem
from . import fields as f
from .model import (
    FRAMEWORKS,
    PER,
    RULE_TYPES,
    SCOPE_KEYS,
    WINDOWS,
    Policy,
    Rule,
    Scope,
)
from .yamlsource import Located, LocatedList, SourceError, load_documents

PII_ENTITIES = ENTITIES

POLICY_EXTENSIONS = (".yaml", ".yml", ".json")

_DIRECTION = f.one_of("request", "response", "both")
_ON_ERROR = f.one_of("open", "closed")

# Per rule type: YAML field -> (model field, parser). `id`, `type` and `final` are common.
_FIELDS: Mapping[str, Mapping[str, tuple[str, f.Parser]]] = {
    "model_access": {
        "models": ("models", f.string_list(f.glob)),
        "deny_models": ("deny_models", f.string_list(f.glob)),
        "roles": ("roles", f.string_list()),
        "max_cost_per_day": ("max_cost_per_day", f.number(0.0, exclusive=True)),
        "action": ("action", f.one_of("block", "allow")),
    },
    "rate_limit": {
        "per": ("per", f.per),
        "requests": ("requests", f.integer(1)),
        "tokens": ("tokens", f.integer(1)),
        "window": ("window", f.one_of(*WINDOWS)),
        "burst": ("burst", f.integer(0)),
        "on_error": ("on_error", _ON_ERROR),
        "action": ("action", f.one_of("throttle")),
    },
    "cost_budget": {
        "per": ("per", f.per),
        "limit_usd": ("limit_usd", f.number(0.0, exclusive=True)),
        "period": ("period", f.one_of("day", "month")),
        "action": ("action", f.one_of("block", "notify")),
        "alert_at": ("alert_at", f.string_list(f.fraction, allow_empty=True)),
        "on_error": ("on_error", _ON_ERROR),
    },
    "content_filter": {
        "keywords": ("keywords", f.string_list()),
        "patterns": ("patterns", f.string_list(f.regex)),
        "topics": ("topics", f.topics),
        "action": ("action", f.one_of("block", "redact")),
        "direction": ("direction", _DIRECTION),
        "case_sensitive": ("case_sensitive", f.boolean),
        "whole_words": ("whole_words", f.boolean),
    },
    "pii": {
        "entities": ("entities", f.string_list(f.one_of(*PII_ENTITIES))),
        "action": ("action", f.one_of("mask", "block")),
        "style": ("style", f.one_of("placeholder", "partial", "hash")),
        "allow": ("allow", f.string_list(allow_empty=True)),
        "direction": ("direction", _DIRECTION),
        "min_score": ("min_score", f.fraction),
        "regions": ("regions", f.string_list(f.phone_region)),
    },
    "approval": {
        "models": ("models", f.string_list(f.glob)),
        "min_estimated_cost_usd": ("min_estimated_cost_usd", f.number(0.0)),
        "tags": ("tags", f.str_mapping),
        "ttl": ("ttl_s", f.duration),
        "action": ("action", f.one_of("escalate")),
    },
    "failover": {
        "provider": ("provider", f.string),
        "fallbacks": ("fallbacks", f.string_list()),
        "failure_threshold": ("failure_threshold", f.integer(1)),
        "failure_ratio": ("failure_ratio", f.fraction),
        "min_requests": ("min_requests", f.integer(1)),
        "window": ("window_s", f.duration),
        "cooldown": ("cooldown_s", f.duration),
        "action": ("action", f.one_of("reroute")),
    },
    "compliance": {
        "framework": ("framework", f.one_of(*FRAMEWORKS)),
        "mode": ("mode", f.one_of("enforce", "log")),
    },
    "prompt_injection": {
        "action": ("action", f.one_of("block", "log")),
        "sensitivity": ("sensitivity", f.one_of("low", "medium", "high")),
        "direction": ("direction", _DIRECTION),
    },
}
_REQUIRED = {"cost_budget": ("limit_usd",), "failover": ("provider", "fallbacks"),
             "compliance": ("framework",)}  # fmt: skip


def _check_rate_limit(r: Any) -> str | None:
    if r.requests is None and r.tokens is None:
        return "needs 'requests' or 'tokens' (or both)"
    return None


def _check_content_filter(r: Any) -> str | None:
    if not (r.keywords or r.patterns or r.topics):
        return "needs at least one of 'keywords', 'patterns' or 'topics'"
    return None


def _check_approval(r: Any) -> str | None:
    if not r.models and r.min_estimated_cost_usd is None and not r.tags:
        return "needs at least one trigger: 'models', 'min_estimated_cost_usd' or 'tags'"
    return None


def _check_failover(r: Any) -> str | None:
    if r.provider in r.fallbacks:
        return f"provider {r.provider!r} cannot be its own fallback"
    if len(set(r.fallbacks)) != len(r.fallbacks):
        return "names the same fallback twice"
    return None


_CHECKS: Mapping[str, Callable[[Any], str | None]] = {
    "rate_limit": _check_rate_limit,
    "content_filter": _check_content_filter,
    "approval": _check_approval,
    "failover": _check_failover,
}

# Policy fields besides the name, the scope and the rules, with their parsers.
_POLICY_EXTRAS: Mapping[str, f.Parser] = {
    "mode": f.one_of("enforce", "log"),
    "compliance": f.string_list(f.one_of(*FRAMEWORKS), allow_empty=True),
    "description": f.string,
    "allow_token_prompts": f.boolean,
}
_POLICY_FIELDS = {"policy_name", "scope", "org", "team", "environment", "rules", *_POLICY_EXTRAS}


@dataclass
class _Collector:
    file: str
    problems: list[Problem]
    names: list[tuple[str, str, int]]  # every policy name seen, loaded or not: (name, file, line)
    # The valid rules of policies that do not load, so that compiling them can still report
    # their own problems (a pattern the engine refuses): check lists every problem at once.
    partial: list[Policy] = field(default_factory=list)

    def add(self, line: int, msg: str, policy: str | None = None, index: int | None = None,
            rtype: str | None = None) -> None:  # fmt: skip
        self.problems.append(Problem(self.file, line, msg, policy, index, rtype))


def _line_of_item(items: list[Any], index: int, default: int) -> int:
    return items.line_of(index) if isinstance(items, LocatedList) else default


def _nested_duplicates(value: Any, out: _Collector, policy: str | None,
                       index: int | None = None, rtype: str | None = None,
                       where: str = "") -> bool:  # fmt: skip
    """Report equal keys in mappings inside a field (scope, topics, tags); True if none."""
    ok = True
    if isinstance(value, Located):
        for key, line in value.duplicates:
            out.add(line, f"{where}key '{key}' given twice", policy, index, rtype)
            ok = False
        for v in value.values():
            ok = _nested_duplicates(v, out, policy, index, rtype, where) and ok
    elif isinstance(value, list):
        for v in value:
            ok = _nested_duplicates(v, out, policy, index, rtype, where) and ok
    return ok


def _parse_rule(raw: Any, index: int, line: int, policy: str, out: _Collector) -> Rule | None:
    if not isinstance(raw, Located):
        out.add(line, "a rule must be a mapping", policy, index)
        return None
    rtype = raw.get("type")
    if not isinstance(rtype, str) or rtype not in RULE_TYPES:
        msg = "missing 'type'" if rtype is None else f"unknown rule type {rtype!r}"
        out.add(raw.line_of("type"), f"{msg} (one of {', '.join(RULE_TYPES)})", policy, index)
        return None
    spec = _FIELDS[rtype]
    kwargs: dict[str, Any] = {}
    ok = True
    for key, line in raw.duplicates:
        out.add(line, f"field '{key}' given twice", policy, index, rtype)
        ok = False
    for key, value in raw.items():
        if key == "type":
            continue
        line = raw.line_of(key)
        if not _nested_duplicates(value, out, policy, index, rtype, f"'{key}': "):
            ok = False
            continue
        try:
            if key == "id":
                kwargs["id"] = f.string(value)
            elif key == "final":
                kwargs["final"] = f.boolean(value)
            elif key == "alert":
                kwargs["alert"] = f.boolean(value)
            elif key in spec:
                name, parse = spec[key]
                kwargs[name] = parse(value)
            else:
                known = ", ".join(["id", "final", "alert", *spec])
                raise f.FieldError(f"unknown field (known: {known})")
        except f.FieldError as exc:
            sep = " " if key in spec or key in ("id", "final", "alert") else ": "
            for message in exc.messages:
                out.add(line, f"'{key}'{sep}{message}", policy, index, rtype)
            ok = False
    for key in _REQUIRED.get(rtype, ()):
        if key not in raw:
            out.add(raw.line, f"'{key}' is required", policy, index, rtype)
            ok = False
    if not ok:
        return None
    kwargs.setdefault("id", rtype)
    kwargs.setdefault("final", False)
    rule = RULE_TYPES[rtype](index=index, line=raw.line, **kwargs)
    check = _CHECKS.get(rtype)
    reason = check(rule) if check else None
    if reason:
        out.add(raw.line, reason, policy, index, rtype)
        return None
    return rule


def _parse_scope(raw: Located, name: str, out: _Collector) -> Scope | None:
    values: dict[str, str] = {}
    ok = True
    scope = raw.get("scope")
    if scope is not None:
        if not isinstance(scope, Located):
            out.add(raw.line_of("scope"), "'scope' must be a mapping of org/team/environment",
                    name)  # fmt: skip
            return None
        ok = _nested_duplicates(scope, out, name, where="scope: ")
        for key, value in scope.items():
            if key not in SCOPE_KEYS:
                out.add(scope.line_of(key), f"scope: unknown key {key!r} (known: "
                        f"{', '.join(SCOPE_KEYS)})", name)  # fmt: skip
                ok = False
            elif not isinstance(value, str) or not value:
                out.add(scope.line_of(key), f"scope: '{key}' must be a non-empty string", name)
                ok = False
            else:
                values[key] = value
    for key in SCOPE_KEYS:
        if key in raw:
            value = raw[key]
            if not isinstance(value, str) or not value:
                out.add(raw.line_of(key), f"'{key}' must be a non-empty string", name)
                ok = False
            elif key in values and values[key] != value:
                out.add(raw.line_of(key), f"'{key}' disagrees with scope.{key}", name)
                ok = False
            else:
                values[key] = value
    return Scope(**values) if ok else None


def _parse_policy(raw: Any, line: int, out: _Collector) -> Policy | None:
    if not isinstance(raw, Located):
        out.add(line, "a policy must be a mapping with 'policy_name' and 'rules'")
        return None
    name = raw.get("policy_name")
    if not isinstance(name, str) or not name.strip():
        out.add(raw.line_of("policy_name"), "'policy_name' is required and must be a string")
        name = None
    ok = name is not None
    if name is not None:
        out.names.append((name, out.file, raw.line))
    for key, line in raw.duplicates:
        out.add(line, f"field '{key}' given twice", name)
        ok = False
    for key in raw:
        if key not in _POLICY_FIELDS:
            out.add(raw.line_of(key), f"unknown field {key!r} (known: "
                    f"{', '.join(sorted(_POLICY_FIELDS))})", name)  # fmt: skip
            ok = False
    scope = _parse_scope(raw, name or "?", out)
    extras: dict[str, Any] = {}
    for key, parse in _POLICY_EXTRAS.items():
        if key in raw:
            try:
                extras[key] = parse(raw[key])
            except f.FieldError as exc:
                out.add(raw.line_of(key), f"'{key}' {exc}", name)
                ok = False
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        out.add(raw.line_of("rules"), "'rules' must be a list", name)
        return None
    rules = []
    ids: dict[str, int] = {}
    for i, r in enumerate(rules_raw, start=1):
        rule = _parse_rule(r, i, _line_of_item(rules_raw, i - 1, raw.line_of("rules")),
                           name or "?", out)  # fmt: skip
        if rule is None:
            ok = False
            continue
        if rule.id in ids:
            out.add(rule.line, f"rule id {rule.id!r} is already used by rule {ids[rule.id]} of "
                    "this policy (give one an 'id')", name, i, rule.type)  # fmt: skip
            ok = False
        ids[rule.id] = i
        rules.append(rule)
    if not ok or scope is None or name is None:
        if rules:
            out.partial.append(Policy(name=name or "?", scope=scope or Scope(), rules=tuple(rules),
                                      file=out.file, line=raw.line))  # fmt: skip
        return None
    return Policy(name=name, scope=scope, rules=tuple(rules), file=out.file, line=raw.line,
                  **extras)  # fmt: skip


def parse_text(text: str, file: str, out: _Collector) -> list[Policy]:
    try:
        docs = load_documents(text)
    except SourceError as exc:
        out.add(exc.line, str(exc))
        return []
    policies = []
    for doc in docs:
        items = doc if isinstance(doc, list) else [doc]
        for n, raw in enumerate(items):
            p = _parse_policy(raw, _line_of_item(items, n, 1), out)
            if p is not None:
                policies.append(p)
    return policies


def load_sources(sources: Iterable[tuple[str, str]]) -> tuple[Policy, ...]:
    """Policies from (file name, text) pairs; raises ``PolicyError`` with every problem found."""
    policies, problems = read_sources(sources)
    if problems:
        raise PolicyError(problems)
    return policies


def read_sources(sources: Iterable[tuple[str, str]]) -> tuple[tuple[Policy, ...], list[Problem]]:
    """The policies that are valid, and the problems of the rest (for reporting all at once)."""
    problems: list[Problem] = []
    policies: list[Policy] = []
    names: list[tuple[str, str, int]] = []
    partial: list[Policy] = []
    for name, text in sources:
        policies.extend(parse_text(text, name, _Collector(name, problems, names, partial)))
    problems.extend(_compile_problems(partial))
    first: dict[str, tuple[str, int]] = {}
    for name, file, line in names:
        if name in first:
            problems.append(Problem(file, line, "duplicate policy name (first defined at "
                                    f"{first[name][0]}:{first[name][1]})", name))  # fmt: skip
        else:
            first.setdefault(name, (file, line))
    problems.extend(check_set(policies))
    return tuple(policies), problems


def _compile_problems(partial: list[Policy]) -> list[Problem]:
    """What compiling the valid rules of policies that did not load would report."""
    from .compiler import CompiledPolicy

    found: list[Problem] = []
    for policy in partial:
        try:
            CompiledPolicy(policy, 0)
        except PolicyError as exc:
            found.extend(exc.problems)
    return found


def check_set(policies: list[Policy]) -> list[Problem]:
    """Problems between loaded policies: overridden locks and same-scope rule id clashes."""
    ordered = sorted(policies, key=lambda p: p.scope.specificity)
    # Only rules that share an id can clash: group by id instead of comparing every pair of
    # policies (quadratic in the policies, times their rules: seconds at 50,000 rules).
    by_id: dict[str, list[tuple[int, Rule]]] = {}
    for i, p in enumerate(ordered):
        for r in p.rules:
            by_id.setdefault(r.id, []).append((i, r))
    found: list[tuple[tuple[int, int, int], Problem]] = []
    for defs in by_id.values():
        for a, (i, base) in enumerate(defs):
            general = ordered[i]
            for j, rule in defs[a + 1 :]:
                specific = ordered[j]
                if i == j or not general.scope.overlaps(specific.scope):
                    continue
                where = f"policy '{general.name}' ({general.file}:{base.line})"
                if general.scope.specificity == specific.scope.specificity:
                    msg = (
                        f"rule id {rule.id!r} is also defined by {where} with the same scope; "
                        "neither can override the other"
                    )
                elif base.final:
                    msg = f"overrides rule {rule.id!r} of {where}, which is final (locked)"
                elif base.type != rule.type:
                    msg = (
                        f"overrides rule {rule.id!r} of {where}, which is a {base.type} rule; "
                        "an override must keep the type"
                    )
                else:
                    continue
                problem = Problem(specific.file, rule.line, msg, specific.name, rule.index,
                                  rule.type)  # fmt: skip
                found.append(((i, j, rule.index), problem))
    return [problem for _, problem in sorted(found, key=lambda f: f[0])]


__all__ = ["PER", "PII_ENTITIES", "check_set", "load_sources"]
