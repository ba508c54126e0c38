"""Policy text -> validated ``Policy`` values, or every problem at once.

A policy set never half-loads: ``load_sources`` returns all policies or raises ``PolicyError``
listing every problem found, each as ``file:line: policy 'name' rule N (type): message``.
Reading the files is the edge's work (``policy_extproc.sources.files``); this module is given
(file name, text) pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..detect.pii import ENTITIES
from ..errors import PolicyError, Problem
from . import fields as f
from .model import FRAMEWORKS, NO_SECRETS, PER, SCOPE_KEYS, Policy, Rule, Scope, Secrets
from .rules import BY_NAME
from .yamlsource import Located, LocatedList, SourceError, load_documents

PII_ENTITIES = ENTITIES

POLICY_EXTENSIONS = (".yaml", ".yml", ".json")

# Fields every rule has besides `type` (each kind declares its own: policy.rules).
COMMON_FIELDS: Mapping[str, f.Parser] = {"id": f.string, "final": f.boolean, "alert": f.boolean}

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
    if not isinstance(rtype, str) or rtype not in BY_NAME:
        msg = "missing 'type'" if rtype is None else f"unknown rule type {rtype!r}"
        out.add(raw.line_of("type"), f"{msg} (one of {', '.join(BY_NAME)})", policy, index)
        return None
    kind = BY_NAME[rtype]
    spec = kind.fields
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
            if key in COMMON_FIELDS:
                kwargs[key] = COMMON_FIELDS[key](value)
            elif key in spec:
                kwargs[spec[key].attr or key] = spec[key].parse(value)
            else:
                known = ", ".join([*COMMON_FIELDS, *spec])
                raise f.FieldError(f"unknown field (known: {known})")
        except f.FieldError as exc:
            sep = " " if key in spec or key in COMMON_FIELDS else ": "
            for message in exc.messages:
                out.add(line, f"'{key}'{sep}{message}", policy, index, rtype)
            ok = False
    for key in kind.required:
        if key not in raw:
            out.add(raw.line, f"'{key}' is required", policy, index, rtype)
            ok = False
    if not ok:
        return None
    kwargs.setdefault("id", rtype)
    kwargs.setdefault("final", False)
    rule = kind.rule(index=index, line=raw.line, **kwargs)
    reason = kind.check(rule) if kind.check is not None else None
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


def read_sources(
    sources: Iterable[tuple[str, str]], secrets: Secrets = NO_SECRETS
) -> tuple[tuple[Policy, ...], list[Problem]]:
    """The policies that are valid, and the problems of the rest (for reporting all at once).

    ``secrets`` are what the set will be compiled with: the valid rules of the policies that do
    not load are compiled with them, so that a rule that needs a model or a key reports only
    its own problems, as it would in a set that loads."""
    problems: list[Problem] = []
    policies: list[Policy] = []
    names: list[tuple[str, str, int]] = []
    partial: list[Policy] = []
    for name, text in sources:
        policies.extend(parse_text(text, name, _Collector(name, problems, names, partial)))
    problems.extend(_compile_problems(partial, secrets))
    first: dict[str, tuple[str, int]] = {}
    for name, file, line in names:
        if name in first:
            problems.append(Problem(file, line, "duplicate policy name (first defined at "
                                    f"{first[name][0]}:{first[name][1]})", name))  # fmt: skip
        else:
            first.setdefault(name, (file, line))
    problems.extend(check_set(policies))
    return tuple(policies), problems


def _compile_problems(partial: list[Policy], secrets: Secrets) -> list[Problem]:
    """What compiling the valid rules of policies that did not load would report."""
    from .compiler import CompiledPolicy

    found: list[Problem] = []
    for policy in partial:
        try:
            CompiledPolicy(policy, 0, secrets)
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
