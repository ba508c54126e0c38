"""The generated code in policy_extproc/_proto is what ``make protos`` makes of protos/ now."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
GENERATED = ROOT / "policy_extproc" / "_proto"


# The generator's own version, which protoc writes into the code (grpcio-tools' in the _grpc
# modules, protobuf's in the _pb2 ones): a fresh install takes the newest release, so these
# lines differ from the committed ones without the code being stale.
_VERSION_LINES = re.compile(
    r"^(?:GRPC_GENERATED_VERSION = |# Protobuf Python Version: ).*$"
    r"|ValidateProtobufRuntimeVersion\([^)]*\)",
    re.MULTILINE,
)


def generated_files(root: Path) -> dict[str, str]:
    # Only what protoc writes: the __init__.py files that make the directories packages are ours.
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*_pb2*.py*"))
    }


def _without_versions(code: str) -> str:
    return _VERSION_LINES.sub("", code)


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    sources = sorted(str(p.relative_to(ROOT)) for p in PROTOS.glob("policy_extproc/v1/*.proto"))
    assert sources, "no .proto files found"
    # The command of the Makefile's `protos` target, into a scratch directory.
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", *sources],
        cwd=ROOT,
        check=True,
    )  # fmt: skip
    fresh, committed = generated_files(tmp_path), generated_files(GENERATED)
    assert sorted(fresh) == sorted(committed), "run `make protos`: generated files differ"
    stale = [n for n in fresh if _without_versions(fresh[n]) != _without_versions(committed[n])]
    assert not stale, f"run `make protos`: out of date: {', '.join(stale)}"


def test_the_messages_import_under_their_proto_package() -> None:
    from policy_extproc._proto import admin_pb2, decision_pb2

    assert admin_pb2.DESCRIPTOR.package == "policy_extproc.v1"
    assert admin_pb2.__name__ == "policy_extproc.v1.admin_pb2"
    service = admin_pb2.DESCRIPTOR.services_by_name["PolicyAdmin"]
    assert service.full_name == "policy_extproc.v1.PolicyAdmin"
    record = decision_pb2.DecisionRecord(decision="block", policy="p")
    assert record.HasField("policy") and not record.HasField("rule")
