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

from ..detect.patterns import Pattern, PatternError, PatternSet
from ..errors import PolicyError, Problem
from ..llm import model_names
from .identity import canonical
from .model import ContentFilterRule, Policy, Rule

_CACHE_LIMIT = 50_000  # distinct (org, team, environment) keys remembered; headers are untrusted


@dataclass(frozen=True, slots=True)
class Target:
    """What a pattern hit means: which rule of the policy, and a label for explanations."""

    rule_index: int  # 0-based index into policy.rules
    label: str


class CompiledPolicy:
    """One policy with its pattern databases, built once per snapshot."""

    __slots__ = ("index", "pii", "policy", "request_patterns", "request_targets",
                 "response_patterns", "response_targets", "roles", "semantic")  # fmt: skip

    def __init__(self, policy: Policy, index: int) -> None:
        from .privacy import build_detectors
        from .semantic import build_semantic

        self.policy = policy
        self.index = index
        # 0-based rule index -> its roles, canonical (a request's roles are, see context).
        self.roles: dict[int, frozenset[str]] = {
            i: frozenset(canonical(r) for r in roles)
            for i, rule in enumerate(policy.rules)
            if (roles := getattr(rule, "roles", None)) is not None
        }
        self.request_patterns, self.request_targets = _patterns(policy, "request")
        self.response_patterns, self.response_targets = _patterns(policy, "response")
        self.pii = build_detectors(policy)
        self.semantic = build_semantic(policy)  # None unless it has semantic rules


def _patterns(policy: Policy, direction: str) -> tuple[PatternSet | None, tuple[Target, ...]]:
    specs: list[Pattern] = []
    targets: list[Target] = []

    def add(expr: str, kind: str, rule: ContentFilterRule, i: int, label: str, ww: bool) -> None:
        specs.append(Pattern(len(targets), expr, kind, rule.case_sensitive, ww))  # type: ignore[arg-type]
        targets.append(Target(i, label))

    for i, rule in enumerate(policy.rules):
        if not isinstance(rule, ContentFilterRule) or rule.direction not in (direction, "both"):
            continue
        # Labels name keywords and patterns by position, never by their text: for a keyword,
        # the text is what was matched, and reasons go into audit records and spans.
        for n, kw in enumerate(rule.keywords, 1):
            add(kw, "literal", rule, i, f"keyword #{n}", rule.whole_words)
        for n, rx in enumerate(rule.patterns, 1):
            add(rx, "regex", rule, i, f"pattern #{n}", False)
        for topic, phrases in rule.topics.items():
            for phrase in phrases:
                # A literal: the engine matches its spaces against any run of white space.
                add(phrase, "literal", rule, i, f"topic {topic!r}", rule.whole_words)
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
class EffectiveRule:
    """A rule in force for a scope, where it came from, and whose rules it replaced."""

    rule: Rule
    policy: CompiledPolicy
    overrode: tuple[str, ...]  # names of less specific policies whose same-id rule it replaced

    @property
    def policy_name(self) -> str:
        return self.policy.policy.name


def _semantic(e: EffectiveRule, direction: str) -> bool:
    if e.rule.type != "prompt_injection" and (
        e.policy.semantic is None or e.rule.index - 1 not in e.policy.semantic.topics
    ):
        return False
    return e.rule.direction in (direction, "both")  # type: ignore[attr-defined]


class EffectiveSet:
    """The policies applying to one scope (least to most specific) and the rules in force."""

    __slots__ = ("active", "by_type", "compliance", "content", "glob_cache", "model_cache",
                 "policies", "position", "rules", "semantic", "semantic_response")  # fmt: skip

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
            d: tuple(cp for cp in self.policies if getattr(cp, f"{d}_patterns") is not None)
            for d in ("request", "response")
        }
        tags: dict[str, None] = {}
        for cp in self.policies:
            tags.update(dict.fromkeys(cp.policy.compliance))
        for e in self.by_type.get("compliance", ()):
            tags[e.rule.framework] = None  # type: ignore[attr-defined]
        self.compliance = tuple(tags)
        # The prompt_injection rules and semantic-topic rules per direction, found once per
        # scope (a request must not walk thousands of content filters to find none); whether
        # one reads the answer decides if Envoy sends the response phases.
        self.semantic = {d: tuple(e for e in self.rules if _semantic(e, d))
                         for d in ("request", "response")}  # fmt: skip
        self.semantic_response = bool(self.semantic["response"])
        # (model, deployment, roles) -> the model_access firings (evaluator._check_models)
        self.model_cache: dict[tuple[str, str | None, frozenset[str]], tuple[object, ...]] = {}
        self.glob_cache: dict[tuple[str, ...], re.Pattern[str]] = {}

    def rules_of(self, rule_type: str) -> tuple[EffectiveRule, ...]:
        return self.by_type.get(rule_type, ())

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

    def __init__(self, policies: Sequence[Policy], version: str | None = None) -> None:
        compiled, problems = [], []
        for i, p in enumerate(policies):
            try:
                compiled.append(CompiledPolicy(p, i))
            except PolicyError as exc:
                problems.extend(exc.problems)
        if problems:
            raise PolicyError(problems)
        self.policies = tuple(compiled)
        self.version = version or policy_version(policies)
        self._index: dict[tuple[str | None, str | None, str | None], list[CompiledPolicy]] = {}
        for cp in self.policies:
            keys = tuple(None if v is None else canonical(v) for v in cp.policy.scope.keys)
            self._index.setdefault(keys, []).append(cp)  # type: ignore[arg-type]
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


def compile_read(policies: Sequence[Policy], problems: list[Problem]) -> Snapshot:
    """The snapshot of policies just read; ``PolicyError`` lists the problems of reading them
    and of compiling them together, in file and line order, as ``check`` prints them."""
    try:
        snapshot = Snapshot(policies)
    except PolicyError as exc:
        problems.extend(exc.problems)
    if problems:
        problems.sort(key=lambda p: (p.file, p.line))
        raise PolicyError(problems)
    return snapshot
