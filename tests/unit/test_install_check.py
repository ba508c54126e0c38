"""deploy/install.py: the lock split, and the check that no distribution's file was overwritten,
on a site-packages folder made here (two distributions, each with a RECORD)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def install() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_install", REPO_ROOT / "deploy/install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def distribution(site: Path, name: str, files: dict[str, bytes]) -> None:
    """Install ``files`` as distribution ``name``: the files, METADATA and a RECORD."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    rows = []
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(f"{rel},{_hash(data)},{len(data)}")
    rows.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


def test_an_undeclared_shared_file_is_a_problem(install: ModuleType, tmp_path: Path) -> None:
    distribution(tmp_path, "stubs-a", {"pkg/x_pb2.py": b"old"})
    distribution(tmp_path, "stubs-b", {"pkg/x_pb2.py": b"new"})  # installed last: b's bytes
    [problem] = install.check([str(tmp_path)], overlaps={})
    assert problem.path == "pkg/x_pb2.py" and "stubs-a, stubs-b" in problem.message


def test_a_declared_overlap_must_hold_its_owners_bytes(install: ModuleType, tmp_path: Path) -> None:
    distribution(tmp_path, "owner", {"pkg/x_pb2.py": b"right", "pkg/y.py": b"y"})
    distribution(tmp_path, "bundler", {"pkg/x_pb2.py": b"stale"})  # overwrote the owner's
    overlaps = {"pkg/": "owner"}
    [problem] = install.check([str(tmp_path)], overlaps=overlaps)
    assert "owner's RECORD" in problem.message
    (tmp_path / "pkg/x_pb2.py").write_bytes(b"right")  # what installing the owner last does
    assert install.check([str(tmp_path)], overlaps=overlaps) == []


def test_a_changed_or_missing_file_is_a_problem(install: ModuleType, tmp_path: Path) -> None:
    distribution(tmp_path, "one", {"a.py": b"a", "b.py": b"b"})
    (tmp_path / "a.py").write_bytes(b"edited")
    (tmp_path / "b.py").unlink()
    problems = {p.path: p.message for p in install.check([str(tmp_path)], overlaps={})}
    assert set(problems) == {"a.py", "b.py"}
    assert "missing" in problems["b.py"]


def test_split_lock_puts_the_owners_last(install: ModuleType) -> None:
    lock = (REPO_ROOT / "requirements.lock").read_text()
    first, last = install.split_lock(lock, install.OVERLAPS.values())
    owners = {line.split("==")[0] for line in last.splitlines() if "==" in line}
    assert owners == {"opentelemetry-proto", "googleapis-common-protos"}
    assert "xds-protos==" in first and "opentelemetry-proto==" not in first
    # Every pin, in one part or the other, with all its hashes (pip --require-hashes).
    entry = re.compile(r"^(\S+==\S+) \\\n((?:    --hash=sha256:\w+(?: \\)?\n)+)", re.M)
    assert sorted(entry.findall(first + last)) == sorted(entry.findall(lock))
    assert len(entry.findall(lock)) == lock.count("==")
