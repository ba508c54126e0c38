"""The pure core (STYLE.md): policy/, detect/ and llm/ import nothing from grpc, redis,
opentelemetry or asyncio, directly or through anything they import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "policy_extproc"
CORE = ("policy", "detect", "llm")
FORBIDDEN = ("grpc", "redis", "opentelemetry", "asyncio")

_PROBE = """
import importlib, json, pkgutil, sys
for name in {core!r}:
    pkg = importlib.import_module("policy_extproc." + name)
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
loaded = [m for m in sys.modules if m.startswith("policy_extproc.")]
bad = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print(json.dumps({{"loaded": sorted(loaded), "forbidden": bad}}))
"""


def test_importing_the_core_loads_no_io_library() -> None:
    """In a fresh interpreter: every module of the core, and what they pull in."""
    code = _PROBE.format(core=CORE, forbidden=FORBIDDEN)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert "policy_extproc.policy.evaluator" in result["loaded"]
    assert "policy_extproc.detect.patterns" in result["loaded"]
    assert result["forbidden"] == []
    # Nor does the core reach into the edges of the package.
    edges = [m for m in result["loaded"] if m.split(".")[1] not in (*CORE, "errors")]
    assert edges == []


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize(
    "path",
    sorted(p for name in CORE for p in (PACKAGE / name).rglob("*.py")),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_io_import_in_source(path: Path) -> None:
    """Also imports a module makes lazily, inside functions or under TYPE_CHECKING."""
    bad = [n for n in _imports(path) if n.split(".")[0] in FORBIDDEN]
    assert bad == []
