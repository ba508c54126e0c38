"""Policy files and directories -> (file name, text) sources, handed to the loader.

The core (``policy.loader``) parses text; reading the files named on the command line, a
ConfigMap volume's tree or a single file, is done here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import PolicyError, Problem
from ..policy.compiler import Snapshot, compile_read
from ..policy.loader import POLICY_EXTENSIONS, read_sources
from ..policy.model import NO_SECRETS, Policy, Secrets
from .secrets import read_secrets

Source = tuple[str, str]  # (file name, text), as the loader reads them


def policy_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The policy files named by ``paths``; directories are read recursively, in sorted order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # Kubernetes ConfigMap volumes hold "..data"/"..2024_..." entries: skip dot paths.
            # Policy tests (``*_test.yaml``, see ``policytest``) may sit beside the policies.
            found = (x for x in p.rglob("*") if x.suffix in POLICY_EXTENSIONS and x.is_file()
                     and not x.stem.endswith("_test"))  # fmt: skip
            files.extend(sorted(x for x in found
                                if not any(part.startswith(".") for part in
                                           x.relative_to(p).parts)))  # fmt: skip
        else:
            files.append(p)
    return files


def read_files(files: Iterable[Path]) -> tuple[list[Source], list[Problem]]:
    """The text of each file, and a problem for each one that cannot be read as UTF-8."""
    sources: list[Source] = []
    problems: list[Problem] = []
    for path in files:
        try:
            sources.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), 0, f"cannot read: {exc}"))
    return sources, problems


def no_files(paths: Iterable[str | os.PathLike[str]]) -> Problem:
    return Problem(", ".join(map(str, paths)), 0,
                   f"no policy files found ({'/'.join(POLICY_EXTENSIONS)})")  # fmt: skip


def load_paths(paths: Iterable[str | os.PathLike[str]]) -> tuple[Policy, ...]:
    """Policies from files and directories; raises ``PolicyError`` with every problem found."""
    policies, problems = read_paths(paths)
    if problems:
        raise PolicyError(problems)
    return policies


def read_paths(
    paths: Iterable[str | os.PathLike[str]], secrets: Secrets = NO_SECRETS
) -> tuple[tuple[Policy, ...], list[Problem]]:
    """The valid policies of files and directories, and the problems of the rest (with the
    ``secrets`` the set will compile with: ``policy.loader.read_sources``)."""
    paths = list(paths)
    files = policy_files(paths)
    sources, problems = read_files(files)
    if not files and not problems:
        problems.append(no_files(paths))
    policies, more = read_sources(sources, secrets)
    return policies, problems + more


def compile_paths(paths: Sequence[str]) -> Snapshot:
    """Load and compile policy files; raises ``PolicyError`` with every problem found."""
    secrets = read_secrets()
    return compile_read(*read_paths(paths, secrets), secrets)
