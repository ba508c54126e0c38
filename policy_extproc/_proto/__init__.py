"""Generated code of ``protos/`` (``make protos``); import the messages from here.

protoc names Python modules after the proto files (``policy_extproc/v1/admin.proto`` imports
``decision.proto`` as ``from policy_extproc.v1 import decision_pb2``) and cannot write relative
imports. Rather than edit generated files, the directory that holds them is added to this
package's search path, so ``policy_extproc.v1`` is the proto package ``policy_extproc.v1``, its
files byte for byte what protoc wrote (tests/unit/test_protos_up_to_date.py compares them).
Import them as ``policy_extproc.v1.*`` only (here): a second name would load them twice.
"""

from __future__ import annotations

from pathlib import Path

import policy_extproc

_GENERATED = str(Path(__file__).with_name("policy_extproc"))
if _GENERATED not in policy_extproc.__path__:
    policy_extproc.__path__.append(_GENERATED)

from policy_extproc.v1 import admin_pb2, admin_pb2_grpc, decision_pb2  # noqa: E402

__all__ = ["admin_pb2", "admin_pb2_grpc", "decision_pb2"]
