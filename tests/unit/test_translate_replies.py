"""enforce/translate.py: replies as Envoy reads them, built in place; metadata as Struct.update
would build it, strings or not."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from policy_extproc.enforce import translate
from policy_extproc.enforce.envoy_replies import Continue


@pytest.mark.parametrize(
    "metadata",
    [
        {"decision": "allow", "request_id": "r-1", "policy_version": "6aa2"},
        {"decision": "modify", "would_decide": None, "cost": 1.5, "flag": True},  # not all str
    ],
)
def test_metadata_is_what_struct_update_builds(metadata: dict[str, Any]) -> None:
    want = struct_pb2.Struct()
    want.update({translate.NAMESPACE: metadata})
    msg = translate.response(Continue(phase="request_body", metadata=metadata))
    assert msg.dynamic_metadata == want


@pytest.mark.parametrize(
    "phase", ["request_headers", "request_body", "response_headers", "response_body"]
)
def test_an_empty_continue_still_names_its_phase(phase: str) -> None:
    msg = translate.response(Continue(phase=phase))  # type: ignore[arg-type]
    assert msg.WhichOneof("response") == phase
    common = getattr(msg, phase).response
    assert not common.HasField("header_mutation") and not common.HasField("body_mutation")


def test_a_continue_carries_its_mutations_in_its_phase() -> None:
    reply = Continue(
        phase="request_body",
        set_headers=(("content-length", "2"), ("x-policy-provider", "azure")),
        remove_headers=("x-policy-spoofed",),
        body=b"{}",
        clear_route_cache=True,
    )
    common = translate.response(reply).request_body.response
    assert [(h.header.key, h.header.raw_value) for h in common.header_mutation.set_headers] == [
        ("content-length", b"2"),
        ("x-policy-provider", b"azure"),
    ]
    assert all(not h.header.value for h in common.header_mutation.set_headers)  # raw_value only
    assert list(common.header_mutation.remove_headers) == ["x-policy-spoofed"]
    assert common.body_mutation.body == b"{}" and common.clear_route_cache
