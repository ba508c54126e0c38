"""Every error policy-extproc raises on purpose, each with a stable ``code``.

The code is what a client sees in the JSON error body, what the audit record stores and what a
metric is labelled with; the HTTP status is what the client gets when the error ends a request.

    PolicyExtprocError (code, http_status)
    ├── PolicyError                       invalid policy set; carries every Problem found
    ├── RequestError (400)                the client sent something we cannot evaluate
    │   ├── MalformedBody      malformed_body       body is not the JSON the API expects
    │   ├── UnknownApi         unknown_api          path/body is no LLM API we know (400)
    │   ├── BodyTooLarge       body_too_large       over the configured limit (413)
    │   ├── WorkBudgetExceeded work_budget_exceeded the body would cost more detection work
    │   │                                           than one request may use (413)
    │   ├── TokenPrompt        token_prompt_unsupported  a prompt given as token ids (no text)
    │   ├── MissingIdentity    missing_identity     no organisation, or a policy needs an
    │   │                                           identity key that is absent
    │   └── AmbiguousIdentity  ambiguous_identity   two values for one identity header
    ├── StateError             state_unavailable    the state backend (Redis) failed or timed out
    ├── EnvoyGaveUp            envoy_gave_up        the decision came after Envoy's message
    │                                               timeout (the client got Envoy's 504)
    ├── StreamCancelled        stream_cancelled     the stream was reset before the decision
    ├── Overloaded             overloaded           shed by admission control (503, retry-after)
    ├── ProtocolError          protocol_error       Envoy sent a message out of order
    ├── AdminError             admin_error          an admin call was refused (auth, not found)
    └── TlsError               tls_error            a certificate, key or CA file cannot be used

Foreign exceptions (redis, grpc, yaml) are translated at the boundary that meets them, with
``raise ... from exc``; they never travel further.
"""

from __future__ import annotations

from dataclasses import dataclass


class PolicyExtprocError(Exception):
    """Base of every deliberate error."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in a policy set, printed as ``file:line: policy 'name' rule N (type): msg``."""

    file: str
    line: int
    message: str
    policy: str | None = None
    rule_index: int | None = None
    rule_type: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:"
        if self.policy is not None:
            where += f" policy '{self.policy}'"
        if self.rule_index is not None:
            where += f" rule {self.rule_index}"
            if self.rule_type:
                where += f" ({self.rule_type})"
        if self.policy is not None or self.rule_index is not None:
            where += ":"
        return f"{where} {self.message}"


class PolicyError(PolicyExtprocError):
    """A policy set that does not load; ``problems`` lists every mistake found, in file order."""

    code = "invalid_policy"
    http_status = 400

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems) or "invalid policy")


class RequestError(PolicyExtprocError):
    code = "bad_request"
    http_status = 400


class MalformedBody(RequestError):
    code = "malformed_body"


class UnknownApi(RequestError):
    code = "unknown_api"


class BodyTooLarge(RequestError):
    code = "body_too_large"
    http_status = 413


class WorkBudgetExceeded(RequestError):
    code = "work_budget_exceeded"
    http_status = 413


class TokenPrompt(RequestError):
    code = "token_prompt_unsupported"


class MissingIdentity(RequestError):
    code = "missing_identity"


class AmbiguousIdentity(RequestError):
    code = "ambiguous_identity"


class StateError(PolicyExtprocError):
    code = "state_unavailable"
    http_status = 503


class ProtocolError(PolicyExtprocError):
    code = "protocol_error"


class AdminError(PolicyExtprocError):
    code = "admin_error"


class TlsError(PolicyExtprocError):
    code = "tls_error"


class EnvoyGaveUp(PolicyExtprocError):
    """Envoy stopped waiting for the decision (message timeout): the client got its 504."""

    code = "envoy_gave_up"
    http_status = 504
    outcome = "envoy_gave_up"  # the audit record's ``outcome``: what the client got


class StreamCancelled(PolicyExtprocError):
    """The stream was reset before the request was decided (the client went away)."""

    code = "stream_cancelled"
    http_status = 499  # no client reads it: the stream is gone
    outcome = "stream_cancelled"


class Overloaded(PolicyExtprocError):
    """Shed by admission control (enforce/admission.py): too many requests in flight, or one
    that waited too long. Refused with 503 and ``retry-after``, or on a route configured to fail
    open let through unchecked; audited either way."""

    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, *, reason: str, fail_open: bool = False) -> None:
        super().__init__(message)
        self.reason = reason  # inflight | queue_age: the shed metric's label
        self.fail_open = fail_open
        # The audit record's ``outcome``: what happened to the request instead of a decision.
        self.outcome = "shed_fail_open" if fail_open else "shed"
