"""The image's install, replayed without Docker: deploy/Dockerfile's build stage, step by step.

No Docker daemon here, so the build stage's ARG, ENV, WORKDIR, COPY and RUN are carried out in a
temporary folder: the WORKDIR and VENV move under it, COPY copies from the repository, RUN runs
in sh with the base interpreter as ``python`` (the image's is python:3.11, so is ours). pip
installs requirements.lock from PyPI (or pip's cache) exactly as the image does. Then the venv
runs the image's ENTRYPOINT with the final stage's ENV and the OTLP exporter on, against a real
OTLP receiver: it must become SERVING on gRPC health and export the span of a decision.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as auth
from envoy.service.auth.v3 import external_auth_pb2_grpc as authg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.envoy_harness import REPO_ROOT
from tests.otlp_receiver import OtlpReceiver

# The install (a few dozen wheels, bytecode compiled as the image has it) is the slow part: about
# 40 s on an idle 2-core machine, several times that on a busy one. A bound, not a measure.
pytestmark = [pytest.mark.e2e, pytest.mark.image, pytest.mark.timeout(900)]

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str


def parse(text: str) -> list[list[Instruction]]:
    """The Dockerfile's stages, each a list of instructions (continuations joined)."""
    stages: list[list[Instruction]] = [[]]  # stage 0: the ARGs before the first FROM
    logical = re.sub(r"\\\n(?:[ \t]*#[^\n]*\n)*", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), value)


def assignments(args: str) -> dict[str, str]:
    return dict(part.split("=", 1) if "=" in part else (part, "") for part in shlex.split(args))


class Replay:
    """Carries out one stage's instructions under ``root``; ARG values can be overridden."""

    def __init__(self, root: Path, globals_: list[Instruction], overrides: dict[str, str]):
        self.root, self.overrides = root, overrides
        self.args = {
            k: overrides.get(k, v) for i in globals_ for k, v in assignments(i.args).items()
        }
        bin_dir = root / "image-bin"
        bin_dir.mkdir(parents=True)
        # The image's `python`: the interpreter this venv was made from, not the venv.
        base = Path(getattr(sys, "_base_executable", sys.executable))
        (bin_dir / "python").symlink_to(base)
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
        for name in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_FIND_LINKS", "PIP_INDEX_URL"):
            if name in os.environ:  # how this machine reaches the index, nothing else
                self.env[name] = os.environ[name]
        self.cwd = root

    def path(self, value: str) -> Path:
        value = expand(value, {**self.env, **self.args})
        return Path(value) if value.startswith(str(self.root)) else self.cwd / value

    def run(self, stage: list[Instruction]) -> None:
        for ins in stage:
            getattr(self, f"do_{ins.keyword.lower()}", self.unknown)(ins)

    def unknown(self, ins: Instruction) -> None:
        pytest.fail(f"Dockerfile build stage: {ins.keyword} is not replayed by this test")

    def do_from(self, ins: Instruction) -> None:
        image = expand(ins.args.split()[0], self.args)
        version = re.match(r"python:(\d+)\.(\d+)", image)
        assert version, f"the build stage is not a python image: {image}"
        assert tuple(map(int, version.groups())) == sys.version_info[:2], image

    def do_arg(self, ins: Instruction) -> None:
        # A stage's ARG: a build argument (override) wins, then its default, then the global's.
        for k, v in assignments(ins.args).items():
            self.args[k] = self.overrides.get(k, v or self.args.get(k, ""))

    def do_env(self, ins: Instruction) -> None:
        for k, v in assignments(ins.args).items():
            self.env[k] = expand(v, {**self.env, **self.args})

    def do_workdir(self, ins: Instruction) -> None:
        self.cwd = self.root / ins.args.lstrip("/")
        self.cwd.mkdir(parents=True, exist_ok=True)

    def do_copy(self, ins: Instruction) -> None:
        *sources, dest = shlex.split(ins.args)
        assert not any(s.startswith("--") for s in sources), f"COPY options: {ins.args}"
        target = self.path(dest)
        for source in sources:
            src = REPO_ROOT / source
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                into = target / src.name if dest.endswith("/") or len(sources) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into)

    def do_run(self, ins: Instruction) -> None:
        proc = subprocess.run(
            ["sh", "-c", ins.args],
            cwd=self.cwd,
            env={**self.env, **self.args},
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
        assert proc.returncode == 0, f"RUN {ins.args}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Instruction]]:
    """The venv the build stage made, and the final stage's instructions."""
    root = tmp_path_factory.mktemp("image")
    globals_, build, final = parse(DOCKERFILE.read_text())
    venv = root / "venv"
    replay = Replay(root, globals_, {"VENV": str(venv)})
    replay.run(build)
    return venv, final


def test_the_dockerfile_installs_through_deploy_install_py() -> None:
    _, build, _ = parse(DOCKERFILE.read_text())
    runs = [i.args for i in build if i.keyword == "RUN"]
    assert any("install.py --lock requirements.lock" in r for r in runs)
    assert not any(re.search(r"\bpip\b", r) for r in runs), "pip only through deploy/install.py"


def test_the_image_install_leaves_no_file_overwritten(
    image: tuple[Path, list[Instruction]],
) -> None:
    venv, _ = image
    script = REPO_ROOT / "deploy" / "install.py"
    proc = subprocess.run(
        [str(venv / "bin" / "python"), str(script), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude", "policy-extproc"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    locked = re.findall(r"^(\S+==\S+) \\$", (REPO_ROOT / "requirements.lock").read_text(), re.M)
    assert sorted(map(_pin, freeze)) == sorted(map(_pin, locked))


def _pin(requirement: str) -> str:
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def _check_request() -> auth.CheckRequest:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    http = ac.AttributeContext.HttpRequest(
        id="image-1", method="POST", path="/v1/chat/completions", host="llm.local"
    )
    http.raw_body = body.encode()
    http.headers.update(
        {"x-org-id": "acme", "content-type": "application/json", "content-length": str(len(body))}
    )
    return auth.CheckRequest(
        attributes=ac.AttributeContext(request=ac.AttributeContext.Request(http=http))
    )


def test_the_image_serves_with_the_otlp_exporter_on(
    image: tuple[Path, list[Instruction]], tmp_path: Path
) -> None:
    venv, final = image
    entrypoint = json.loads(next(i.args for i in final if i.keyword == "ENTRYPOINT"))
    assert entrypoint == ["policy-extproc", "serve"]
    env: dict[str, str] = {"VENV": str(venv), "PATH": "/usr/bin:/bin"}
    for ins in (i for i in final if i.keyword == "ENV"):
        for k, v in assignments(ins.args).items():
            env[k] = expand(v, env)
    assert env["PATH"].startswith(f"{venv}/bin:")
    with OtlpReceiver() as receiver:
        env.update(
            POLICY_EXTPROC_POLICIES=str(REPO_ROOT / "deploy" / "base" / "policies"),
            POLICY_EXTPROC_LISTEN="127.0.0.1:0",
            POLICY_EXTPROC_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
            POLICY_EXTPROC_OTLP_ENDPOINT=receiver.endpoint,
            POLICY_EXTPROC_ADMIN_LISTEN="off",
        )
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [shutil.which(entrypoint[0], path=env["PATH"]) or "", *entrypoint[1:]],
                env=env,
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            port = _wait_for_port(proc, log)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=10
                )
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                answer = authg.AuthorizationStub(channel).Check(_check_request(), timeout=10)
                assert answer.WhichOneof("http_response") in ("ok_response", "denied_response")
        finally:
            proc.terminate()
            proc.wait(30)
        assert proc.returncode == 0, log.read_text()
        # Closing the sink exports what is pending: the decision's span reached the collector.
        [span] = receiver.wait_for_spans(1)
        assert span.name == "policy.decision"
        assert span.resource["service.name"] == "policy-extproc"


def _wait_for_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    # Events, not time: the line the sidecar logs once it is SERVING, or its exit; the bound
    # is only for a sidecar that hangs.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if found := re.search(r"serving on \S+:(\d+)", log.read_text()):
            return int(found.group(1))
        if proc.poll() is not None:
            pytest.fail(f"serve exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"serve not SERVING within 60 s:\n{log.read_text()}")
