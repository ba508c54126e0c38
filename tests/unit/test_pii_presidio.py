"""Presidio's recognizer test cases as a conformance suite (tests/data/pii/presidio_cases.yaml).

Each case runs our detector with only the case's type enabled, as Presidio's test runs one
recognizer. We agree with a case when we find every span Presidio expects and nothing it does
not (its weak spans we may find or not). Where we disagree on purpose the case says what we
find instead (``ours``) and why; the test holds us to that too, so a change either way shows.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy_extproc.detect.pii import PiiDetector

DATA = Path(__file__).resolve().parent.parent / "data" / "pii" / "presidio_cases.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(DATA.read_text())["cases"]


@cache
def _detector(entity: str) -> PiiDetector:
    return PiiDetector([entity])


def found(case: dict[str, Any]) -> list[list[int]]:
    """Our spans for the case's text, as [start, end] pairs."""
    return [[m.start, m.end] for m in _detector(case["entity"]).find(case["text"])]


def agrees(case: dict[str, Any], ours: list[list[int]]) -> bool:
    """True when ours is what Presidio's case expects."""
    spans, weak = case["spans"], case.get("weak", [])
    if len(spans) + len(weak) < case["count"]:  # Presidio's test checks the count only
        return len(ours) == case["count"]
    return all(s in ours for s in spans) and all(s in spans or s in weak for s in ours)


def _id(case: dict[str, Any]) -> str:
    return f"{case['file'].removeprefix('test_').removesuffix('_recognizer.py')}:{case['text']}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_presidio_case(case: dict[str, Any]) -> None:
    ours = found(case)
    if "why" in case:
        assert ours == case["ours"], f"we now find {ours}: still on purpose? ({case['why']})"
        assert not agrees(case, ours), "we agree with Presidio now: drop the note"
    else:
        assert agrees(case, ours), f"Presidio expects {case['spans']}, we find {ours}"


def test_every_case_has_a_reason_or_agrees() -> None:
    noted = [c for c in CASES if "why" in c]
    assert all(c["why"].strip() for c in noted)
    # Most of Presidio's cases are ours too; the ones we differ on are few and explained.
    assert len(noted) < len(CASES) // 10
