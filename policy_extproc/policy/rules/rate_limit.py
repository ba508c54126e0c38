"""``rate_limit``: requests and tokens per window, per user, team or organisation.

Checked against shared state by ``enforce.limits`` (a limiter per subject and unit); the pure
evaluation has nothing to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .. import fields as f
from ..model import Rule
from .kind import ON_ERROR, Field, RuleKind

WINDOWS: Mapping[str, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True, slots=True)
class RateLimitRule(Rule):
    per: tuple[str, ...] = ("user",)
    requests: int | None = None
    tokens: int | None = None
    window: str = "minute"
    burst: int = 0
    on_error: Literal["open", "closed"] = "closed"
    action: Literal["throttle"] = "throttle"

    type = "rate_limit"

    @property
    def window_s(self) -> float:
        return WINDOWS[self.window]


def _check(r: RateLimitRule) -> str | None:
    if r.requests is None and r.tokens is None:
        return "needs 'requests' or 'tokens' (or both)"
    return None


KIND = RuleKind(
    RateLimitRule,
    {
        "per": Field(f.per),
        "requests": Field(f.integer(1)),
        "tokens": Field(f.integer(1)),
        "window": Field(f.one_of(*WINDOWS)),
        "burst": Field(f.integer(0)),
        "on_error": Field(ON_ERROR),
        "action": Field(f.one_of("throttle")),
    },
    check=_check,
    state=("rate",),
)
