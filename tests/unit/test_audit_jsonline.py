"""audit/jsonline.py: the fast audit line is the json module's line, byte for byte, or its error."""

from __future__ import annotations

import copy
import enum
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.audit import jsonline
from policy_extproc.audit.record import AuditRecord
from policy_extproc.audit.verify import line_hash

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: the json module's path
    | st.floats()  # NaN, infinities, 1e-05 and the rest: json's text for each
    | st.text()  # lone surrogates included: both paths refuse them
)
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=25,
)
lines = st.dictionaries(st.text(), values, max_size=8)


def _outcome(encode: Any, line: dict[str, Any]) -> tuple[Any, ...]:
    line = copy.deepcopy(line)
    try:
        data = encode(line)
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        return ("raised", type(exc))
    return ("ok", data, line["hash"])


@settings(max_examples=400, deadline=None)
@given(lines)
def test_fast_line_is_the_json_modules_line(line: dict[str, Any]) -> None:
    assert _outcome(jsonline.chained, line) == _outcome(jsonline.slow, line)


def test_a_record_takes_the_fast_path_and_verifies() -> None:
    record = AuditRecord(
        decision="modify",
        policy="acme_baseline",
        rule="personal-data",
        reason="redacted",
        environment="prod",
        timestamp="2026-12-03T06:21:12.583339Z",
        user="ana",
        request_id="r-1",
        cost_usd=1e-05,  # json writes 1e-05, orjson alone 1e-5
        latency_us=812,
    ).to_dict()
    record["prev_hash"] = "0" * 64
    line = dict(record)
    data = jsonline.chained(line)
    assert data == jsonline.slow(dict(record))
    parsed = json.loads(data)
    assert parsed["cost_usd"] == 1e-05 and b'"cost_usd":1e-05' in data
    assert parsed["hash"] == line["hash"] == line_hash(parsed)
    assert data.endswith(b"\n") and data.index(b'"decision"') < data.index(b'"hash"')


class Colour(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    "odd",
    [
        {"k": Colour.RED},  # a str subclass
        {"k": {1: "int key"}},
        {"k": 2**70},
        {"k": float("nan")},
        {"k": "\udc80"},  # a lone surrogate: refused by both
        {"k": object()},  # not JSON: refused by both
    ],
)
def test_values_off_the_fast_path_give_the_json_modules_answer(odd: dict[str, Any]) -> None:
    assert _outcome(jsonline.chained, odd) == _outcome(jsonline.slow, odd)


def test_a_circular_value_is_refused_as_json_refuses_it() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        jsonline.chained({"k": loop})
