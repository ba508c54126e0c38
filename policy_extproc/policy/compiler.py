"""Policies -> an immutable ``Snapshot``: scope index, effective rule sets, pattern databases.

Everything that can be prepared before a request arrives is prepared here, once per policy set:

- each policy's content patterns become one ``PatternSet`` per direction, compiled at load, so a
  request scans its text once per applying policy (an organisation, its team, its environment:
  a handful) and the compile cost stays linear in the number of rules;
- the effective rule set of a scope (inheritance, overrides, locks) is computed the first time a
  request of that scope arrives and cached; requests with the same applying policies share it;
- identity and model names are canonical on both sides (``policy.identity``,
  ``llm.model_names``): scope values and roles are folded here, model globs when first used,
  so ``ACME``, ``O1-PREVIEW`` or ``openai/o1-preview`` meet the policies written for them.

Snapshots are never mutated after construction; a new policy set is a new snapshot, swapped in
atomically by the store.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fnmatch import translate
from typing import Generic, TypeVar, overload

from ..detect.patterns import Pattern, PatternError, PatternSet
from ..errors import PolicyError, Problem
from ..llm import model_names
from .identity import canonical
from .model import NO_SECRETS, Policy, Rule, Secrets

R = TypeVar("R", bound=Rule, covariant=True)

_CACHE_LIMIT = 50_000  # distinct (org, team, environment) keys remembered; headers are untrusted


@dataclass(frozen=True, slots=True)
class Target:
    """What a pattern hit means: which rule of the policy, and a label for explanations."""

    rule_index: int  # 0-based index into policy.rules
    label: str


class CompiledPolicy:
    """One policy with its pattern databases and what each rule built, once per snapshot."""

    __slots__ = ("built", "index", "policy", "request_patterns", "request_targets",
                 "response_patterns", "response_targets")  # fmt: skip

    def __init__(self, policy: Policy, index: int, secrets: Secrets = NO_SECRETS) -> None:
        self.policy = policy
        self.index = index
        # 0-based rule index -> what the rule built (Rule.build: a detector, a classifier).
        self.built: dict[int, object] = {}
        problems: list[Problem] = []
        for i, rule in enumerate(policy.rules):
            try:
                built = rule.build(policy, secrets)
            except PolicyError as exc:
                problems.extend(exc.problems)
                continue
            if built is not None:
                self.built[i] = built
        if problems:
            raise PolicyError(problems)
        self.request_patterns, self.request_targets = _patterns(policy, "request")
        self.response_patterns, self.response_targets = _patterns(policy, "response")


def _patterns(policy: Policy, direction: str) -> tuple[PatternSet | None, tuple[Target, ...]]:
    specs: list[Pattern] = []
    targets: list[Target] = []
    for i, rule in enumerate(policy.rules):
        for p in rule.pattern_specs(direction):
            specs.append(Pattern(len(targets), p.expr, p.kind, p.case_sensitive, p.whole_words))
            targets.append(Target(i, p.label))
    if not specs:
        return None, ()
    try:
        return PatternSet(specs), tuple(targets)
    except PatternError as exc:
        problems = []
        for pattern, why in exc.failures:
            rule = policy.rules[targets[pattern.tag].rule_index]
            problems.append(Problem(policy.file, rule.line, f"pattern {pattern.expr!r}: the "
                                    f"linear-time engine cannot compile it: {why}", policy.name,
                                    rule.index, rule.type))  # fmt: skip
        raise PolicyError(problems) from exc


@dataclass(frozen=True, slots=True)
class EffectiveRule(Generic[R]):
    """A rule in force for a scope, where it came from, and whose rules it replaced."""

    rule: R
    policy: CompiledPolicy
    overrode: tuple[str, ...]  # names of less specific policies whose same-id rule it replaced

    @property
    def policy_name(self) -> str:
        return self.policy.policy.name

    @property
    def built(self) -> object | None:
        """What the rule built when its policy compiled (``Rule.build``), or None."""
        return self.policy.built.get(self.rule.index - 1)


class EffectiveSet:
    """The policies applying to one scope (least to most specific) and the rules in force."""

    __slots__ = ("active", "by_type", "compliance", "content", "glob_cache", "model_cache",
                 "policies", "position", "reads_response", "rules", "semantic",
                 "semantic_response")  # fmt: skip

    def __init__(self, policies: Sequence[CompiledPolicy]) -> None:
        self.policies = tuple(policies)
        chosen: dict[str, EffectiveRule] = {}
        for cp in self.policies:
            for rule in cp.policy.rules:
                prev = chosen.get(rule.id)
                if prev is not None and prev.rule.final:
                    continue  # the loader refuses such overrides; never let one through anyway
                overrode = (*prev.overrode, prev.policy_name) if prev is not None else ()
                chosen[rule.id] = EffectiveRule(rule, cp, overrode)
        # Least to most specific policy, then rule order within it.
        pos = {cp.index: n for n, cp in enumerate(self.policies)}
        order = sorted(chosen.values(), key=lambda e: (pos[e.policy.index], e.rule.index))
        self.rules = tuple(order)
        # (policy index, 0-based rule index) -> place in ``rules``, for the rules in force.
        self.position = {(e.policy.index, e.rule.index - 1): n for n, e in enumerate(self.rules)}
        self.active = frozenset(self.position)
        by_type: dict[str, list[EffectiveRule]] = {}
        for e in self.rules:
            by_type.setdefault(e.rule.type, []).append(e)
        self.by_type = {t: tuple(rules) for t, rules in by_type.items()}
        self.content = {
            "request": tuple(cp for cp in self.policies if cp.request_patterns is not None),
            "response": tuple(cp for cp in self.policies if cp.response_patterns is not None),
        }
        tags: dict[str, None] = {}
        for cp in self.policies:
            tags.update(dict.fromkeys(cp.policy.compliance))
        for e in self.rules:
            tags.update(dict.fromkeys(e.rule.compliance_tags))
        self.compliance = tuple(tags)
        # The rules that classify by meaning per direction (prompt_injection, semantic topics),
        # found once per scope (a request must not walk thousands of content filters to find
        # none); whether one reads the answer decides if Envoy sends the response phases.
        self.semantic = {d: tuple(e for e in self.rules if e.rule.by_meaning(d))
                         for d in ("request", "response")}  # fmt: skip
        self.semantic_response = bool(self.semantic["response"])
        # Whether a rule in force needs the response phases (Rule.reads_response).
        self.reads_response = any(e.rule.reads_response for e in self.rules)
        # (model, deployment, roles) -> the model_access firings (rules.model_access)
        self.model_cache: dict[
            tuple[str, str | None, frozenset[str]], tuple[tuple[EffectiveRule, str, str], ...]
        ] = {}
        self.glob_cache: dict[tuple[str, ...], re.Pattern[str]] = {}

    @overload
    def rules_of(self, kind: type[R]) -> tuple[EffectiveRule[R], ...]: ...

    @overload
    def rules_of(self, kind: str) -> tuple[EffectiveRule, ...]: ...

    def rules_of(self, kind: type[Rule] | str) -> tuple[EffectiveRule, ...]:
        """The rules in force of one type, by its rule class (typed) or its name."""
        return self.by_type.get(kind if isinstance(kind, str) else kind.type, ())

    def glob(self, globs: tuple[str, ...]) -> re.Pattern[str]:
        """One compiled regex for a list of model globs, each in canonical spelling: it matches
        canonical names (``llm.model_names``), and ignores case for callers that pass others."""
        rx = self.glob_cache.get(globs)
        if rx is None:
            alternatives = "|".join(f"(?:{translate(model_names.canonical(g))})" for g in globs)
            rx = re.compile(alternatives, re.IGNORECASE)
            self.glob_cache[globs] = rx
        return rx

    def matches_model(
        self, globs: tuple[str, ...], model: str, *, any_spelling: bool = False
    ) -> bool:
        """Whether canonical ``model`` matches one of ``globs``; ``any_spelling`` (deny lists,
        approvals) also tries the model's other names (``model_names.spellings``)."""
        rx = self.glob(globs)
        if not any_spelling:
            return rx.fullmatch(model) is not None
        return any(rx.fullmatch(name) is not None for name in model_names.spellings(model))


class Snapshot:
    """An immutable compiled policy set; ``resolve`` gives the effective set for a request."""

    def __init__(
        self,
        policies: Sequence[Policy],
        version: str | None = None,
        *,
        secrets: Secrets = NO_SECRETS,
    ) -> None:
        compiled, problems = [], []
        for i, p in enumerate(policies):
            try:
                compiled.append(CompiledPolicy(p, i, secrets))
            except PolicyError as exc:
                problems.extend(exc.problems)
        if problems:
            raise PolicyError(problems)
        self.policies = tuple(compiled)
        self.secrets = secrets  # what it was compiled with (a worker process compiles alike)
        self.version = version or policy_version(policies)
        # The version names the policies; the build also what they were compiled with (a key,
        # the year): a reload for a new year keeps the version, and workers compile again.
        self.build = f"{self.version}:{_secrets_digest(secrets)}"
        self._index: dict[tuple[str | None, str | None, str | None], list[CompiledPolicy]] = {}
        for cp in self.policies:
            org, team, env = (None if v is None else canonical(v) for v in cp.policy.scope.keys)
            self._index.setdefault((org, team, env), []).append(cp)
        self._by_key: dict[tuple[str, str, str], EffectiveSet] = {}
        self._by_policies: dict[tuple[int, ...], EffectiveSet] = {}

    def __len__(self) -> int:
        return len(self.policies)

    @property
    def rule_count(self) -> int:
        return sum(len(cp.policy.rules) for cp in self.policies)

    def resolve(self, org: str, team: str, environment: str) -> EffectiveSet:
        """The effective set for a request's scope (cached; computed once per distinct scope).

        The values are compared canonically (``policy.identity``): a request context holds them
        so already; any other spelling is folded here, once per distinct key.
        """
        key = (org, team, environment)
        es = self._by_key.get(key)
        if es is not None:
            return es
        org, team, environment = (canonical(v or "") for v in (org, team, environment))
        found: list[CompiledPolicy] = []
        orgs = (None, org) if org else (None,)
        teams = (None, team) if team else (None,)
        envs = (None, environment) if environment else (None,)
        for o in orgs:
            for t in teams:
                for e in envs:
                    found.extend(self._index.get((o, t, e), ()))
        ordered = sorted(found, key=lambda cp: (cp.policy.scope.specificity, cp.index))
        pkey = tuple(cp.index for cp in ordered)
        es = self._by_policies.get(pkey)
        if es is None:
            es = EffectiveSet(ordered)
            self._by_policies[pkey] = es
        if len(self._by_key) >= _CACHE_LIMIT:
            self._by_key.clear()
        self._by_key[key] = es
        return es

    def warm(self) -> None:
        """Resolve every scope that a policy names, so first requests pay no compile cost."""
        for cp in self.policies:
            # Under the canonical key, as request contexts hold it.
            self.resolve(*(canonical(v or "") for v in cp.policy.scope.keys))


def policy_version(policies: Sequence[Policy]) -> str:
    """A content hash of the policy set, recorded with every decision.

    Only what the policies say counts: not the files they came from nor their lines, so the
    same set mounted elsewhere, reformatted, or pushed through the admin API has one version.
    """
    h = hashlib.sha256()
    for p in sorted(policies, key=lambda p: p.name):
        rules = tuple(replace(r, line=0) for r in p.rules)
        h.update(repr(replace(p, rules=rules, file="", line=0)).encode())
    return h.hexdigest()[:16]


def _secrets_digest(secrets: Secrets) -> str:
    h = hashlib.sha256(secrets.pii_hash_key or b"")
    h.update(str(secrets.year).encode())
    return h.hexdigest()[:12]


def compile_read(
    policies: Sequence[Policy], problems: list[Problem], secrets: Secrets = NO_SECRETS
) -> Snapshot:
    """The snapshot of policies just read; ``PolicyError`` lists the problems of reading them
    and of compiling them together, in file and line order, as ``check`` prints them."""
    try:
        snapshot = Snapshot(policies, secrets=secrets)
    except PolicyError as exc:
        problems.extend(exc.problems)
    if problems:
        problems.sort(key=lambda p: (p.file, p.line))
        raise PolicyError(problems)
    return snapshot
