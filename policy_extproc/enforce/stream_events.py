"""What the ext_proc state machine (stream.py) is fed besides Envoy's messages, what it may
answer besides a reply, and the errors of its own it answers with."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Overloaded, PolicyExtprocError
from ..policy.decision import Decision
from .envoy_replies import Reply
from .translate import Event


class EnvoyLocalReply(PolicyExtprocError):
    """The client got Envoy's own answer (a 413 over the buffer limit, say), not ours."""

    code = "envoy_local_reply"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status
        if status == 413:
            self.code = "body_too_large"


class InternalError(PolicyExtprocError):
    code = "internal_error"
    http_status = 500


@dataclass(frozen=True, slots=True)
class Decide:
    """Action: decide the request on ``body``; answer with ``receive(Decided(...))``."""

    body: bytes
    complete: bool


@dataclass(frozen=True, slots=True)
class Decided:
    """Event: the decision asked for by ``Decide``, and the request's rewritten body if any."""

    decision: Decision
    new_body: bytes | None


@dataclass(frozen=True, slots=True)
class Failed:
    """Event: answering the message in hand failed with ``error``."""

    error: PolicyExtprocError


@dataclass(frozen=True, slots=True)
class Closed:
    """Event: the stream ended (cleanly, cancelled, or the client went away) at ``now_ns``."""

    now_ns: int


@dataclass(frozen=True, slots=True)
class Shed:
    """Event: admission control (admission.py) sheds the request, on its ``headers`` (the
    request headers message, which the machine has not seen then) or before its decision."""

    error: Overloaded
    headers: Event | None = None


Input = Event | Decided | Failed | Closed | Shed
Output = Reply | Decide | None  # None: nothing to send (``closed``)
