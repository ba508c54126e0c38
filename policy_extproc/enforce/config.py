"""The engine's settings, validated once (a frozen value): body limits, identity, limits and
budgets, the response phases, the work budget, Envoy's message timeout."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from ..policy.context import DEFAULT_IDENTITY, IdentityConfig
from . import guard, limits
from .examine import WorkSettings

DEFAULT_MAX_BODY = 4 * 1024 * 1024  # agrees with envoy/envoy.yaml's buffer limits (DESIGN s8)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_body_bytes: int = DEFAULT_MAX_BODY
    identity: IdentityConfig = DEFAULT_IDENTITY
    limits: limits.Settings = field(default_factory=limits.Settings)
    # Read every response for its usage, even where no rule needs it (audit completeness at
    # the cost of two more ext_proc messages per request).
    record_usage: bool = False
    stream_holdback: int = guard.DEFAULT_HOLDBACK
    # Decide requests that name no organisation (by the policies of empty scope) instead of
    # refusing them with missing_identity; the same switch as ``identity.allow_anonymous``.
    allow_anonymous: bool = False
    # The work budget and where large bodies are examined (enforce/examine.py, work.py).
    work: WorkSettings = field(default_factory=WorkSettings)
    # Envoy's ext_proc message_timeout (envoy/*.yaml): a decision that would reach Envoy after
    # it gave up is refused and audited as such, never recorded as what the client got.
    message_timeout_s: float = 0.5
    # Who reads the answer for budgets and token limits when no output rule needs it: the
    # inline filter (holds the answer back while it reads it) or the observability-mode
    # filter (enforce/observe.py), which must then be in Envoy's configuration. An answer no
    # observe stream reports within observe_timeout_s is charged at its estimate, audited.
    response_accounting: Literal["inline", "observe"] = "inline"
    observe_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.response_accounting not in ("inline", "observe"):
            raise ValueError(
                f"response_accounting must be 'inline' or 'observe', not "
                f"{self.response_accounting!r}"
            )
        if not self.observe_timeout_s > 0:
            raise ValueError("observe_timeout_s must be above 0")
        # The sweep comes within a quarter of the timeout after it: the reservation must last.
        observing = self.response_accounting == "observe"
        if observing and self.observe_timeout_s * 1.25 >= self.limits.reservation_ttl_s:
            raise ValueError(
                f"observe_timeout_s must stay under {self.limits.reservation_ttl_s * 0.8:g} s "
                f"(4/5 of the reservation ttl, {self.limits.reservation_ttl_s:g} s): an answer "
                "no observe stream reports is charged before its reservation expires"
            )
        # One setting, two spellings: either turns it on, and both then say so.
        if self.allow_anonymous and not self.identity.allow_anonymous:
            object.__setattr__(self, "identity", replace(self.identity, allow_anonymous=True))
        elif self.identity.allow_anonymous:
            object.__setattr__(self, "allow_anonymous", True)
