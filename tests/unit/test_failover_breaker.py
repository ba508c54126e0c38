"""The failover rule's thresholds reach the breaker: a count, or a ratio over enough requests."""

from __future__ import annotations

from policy_extproc.enforce.failover import record, watching
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.loader import load_sources
from policy_extproc.state.memory import MemoryState

POLICY = """
policy_name: resilience
org: acme
rules:
  - type: failover
    provider: openai
    fallbacks: [azure-openai]
    failure_threshold: 2
    {ratio}
    window: 60s
    cooldown: 60s
"""


async def statuses_until_open(ratio: str, statuses: list[int]) -> list[str]:
    snapshot = Snapshot(load_sources([("p.yaml", POLICY.format(ratio=ratio))]))
    rule = watching(snapshot.resolve("acme", None, None), "openai")
    assert rule is not None
    state = MemoryState()
    seen = []
    now = 1_767_225_600.0  # the statuses come within one window: the time is handed in
    for status in statuses:
        await record(state, rule, "openai", status, now=now)
        seen.append((await state.breaker_state("openai", cooldown_s=60, now=now)).status)
    return seen


async def test_a_count_threshold_opens_on_the_second_failure() -> None:
    seen = await statuses_until_open("", [200, 200, 200, 503, 200, 502])
    assert seen == ["closed"] * 5 + ["open"]


async def test_a_ratio_ignores_the_count_and_waits_for_min_requests() -> None:
    ratio = "failure_ratio: 0.5\n    min_requests: 4"
    # 2 failures (the count threshold) in 3 requests: too few requests to judge.
    seen = await statuses_until_open(ratio, [503, 200, 503, 200, 200, 503, 429])
    # outcomes: 1/1, 1/2, 2/3 (< min_requests), 2/4 = half -> open
    assert seen == ["closed", "closed", "closed", "open", "open", "open", "open"]
    healthy = await statuses_until_open(ratio, [200, 200, 503, 200, 200, 503, 200])
    assert healthy == ["closed"] * 7  # never more than a third failed
