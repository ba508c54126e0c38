"""The pure core (STYLE.md): policy/, detect/ and llm/ do no I/O.

They import nothing from grpc, redis, opentelemetry or asyncio, directly or through anything
they import (checked in a fresh interpreter), and their source reads no file, no environment
variable and no clock, and starts no thread or process (checked on the syntax tree: imports,
lazy ones included, and for ``os`` and ``io`` every attribute used). Files, pushed policies and
the catalog file are read by ``policy_extproc.sources``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "policy_extproc"
CORE = ("policy", "detect", "llm")
# Loaded by the core, even indirectly: the I/O libraries of the edges.
FORBIDDEN = ("grpc", "redis", "opentelemetry", "asyncio")
# Imported by the core's own source: the clock, threads, processes, sockets, the file system.
FORBIDDEN_IMPORTS = (
    *FORBIDDEN,
    "_thread",
    "concurrent",
    "glob",
    "multiprocessing",
    "pathlib",
    "selectors",
    "shutil",
    "signal",
    "socket",
    "subprocess",
    "tempfile",
    "threading",
    "time",
)
# ``os`` and ``io`` may be imported for what does no I/O; any other attribute is I/O
# (os.environ, os.getenv, os.stat, os.path, io.open, ...).
ALLOWED_ATTRIBUTES = {
    "os": frozenset({"PathLike", "fspath", "fsencode", "fsdecode", "sep", "linesep"}),
    "io": frozenset({"BytesIO", "StringIO"}),
}
# Calls that read a file or the clock whatever they are called on (``open()``,
# ``Path.read_text``, ``importlib.resources`` traversables, ``datetime.now``).
FORBIDDEN_CALLS = frozenset({"open"})
FORBIDDEN_METHODS = frozenset(
    {"open", "read_text", "read_bytes", "write_text", "write_bytes", "now", "today", "utcnow"}
)

# What the core still does, each with the reason or the owner who removes it. The test fails
# on an entry that is no longer needed, so a mark goes when its reason does.
ALLOWED: dict[str, dict[str, str]] = {}

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
    # Nor does the core reach into the edges of the package (sources included).
    edges = [m for m in result["loaded"] if m.split(".")[1] not in (*CORE, "errors")]
    assert edges == []


def io_uses(source: str) -> set[str]:
    """The I/O a module's source does, as short names: ``import time``, ``os.environ``,
    ``open()``, ``.read_text()``."""
    found: set[str] = set()
    aliases: dict[str, str] = {}  # local name -> "os" / "io"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in FORBIDDEN_IMPORTS:
                    found.add(f"import {top}")
                elif top in ALLOWED_ATTRIBUTES:
                    aliases[(a.asname or a.name).split(".")[0]] = top
                    if "." in a.name:  # import os.path
                        found.add(a.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_IMPORTS:
                found.add(f"import {top}")
            elif top in ALLOWED_ATTRIBUTES:
                for a in node.names:
                    if node.module != top or a.name not in ALLOWED_ATTRIBUTES[top]:
                        found.add(f"{node.module}.{a.name}")
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            module = aliases[node.value.id]
            if node.attr not in ALLOWED_ATTRIBUTES[module]:
                found.add(f"{module}.{node.attr}")
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                found.add(f"{node.func.id}()")
            elif isinstance(node.func, ast.Attribute) and node.func.attr in FORBIDDEN_METHODS:
                found.add(f".{node.func.attr}()")
    return found


CORE_FILES = sorted(p for name in CORE for p in (PACKAGE / name).rglob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_io_in_source(path: Path) -> None:
    """Also imports a module makes lazily, inside functions or under TYPE_CHECKING."""
    rel = path.relative_to(PACKAGE).as_posix()
    found = io_uses(path.read_text(encoding="utf-8"))
    allowed = ALLOWED.get(rel, {})
    assert sorted(found - allowed.keys()) == []
    assert sorted(allowed.keys() - found) == [], "allowed but no longer done: drop the mark"


def test_the_allow_list_names_files_of_the_core() -> None:
    assert [f for f in ALLOWED if not (PACKAGE / f).is_file()] == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import threading", {"import threading"}),
        ("import time as t", {"import time"}),
        ("from concurrent.futures import ThreadPoolExecutor", {"import concurrent"}),
        ("from pathlib import Path", {"import pathlib"}),
        ("def f():\n    import subprocess", {"import subprocess"}),
        ("import os\nos.environ.get('X')", {"os.environ"}),
        ("import os as o\no.getenv('X')", {"os.getenv"}),
        ("from os import environ", {"os.environ"}),
        ("import os.path", {"os.path"}),
        ("import os\nx: os.PathLike[str]\nos.fspath(x)", set()),
        ("import io\nio.BytesIO(b'')\nio.open('f')", {"io.open", ".open()"}),
        ("open('f').read()", {"open()"}),
        ("p.read_text(encoding='utf-8')", {".read_text()"}),
        ("datetime.datetime.now()", {".now()"}),
        ("from datetime import date\ndate(2024, 1, 1)", set()),
    ],
)
def test_what_counts_as_io(source: str, found: set[str]) -> None:
    """The checker itself: each kind of I/O is seen, pure uses of ``os`` and ``io`` are not."""
    assert io_uses(source) == found
