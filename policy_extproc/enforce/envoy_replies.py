"""What the sidecar answers for one ext_proc message, in our own terms (no protobufs here).

``translate`` turns these into ``ProcessingResponse`` messages; ``stream`` and ``answers``
produce them. Keeping them plain values lets the protocol logic be tested without gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal[
    "request_headers",
    "request_body",
    "response_headers",
    "response_body",
    "request_trailers",
    "response_trailers",
]
BodyMode = Literal["NONE", "STREAMED", "BUFFERED", "BUFFERED_PARTIAL"]


@dataclass(frozen=True, slots=True)
class Continue:
    """Let the message through, possibly changed."""

    phase: Phase
    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    body: bytes | None = None  # replacement body (request or response)
    clear_route_cache: bool = False
    response_body_mode: BodyMode | None = None  # mode_override, only on response headers
    # mode_override on request headers: Envoy skips the response phases of this exchange
    # (no rule in the request's scope reads the response), saving two messages.
    skip_response: bool = False
    # mode_override on request headers: Envoy sends nothing more of this exchange (shed on a
    # fail-open route, admission.py: the request goes through unchecked).
    skip_rest: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Immediate:
    """Answer the client ourselves; the request never reaches (or leaves) the provider."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    details: str = ""


@dataclass(frozen=True, slots=True)
class Extend:
    """Not an answer: ask Envoy to wait longer for the answer to the message in hand.

    ``ProcessingResponse.override_message_timeout`` restarts Envoy's message timer with this
    value; Envoy ignores a value over the filter's ``max_message_timeout``, and honours one
    override per message. The real answer follows.
    """

    seconds: float


Reply = Continue | Immediate
