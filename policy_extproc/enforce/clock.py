"""The request path's clock: the one place its time is read, handed to the engine.

The decision path takes its times from a ``Clock`` it is given, never from ``time`` itself
(tests/unit/test_enforce_clock.py): the engine for the records' timestamps and latency and for
Envoy's deadline once a decision is reached, the driver for the moment each message arrived
(which arms that deadline in the state machine), the stateful checks for the windows of limits
and budgets. The server runs on ``SYSTEM_CLOCK`` (the engine's default); a test hands in one
it moves by hand, and decides "too late" without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clock:
    """Wall-clock time (records, windows) and monotonic time (deadlines), in nanoseconds."""

    wall_ns: Callable[[], int] = time.time_ns
    monotonic_ns: Callable[[], int] = time.monotonic_ns

    def wall_s(self) -> float:
        """Wall-clock seconds since the epoch (what the state backend's windows count in)."""
        return self.wall_ns() / 1e9


SYSTEM_CLOCK = Clock()
