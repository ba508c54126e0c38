"""Admission control: a bound on requests being decided, and shedding of requests that waited.

When requests come faster than the sidecar decides them, every one of them waits in the event
loop, and past Envoy's ``message_timeout`` the client gets Envoy's 504 anyway, after the wait.
Shedding answers at once instead (503 ``overloaded`` with ``retry-after``, answers.py), so the
requests that are admitted stay fast:

- ``max_inflight``: at most this many requests between their headers and their decision (the
  request phases: an answer being streamed back costs little and can last minutes, so it does
  not count); the next one is shed (reason ``inflight``). 0: no bound.
- ``max_queue_age_s``: a request older than this when its headers are taken up is shed
  (reason ``queue_age``). Its age counts from Envoy's ``request.time`` attribute (ext_proc
  ``request_attributes``, ext_authz ``attributes.request.time``): the wait in Envoy, gRPC's
  queues and the event loop, which is where an overloaded sidecar's backlog is. Not checked
  again before the decision: by then the age includes the client's upload of the body. Without
  ``request.time`` nothing is shed for age. It compares Envoy's clock with ours: for a sidecar
  (one host), not for a processor run as a Service on other nodes. 0: off.
- ``fail_open_routes``: globs of request paths (``fnmatch``: ``*`` matches ``/`` too, the query
  is not part of the path) whose shed requests go through unchecked instead of being refused,
  audited and counted all the same (STYLE.md: fail open only where configured, never silently).

Pure: no clock and no I/O; the driver (driver.py, extauthz.py) gives the times.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime

from ..errors import Overloaded

INFLIGHT = "inflight"
QUEUE_AGE = "queue_age"
REASONS = (INFLIGHT, QUEUE_AGE)
DEFAULT_MAX_INFLIGHT = 64


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """What ``serve --max-inflight``, ``--max-queue-age`` and ``--fail-open-route`` set."""

    max_inflight: int = DEFAULT_MAX_INFLIGHT  # 0: unbounded
    max_queue_age_s: float = 0.0  # 0: off
    fail_open_routes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_inflight < 0:
            raise ValueError(f"max inflight must be 0 (unbounded) or more, not {self.max_inflight}")
        if not self.max_queue_age_s >= 0:  # NaN too
            raise ValueError(f"max queue age must be 0 (off) or more, not {self.max_queue_age_s}")
        for glob in self.fail_open_routes:
            if not glob.startswith(("/", "*")):
                raise ValueError(f"fail-open route {glob!r} must be a path glob starting with /")


class Admission:
    """Counts the requests in flight and says which to shed; one per sidecar process.

    ``admit`` takes a slot or sheds; each admitted request gives its slot back with
    ``release`` once it is decided (or its stream ends first).
    """

    def __init__(self, settings: AdmissionSettings | None = None) -> None:
        self.settings = settings or AdmissionSettings()
        self.inflight = 0
        self.shed = dict.fromkeys(REASONS, 0)  # shed so far, by reason (the metric)
        globs = self.settings.fail_open_routes
        self._fail_open = (
            re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        )

    def admit(self, path: str, age_s: float | None = None) -> Overloaded | None:
        """Take a slot for a request to ``path`` that has waited ``age_s``; or why it is shed."""
        s = self.settings
        if s.max_queue_age_s and age_s is not None and age_s > s.max_queue_age_s:
            return self._shed(path, QUEUE_AGE, f"it waited {age_s:.3f} s for the policy service")
        if s.max_inflight and self.inflight >= s.max_inflight:
            return self._shed(path, INFLIGHT, f"{self.inflight} requests are being decided")
        self.inflight += 1
        return None

    def release(self) -> None:
        """An admitted request was decided, refused, or its stream ended."""
        self.inflight = max(0, self.inflight - 1)

    def fails_open(self, path: str) -> bool:
        """Whether a shed request to ``path`` goes through unchecked."""
        return self._fail_open is not None and bool(self._fail_open.match(path.partition("?")[0]))

    def _shed(self, path: str, reason: str, why: str) -> Overloaded:
        self.shed[reason] += 1
        return Overloaded(
            f"the policy service is overloaded: {why}",
            reason=reason,
            fail_open=self.fails_open(path),
        )


def request_time_s(value: object) -> float | None:
    """Envoy's ``request.time`` attribute as sent to ext_proc (an RFC 3339 string such as
    ``2026-12-02T14:45:08.839344+00:00``) in seconds since the epoch; None if not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.timestamp() if t.tzinfo is not None else None


__all__ = [
    "DEFAULT_MAX_INFLIGHT",
    "INFLIGHT",
    "QUEUE_AGE",
    "REASONS",
    "Admission",
    "AdmissionSettings",
    "request_time_s",
]
