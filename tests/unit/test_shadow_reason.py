"""The reason of a decision that only shadow (``mode: log``) rules fired: the would-be decision
and the reason of the rule that would have taken it, for every rule type (docs/policies.md,
the audit record's ``reason``); an enforced firing keeps its own reason."""

from __future__ import annotations

import pytest

from policy_extproc.policy.decision import Fired, combine


@pytest.mark.parametrize(
    ("type_", "action", "why"),
    [
        ("content_filter", "block", "prompt matches project aurora of rule 'words'"),
        ("pii", "modify", "prompt holds EMAIL (1) of rule 'pii'"),
        ("prompt_injection", "block", "prompt injection suspected in the prompt: override "
         "(score 0.97, heuristic, sensitivity medium) of rule 'injection'"),
    ],
)  # fmt: skip
def test_shadow_only_reason_is_the_would_be_one(type_: str, action: str, why: str) -> None:
    d = combine([Fired("shadow", "r", type_, action, why, mode="log")])
    assert (d.action, d.mode, d.would_decide) == ("allow", "log", action)
    assert d.reason == f"would {action}: {why}"
    assert d.policy is None and d.rule is None  # nothing was enforced


def test_an_enforced_firing_keeps_its_reason_next_to_a_shadow_one() -> None:
    d = combine([Fired("shadow", "s", "content_filter", "block", "would-be", mode="log"),
                 Fired("live", "m", "content_filter", "modify", "redacted x")])  # fmt: skip
    assert (d.action, d.reason, d.would_decide) == ("modify", "redacted x", "block")
    nothing = combine([])
    assert (nothing.action, nothing.reason, nothing.mode) == ("allow", "no rule fired", "enforce")
