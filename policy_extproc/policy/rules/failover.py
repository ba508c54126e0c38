"""``failover``: provider fallbacks behind a circuit breaker.

Checked by ``enforce.failover`` (breakers in shared state, fed by the response's status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import fields as f
from ..model import Rule
from .kind import Field, RuleKind


@dataclass(frozen=True, slots=True)
class FailoverRule(Rule):
    provider: str = ""
    fallbacks: tuple[str, ...] = ()
    failure_threshold: int = 5
    failure_ratio: float | None = None
    min_requests: int = 10
    window_s: float = 30.0
    cooldown_s: float = 60.0
    action: Literal["reroute"] = "reroute"

    type = "failover"

    @property
    def reads_response(self) -> bool:
        return True  # the breaker counts the provider's failures


def _check(r: FailoverRule) -> str | None:
    if r.provider in r.fallbacks:
        return f"provider {r.provider!r} cannot be its own fallback"
    if len(set(r.fallbacks)) != len(r.fallbacks):
        return "names the same fallback twice"
    return None


KIND = RuleKind(
    FailoverRule,
    {
        "provider": Field(f.string, required=True),
        "fallbacks": Field(f.string_list(), required=True),
        "failure_threshold": Field(f.integer(1)),
        "failure_ratio": Field(f.fraction),
        "min_requests": Field(f.integer(1)),
        "window": Field(f.duration, "window_s"),
        "cooldown": Field(f.duration, "cooldown_s"),
        "action": Field(f.one_of("reroute")),
    },
    check=_check,
    state=("breaker",),
)
