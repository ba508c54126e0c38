"""What evaluation produces: the request context it reads and the decision it returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .model import SEVERITY, Action

if TYPE_CHECKING:
    from ..llm.request import LlmRequest

JsonPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything a policy can look at, built once per request by the enforcement layer."""

    org: str = ""
    team: str = ""
    user: str = ""
    environment: str = ""
    roles: frozenset[str] = frozenset()
    tags: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    request: LlmRequest | None = None
    approval_id: str | None = None
    # The model the policies judge: canonical (llm.model_names), an Azure deployment resolved
    # to its model through the catalog; "" without a request. Prices and budgets use it too.
    model: str = ""


@dataclass(frozen=True, slots=True)
class Fired:
    """One rule that fired: what it asks for and why (never the matched text itself)."""

    policy: str
    rule: str
    type: str
    action: str  # allow/modify/throttle/escalate/block, or reroute/notify which ride along
    reason: str
    mode: Literal["enforce", "log"] = "enforce"


@dataclass(frozen=True, slots=True)
class Throttle:
    """Figures for the 429's x-ratelimit-* and retry-after headers."""

    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float
    code: Literal["rate_limited", "budget_exceeded"] = "rate_limited"


@dataclass(frozen=True, slots=True)
class Decision:
    """The one decision for a request, with everything the client, Envoy and the audit need."""

    action: Action
    reason: str = ""
    policy: str | None = None
    rule: str | None = None
    code: str | None = None  # blocked, rate_limited, budget_exceeded, approval_required, ...
    fired: tuple[Fired, ...] = ()
    mode: Literal["enforce", "log"] = "enforce"
    would_decide: Action | None = None
    compliance: tuple[str, ...] = ()
    redactions: Mapping[str, int] = field(default_factory=dict)
    new_texts: Mapping[JsonPath, str] = field(default_factory=dict)
    reroute: str | None = None  # provider to send the request to instead
    reroute_model: str | None = None
    throttle: Throttle | None = None
    approval_id: str | None = None
    alerts: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()
    http_status: int = 200

    @property
    def severity(self) -> int:
        return SEVERITY[self.action]


@dataclass(frozen=True, slots=True)
class StateOutcome:
    """What the checks that need shared state add to a decision (enforce/stateful.py):
    approvals, limits and budgets, failover, data residency. A value, never a mutation of the
    pure rules' findings."""

    fired: tuple[Fired, ...] = ()  # after the pure rules' firings, in the order they fired
    throttle: Throttle | None = None
    approval_id: str | None = None
    reroute: str | None = None
    reroute_model: str | None = None
    alerts: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()  # checks skipped because state was unreachable (fail open)


NO_STATE = StateOutcome()

_CODES = {"block": "blocked", "throttle": "rate_limited", "escalate": "approval_required"}
_STATUS = {"block": 403, "throttle": 429, "escalate": 403}


def combine(
    fired: list[Fired] | tuple[Fired, ...],
    *,
    compliance: tuple[str, ...] = (),
    redactions: Mapping[str, int] | None = None,
    new_texts: Mapping[JsonPath, str] | None = None,
    state: StateOutcome = NO_STATE,
) -> Decision:
    """The most severe action among enforced firings; shadow (log) firings only say what would be.

    ``state``'s firings count after ``fired``. DESIGN.md s5: block > escalate > throttle >
    modify > allow; reroute rides along with any non-blocking decision (the caller drops it on
    block).
    """
    if state.fired:
        fired = (*fired, *state.fired)
    action: Action = "allow"
    lead: Fired | None = None
    would: Action = "allow"
    would_lead: Fired | None = None
    shadow = False
    for fr in fired:
        sev = SEVERITY.get(fr.action)
        if sev is None:  # reroute, notify: not a decision of their own
            continue
        if fr.mode == "log":
            shadow = True
        elif sev > SEVERITY[action]:
            action, lead = fr.action, fr  # type: ignore[assignment]
        if sev > SEVERITY[would]:
            would = fr.action  # type: ignore[assignment]
            would_lead = fr
    if lead is None:  # nothing above allow: the firing that allowed it explicitly (an approval)
        lead = next((fr for fr in fired if fr.action == "allow" and fr.mode == "enforce"), None)
    reason = lead.reason if lead else "no rule fired"
    if lead is None and shadow and would_lead is not None:
        # Shadow only: the audit record says what would have been decided and why (a score).
        reason = f"would {would}: {would_lead.reason}"
    return Decision(
        action=action,
        reason=reason,
        policy=lead.policy if lead else None,
        rule=lead.rule if lead else None,
        code=_CODES.get(action),
        fired=tuple(fired),
        mode="log" if shadow else "enforce",
        would_decide=would if shadow else None,
        http_status=_STATUS.get(action, 200),
        compliance=compliance,
        redactions=redactions if redactions is not None else {},
        new_texts=new_texts if new_texts is not None else {},
        reroute=state.reroute,
        reroute_model=state.reroute_model,
        throttle=state.throttle,
        approval_id=state.approval_id,
        alerts=state.alerts,
        degraded=state.degraded,
    )
