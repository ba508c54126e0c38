"""What the Policies page shows: the scope tree, the rules in force for a scope and where each
comes from, and a diff of an edited policy against the one in force.

The dashboard reads every policy's text through the admin API (once per policy version) and
loads it with the sidecar's own loader and compiler, so the rule set shown for a scope is the
one the sidecar computes, not a re-implementation of inheritance.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from ..policy.compiler import CompiledPolicy, Snapshot
from ..policy.loader import read_sources
from ..policy.model import Policy
from ..sources.store import is_pushed


@dataclass(frozen=True, slots=True)
class PolicyRow:
    """One policy as listed: name, source, scope, mode, rules."""

    name: str
    source: str  # file | pushed
    file: str
    line: int
    org: str | None
    team: str | None
    environment: str | None
    mode: str
    rules: int
    description: str

    @property
    def scope(self) -> str:
        keys = (("org", self.org), ("team", self.team), ("environment", self.environment))
        return ", ".join(f"{k}={v}" for k, v in keys if v is not None) or "everyone"


@dataclass(frozen=True, slots=True)
class RuleRow:
    """A rule in force for a scope, with its origin and mode."""

    policy: str
    rule: str
    type: str
    origin: str  # own | inherited | overriding
    overrides: tuple[str, ...]
    locked: bool
    mode: str  # enforce | shadow
    source: str


@dataclass
class TreeNode:
    """organisation > team > environment, with the policies defined exactly there."""

    label: str
    query: dict[str, str]
    policies: list[str]
    children: list[TreeNode]


def rows_of(listing: Any) -> list[PolicyRow]:
    """ListPoliciesResponse -> rows, ordered by scope then name."""
    rows = [
        PolicyRow(
            name=p.name,
            source=p.source,
            file=p.file,
            line=p.line,
            org=p.org if p.HasField("org") else None,
            team=p.team if p.HasField("team") else None,
            environment=p.environment if p.HasField("environment") else None,
            mode=p.mode,
            rules=p.rules,
            description=p.description,
        )
        for p in listing.policies
    ]
    return sorted(rows, key=lambda r: (r.org or "", r.team or "", r.environment or "", r.name))


def tree(rows: list[PolicyRow]) -> TreeNode:
    """The scope tree: everyone, then each organisation, its teams, their environments."""
    root = TreeNode("everyone", {}, [], [])
    nodes: dict[tuple[str | None, ...], TreeNode] = {(): root}

    def node(path: tuple[str | None, ...]) -> TreeNode:
        found = nodes.get(path)
        if found is not None:
            return found
        parent = node(path[:-1])
        keys = ("org", "team", "env")
        query = {k: v for k, v in zip(keys, path, strict=False) if v is not None}
        label = path[-1] if path[-1] is not None else "(any)"
        made = TreeNode(f"{keys[len(path) - 1]} {label}", query, [], [])
        parent.children.append(made)
        nodes[path] = made
        return made

    for r in rows:
        path: tuple[str | None, ...] = (r.org, r.team, r.environment)
        while path and path[-1] is None:
            path = path[:-1]
        node(path).policies.append(r.name)
    return root


def _uncompiled(policy: Policy, index: int) -> CompiledPolicy:
    # The dashboard scans no text: a policy without its pattern databases (compiling them for
    # 100 policies takes seconds), enough for the compiler's own scope resolution below.
    cp = CompiledPolicy.__new__(CompiledPolicy)
    cp.policy, cp.index = policy, index
    cp.request_patterns, cp.request_targets = None, ()
    cp.response_patterns, cp.response_targets = None, ()
    cp.built = {}  # no detectors nor classifiers: nothing is scanned here
    return cp


class RulesSnapshot(Snapshot):
    """``Snapshot.resolve`` (which policies apply to a scope, which rules are in force and
    where each comes from) over policies that are not compiled for scanning."""

    def __init__(self, policies: tuple[Policy, ...], version: str) -> None:
        self.policies = tuple(_uncompiled(p, i) for i, p in enumerate(policies))
        self.version = version
        self._index = {}
        for cp in self.policies:
            self._index.setdefault(cp.policy.scope.keys, []).append(cp)
        self._by_key = {}
        self._by_policies = {}


class PolicySet:
    """The policies in force, loaded here from their texts; one per policy version."""

    def __init__(self, version: str, texts: dict[str, str], rows: list[PolicyRow]) -> None:
        self.version = version
        self.rows = rows
        self.by_name = {r.name: r for r in rows}
        self.texts = texts  # file name or pushed:<name> -> text
        self.last_error: list[str] = []  # the last refused reload, as ListPolicies says
        policies, self.problems = read_sources(texts.items())
        wanted = set(self.by_name)
        self.policies: tuple[Policy, ...] = tuple(p for p in policies if p.name in wanted)
        self.snapshot: Snapshot | None = RulesSnapshot(self.policies, version)

    def policy(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)

    def effective(self, org: str, team: str, environment: str) -> list[RuleRow]:
        """The rules in force for this scope, least to most specific, with their origin."""
        if self.snapshot is None:
            return []
        es = self.snapshot.resolve(org, team, environment)
        most_specific = es.policies[-1].policy.name if es.policies else ""
        out = []
        for e in es.rules:
            p = e.policy.policy
            if e.overrode:
                origin = "overriding"
            elif e.policy_name != most_specific:
                origin = "inherited"
            else:
                origin = "own"
            out.append(
                RuleRow(
                    policy=p.name,
                    rule=e.rule.id,
                    type=e.rule.type,
                    origin=origin,
                    overrides=e.overrode,
                    locked=e.rule.final,
                    mode="shadow" if p.mode == "log" else "enforce",
                    source="pushed" if is_pushed(p) else f"{p.file}:{e.rule.line}",
                )
            )
        return out

    def applying(self, org: str, team: str, environment: str) -> list[str]:
        """Names of the policies that apply to this scope, least to most specific."""
        if self.snapshot is None:
            return []
        return [cp.policy.name for cp in self.snapshot.resolve(org, team, environment).policies]


def diff(old: str, new: str, name: str) -> list[tuple[str, str]]:
    """A unified diff as (kind, line): kind is add, del, hunk or same."""
    out = []
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), f"{name} (in force)", f"{name} (edited)", lineterm=""
    )
    for line in lines:
        if line.startswith(("+++", "---")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append((kind, line))
    return out
