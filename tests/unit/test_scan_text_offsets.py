"""Hits in non-ASCII text map back to character offsets through checkpoints, exactly."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.policy.scan import ScanText


@dataclass
class Part:
    text: str
    group: int = -1


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=20), st.integers(min_value=300, max_value=1000))
def test_checkpoints_count_the_characters_before_every_byte(unit: str, times: int) -> None:
    text = unit * times  # up to 80 KB of UTF-8: many checkpoints
    scan = ScanText([Part("ascii first"), Part(text)])
    raw = scan.encoded[1]  # the part's canonical text, as scanned
    for b in [*range(0, len(raw), max(1, len(raw) // 997)), len(raw)]:
        assert scan._chars(1, b) == len(raw[:b].decode(errors="ignore"))


def test_a_hit_far_into_a_long_non_ascii_part_maps_to_its_characters() -> None:
    text = "Ünïcödé ✓ " * 5000 + "secret"
    scan = ScanText([Part(text)])
    start = scan.data.index(b"secret")
    [(part, s, e)] = scan.locate(start, start + len(b"secret"))
    assert (part, text[s:e]) == (0, "secret")
