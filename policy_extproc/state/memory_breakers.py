"""Circuit breakers of ``MemoryState``: the outcomes of a window, and when a breaker trips."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from policy_extproc.state.base import BreakerState, BreakerStatus


@dataclass(slots=True)
class Breaker:
    open: bool = False
    opened_at: float = 0.0
    failures: deque[float] = field(default_factory=deque)
    successes: deque[float] = field(default_factory=deque)  # kept for failure_ratio only
    touched: float = 0.0


def trips(
    failures: int, successes: int, threshold: int, ratio: float | None, min_requests: int
) -> bool:
    """Whether a closed breaker opens on these outcomes in its window (see breaker_record)."""
    if ratio is None:
        return failures >= threshold
    total = failures + successes
    return failures > 0 and total >= min_requests and failures >= ratio * total


def state_of(provider: str, b: Breaker, now: float, cooldown_s: float) -> BreakerState:
    if not b.open:
        return BreakerState(provider, "closed", len(b.failures), None, None)
    retry_at = b.opened_at + cooldown_s
    status: BreakerStatus = "half_open" if now >= retry_at else "open"
    return BreakerState(provider, status, len(b.failures), b.opened_at, retry_at)
