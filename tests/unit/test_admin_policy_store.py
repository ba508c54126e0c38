"""PolicyStore with pushed sources, and file reloads through a Kubernetes-style symlink swap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from policy_extproc.errors import PolicyError
from policy_extproc.sources.files import compile_paths
from policy_extproc.sources.store import PolicyStore, is_pushed, pushed_file

BASE = """
policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
    final: true
"""

TEAM = """
policy_name: acme_ml
org: acme
team: ml
rules:
  - type: content_filter
    id: words
    keywords: [classified]
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_pushed_sources_join_the_files(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    store = PolicyStore([str(tmp_path)])
    files_only = store.load()
    store.set_pushed([(pushed_file("acme_ml"), TEAM)])
    both = store.load()
    assert [cp.policy.name for cp in both.policies] == ["acme_base", "acme_ml"]
    assert [is_pushed(cp.policy) for cp in both.policies] == [False, True]
    assert both.version != files_only.version
    assert store.current is both


def test_compile_reports_clashes_between_files_and_pushed_as_check_does(tmp_path: Path) -> None:
    write(tmp_path / "policies", "base.yaml", BASE)
    # Overrides a final rule of the file policy, and reuses its name in a second policy.
    pushed = TEAM.replace("id: words", "id: secrets") + "---\n" + BASE
    candidate = write(tmp_path, "team.yaml", pushed)
    store = PolicyStore([str(tmp_path / "policies")])
    store.load()
    with pytest.raises(PolicyError) as got:
        store.compile([(str(candidate), pushed)])
    with pytest.raises(PolicyError) as check:
        compile_paths([str(tmp_path / "policies"), str(candidate)])
    assert [str(p) for p in got.value.problems] == [str(p) for p in check.value.problems]
    assert any("final" in str(p) for p in got.value.problems)
    assert any("duplicate policy name" in str(p) for p in got.value.problems)


def test_a_bad_pushed_set_keeps_the_last_good_one(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    store = PolicyStore([str(tmp_path)])
    good = store.load()
    store.set_pushed([(pushed_file("x"), "policy_name: x\nrules: [{type: telepathy}]\n")])
    with pytest.raises(PolicyError):
        store.load()
    assert store.current is good
    assert store.last_error is not None and "pushed:x:2" in str(store.last_error)


def test_no_files_but_pushed_policies_is_a_set(tmp_path: Path) -> None:
    store = PolicyStore([str(tmp_path)])
    with pytest.raises(PolicyError, match="no policy files found"):
        store.load()
    store.set_pushed([(pushed_file("acme_ml"), TEAM)])
    assert len(store.load()) == 1


def configmap_update(volume: Path, files: dict[str, str], stamp: str) -> None:
    """What the kubelet does: write a new timestamped directory, swap ..data, drop the old one."""
    new = volume / f"..{stamp}"
    new.mkdir()
    for name, text in files.items():
        (new / name).write_text(text)
        os.utime(new / name, (1_700_000_000, 1_700_000_000))  # same mtime every time
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    tmp = volume / "..data_tmp"
    tmp.symlink_to(new.name)
    os.replace(tmp, volume / "..data")  # rename(2): atomic
    for name in files:
        link = volume / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    if old is not None:
        for f in (volume / old).iterdir():
            f.unlink()
        (volume / old).rmdir()


def test_a_configmap_symlink_swap_is_seen_and_reloaded(tmp_path: Path) -> None:
    volume = tmp_path / "config"
    volume.mkdir()
    configmap_update(volume, {"policies.yaml": BASE}, "2024_01_01_00_00_00.1")
    store = PolicyStore([str(volume)])
    first = store.load()
    assert not store.changed()
    # Same name, same size, same mtime: only the resolved target tells the files apart.
    changed = BASE.replace("confidential", "secretwords!")
    assert len(changed) == len(BASE)
    configmap_update(volume, {"policies.yaml": changed}, "2024_01_01_00_01_00.2")
    assert store.changed()
    second = store.load()
    assert second.version != first.version
    rules = second.policies[0].policy.rules
    assert rules[0].keywords == ("secretwords!",)  # type: ignore[attr-defined]
    assert not store.changed()
    # The timestamped directories and ..data are never read as policy files themselves.
    assert [cp.policy.file for cp in second.policies] == [str(volume / "policies.yaml")]
