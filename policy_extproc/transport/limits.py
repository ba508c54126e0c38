"""What one HTTP/2 peer may cost us: the lean transport's abuse limits, and their bookkeeping.

``Limits`` is the configuration (``serve --h2-*``), validated once. ``Guard`` is one
connection's use of it: the budgets a flood spends, and the one warning per limit and
connection (with the peer's address, never a payload) that a violation logs. What each limit
answers, after RFC 9113 and the HTTP/2 denial-of-service advisories:

    max_concurrent_streams   SETTINGS_MAX_CONCURRENT_STREAMS; a stream past it is refused
                             (RST_STREAM REFUSED_STREAM, s5.1.2), the others go on
    max_header_list_size     SETTINGS_MAX_HEADER_LIST_SIZE; a header block (HEADERS and its
                             CONTINUATIONs) past it is GOAWAY ENHANCE_YOUR_CALM before it is
                             buffered further (CVE-2024-27316): unread, HPACK's table can no
                             longer agree with the peer's, so no stream error is possible
    max_early_resets         streams reset by the peer before their handler ran, or refused,
                             per window: past it GOAWAY (rapid reset, CVE-2023-44487)
    max_control_frames       PING, SETTINGS, PRIORITY, unknown types, WINDOW_UPDATE and empty
                             DATA / HEADERS / CONTINUATION without END_STREAM, per window: past
                             it GOAWAY (CVE-2019-9512, -9515, -9518). A PING or WINDOW_UPDATE
                             answering DATA we sent is free.
    max_queued_replies       PING and SETTINGS ACKs queued while the peer does not read (our
                             transport's buffer over its high-water mark, reading paused)
    handshake_timeout_s      the client preface and its SETTINGS, from the accept
    idle_timeout_s           no stream for this long: GOAWAY NO_ERROR and close (0: never)

Why early resets, not every reset: Envoy resets every ext_proc stream at its end
(``ExternalProcessorStreamImpl::close`` half-closes, then resets), so counting all resets would
count every request; a stream reset before its handler ran (in the read that opened it) did
no work but cost us its setup, which is what a rapid reset attack repeats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from . import frames
from .frames import ProtocolError

log = logging.getLogger(__name__)

# The stable names of the limits: the log's and the metric's label.
CONCURRENT_STREAMS = "concurrent_streams"
HEADER_LIST_SIZE = "header_list_size"
EARLY_RESETS = "early_resets"
CONTROL_FRAMES = "control_frames"
QUEUED_REPLIES = "queued_replies"
HANDSHAKE_TIMEOUT = "handshake_timeout"
NAMES = (
    CONCURRENT_STREAMS,
    HEADER_LIST_SIZE,
    EARLY_RESETS,
    CONTROL_FRAMES,
    QUEUED_REPLIES,
    HANDSHAKE_TIMEOUT,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The abuse limits of every connection of one server (``serve --h2-*``)."""

    # Envoy does not open another connection when a sidecar's limit is reached: its codec
    # queues the stream (envoyproxy/envoy#13933). Keep this above the ext_proc cluster's
    # circuit breaker max_requests (10000 in envoy/*.yaml), so it never queues.
    max_concurrent_streams: int = 16_384
    max_header_list_size: int = 64 * 1024  # Envoy's gRPC headers are a few hundred bytes
    window_s: float = 10.0  # what the two budgets below count within
    max_early_resets: int = 1000
    max_control_frames: int = 1000  # Envoy: a keepalive PING every 30 s, a SETTINGS or two
    max_queued_replies: int = 1000
    handshake_timeout_s: float = 10.0  # Envoy sends its preface with the connection
    idle_timeout_s: float = 0.0  # Envoy keeps its pooled connections: never close them

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrent_streams <= frames.MAX_WINDOW:
            raise ValueError("h2 max concurrent streams: 1 to 2^31-1")
        if not 4096 <= self.max_header_list_size <= frames.MAX_FRAME_LIMIT:
            raise ValueError("h2 max header list size: 4096 bytes to 16 MiB")
        if not self.window_s > 0:
            raise ValueError("h2 flood window: more than 0 seconds")
        for name in ("max_early_resets", "max_control_frames", "max_queued_replies"):
            if getattr(self, name) < 1:
                raise ValueError(f"h2 {name.replace('_', ' ')}: at least 1")
        if not self.handshake_timeout_s > 0 or self.idle_timeout_s < 0:
            raise ValueError("h2 handshake timeout: more than 0; idle timeout: 0 (off) or more")

    def settings_frame(self, recv_window: int) -> bytes:
        """Our SETTINGS, then the connection window raised to ``recv_window``."""
        ours = {
            frames.ENABLE_PUSH: 0,
            frames.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
            frames.INITIAL_WINDOW_SIZE: recv_window,
            frames.MAX_HEADER_LIST_SIZE: self.max_header_list_size,
        }
        return frames.settings(ours) + frames.window_update(0, recv_window - frames.DEFAULT_WINDOW)


class LimitExceeded(ProtocolError):
    """A connection error for a limit: GOAWAY ENHANCE_YOUR_CALM; ``limit`` names it."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message, frames.ENHANCE_YOUR_CALM)
        self.limit = limit


class Budget:
    """At most ``limit`` events per ``window_s`` seconds (a fixed window, restarted by the first
    event after it ends); read the clock only when an event comes."""

    __slots__ = ("clock", "count", "limit", "start", "window_s")

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self.count = 0
        self.start = clock()

    def spend(self) -> bool:
        """Count one event; False once the window holds more than ``limit``."""
        now = self.clock()
        if now - self.start >= self.window_s:
            self.start, self.count = now, 0
        self.count += 1
        return self.count <= self.limit


class Guard:
    """One connection's budgets and its warnings, counted in ``violations`` (the server's)."""

    __slots__ = (
        "_control",
        "_resets",
        "_warned",
        "credit",
        "limits",
        "peer",
        "queued",
        "violations",
    )

    def __init__(
        self,
        limits: Limits,
        clock: Callable[[], float],
        violations: dict[str, int],
        peer: object = None,
    ) -> None:
        self.limits = limits
        self.peer = peer
        self.violations = violations
        self.credit = 0  # PINGs and WINDOW_UPDATEs the DATA frames we sent may call for
        self.queued = 0  # replies queued since the transport's buffer went over its mark
        self._control = Budget(limits.max_control_frames, limits.window_s, clock)
        self._resets = Budget(limits.max_early_resets, limits.window_s, clock)
        self._warned: set[str] = set()

    def violated(self, limit: str, message: str) -> None:
        """Count a violation; warn the first time this connection commits it."""
        self.violations[limit] = self.violations.get(limit, 0) + 1
        if limit not in self._warned:
            self._warned.add(limit)
            log.warning("h2 peer %s over the %s limit: %s", _address(self.peer), limit, message)

    def control(self, what: str) -> None:
        """A control frame (or an empty one) came: LimitExceeded once past the budget."""
        if not self._control.spend():
            raise LimitExceeded(
                CONTROL_FRAMES, f"control frames past {self._per(self._control)} ({what})"
            )

    def answer(self, what: str) -> None:
        """A PING or WINDOW_UPDATE: free while it may answer our DATA, else a control frame."""
        if self.credit > 0:
            self.credit -= 1
        else:
            self.control(what)

    def early_reset(self) -> None:
        """A stream reset before its handler ran, or refused: LimitExceeded past the budget."""
        if not self._resets.spend():
            raise LimitExceeded(EARLY_RESETS, f"early stream resets past {self._per(self._resets)}")

    def reply_queued(self, paused: bool) -> None:
        """A PING or SETTINGS ACK queued; while writing is paused, LimitExceeded past the cap."""
        if paused:
            self.queued += 1
            if self.queued > self.limits.max_queued_replies:
                raise LimitExceeded(QUEUED_REPLIES, "replies piling up: the peer does not read")

    def block(self, size: int) -> None:
        """A header block of ``size`` bytes so far: LimitExceeded past the header list size."""
        if size > self.limits.max_header_list_size:
            limit = self.limits.max_header_list_size
            raise LimitExceeded(HEADER_LIST_SIZE, f"a header block over {limit} bytes")

    def _per(self, budget: Budget) -> str:
        return f"{budget.limit} in {budget.window_s:g} s"


def _address(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "(unknown)"


__all__ = ["NAMES", "Budget", "Guard", "LimitExceeded", "Limits"]
