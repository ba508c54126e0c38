"""No import circle in the package: the module graph, read from the syntax tree, has no cycle.

Every import counts: at the top of a module, inside a function (a lazy import that dodges a
circle at load time is still a circle in the design) and under ``TYPE_CHECKING``. An edge goes
to the module imported (``from .a import b`` is ``a``, or ``a.b`` when that is a module), not to
the packages above it. The generated ``_proto`` modules are left out.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "policy_extproc"

# Circles in files owned by other helpers, to be broken there; the lead removes the mark after
# merging. A mark that no longer matches a circle fails, so it cannot outlive its reason.
KNOWN: dict[frozenset[str], str] = {}


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` but the generated ones."""
    out: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if "_proto" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports."""
    mods = modules(package)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module
                           for a in node.names]  # fmt: skip
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def a_cycle(edges: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """One cycle through the component, as the path a reader follows: a -> b -> ... -> a."""
    start = min(component)
    came: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(edges[v] & component):
            if w == start:  # back to the start: walk the way here backwards
                path = [v]
                while path[-1] != start:
                    path.append(came[path[-1]])
                return [*reversed(path), start]
            if w not in came:
                came[w] = v
                queue.append(w)
    raise AssertionError("a strongly connected component has a cycle")


def describe(edges: dict[str, set[str]], component: frozenset[str]) -> str:
    short = [m.removeprefix("policy_extproc.") for m in a_cycle(edges, component)]
    return " -> ".join(short)


def test_no_import_circle() -> None:
    edges = graph(PACKAGE)
    assert "policy_extproc.policy.evaluator" in edges["policy_extproc.enforce.pipeline"]
    found = circles(edges)
    new = [describe(edges, c) for c in found if c not in KNOWN]
    assert new == [], "import circle(s): " + "; ".join(new)
    gone = [sorted(k) for k in KNOWN if k not in found]
    assert gone == [], "a known circle is gone (or changed): update KNOWN"


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "files",
    [
        {"a.py": "from . import b\n", "b.py": "from .a import x\n"},
        {"a.py": "def f():\n    from .b import y\n", "b.py": "import pkg.a\n"},
        {
            "a.py": "import typing\nif typing.TYPE_CHECKING:\n    from .sub.c import z\n",
            "sub/__init__.py": "",
            "sub/c.py": "from ..b import y\n",
            "b.py": "from .a import x\n",
        },
    ],
    ids=["top-level", "lazy", "type-checking-through-a-subpackage"],
)
def test_the_checker_finds_a_circle(tmp_path: Path, files: dict[str, str]) -> None:
    edges = graph(_package(tmp_path, files))
    (component,) = circles(edges)
    cycle = a_cycle(edges, component)
    assert cycle[0] == cycle[-1] == "pkg.a" and set(cycle) == component


def test_the_checker_sees_no_circle_in_a_tree(tmp_path: Path) -> None:
    files = {"a.py": "from . import b\nfrom .sub import c\n", "b.py": "import pkg.sub.c\n",
             "sub/__init__.py": "from . import c\n", "sub/c.py": "import json\n"}  # fmt: skip
    edges = graph(_package(tmp_path, files))
    assert edges["pkg.a"] == {"pkg.b", "pkg.sub.c"}
    assert circles(edges) == []


def test_metrics_is_at_the_top_of_the_graph() -> None:
    """Metrics are fed, not fetched: the engine and servicer take a sink and a callback
    (``on_phase``), so only the process's assembly (server) and the CLI import ``metrics``."""
    edges = graph(PACKAGE)
    importers = sorted(
        m
        for m, targets in edges.items()
        if not m.startswith("policy_extproc.metrics")
        and any(t.startswith("policy_extproc.metrics") for t in targets)
    )
    assert importers == ["policy_extproc.cli.options", "policy_extproc.server"]
