"""The sidecar's configuration (``serve``'s flags), validated once and then frozen.

Each part validates itself where it is defined (``AdmissionSettings``, ``TlsFiles``, ...);
``serve`` turns a ``ValueError`` into a usage error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import eventloop
from .enforce import limits
from .enforce.admission import AdmissionSettings
from .enforce.config import DEFAULT_MAX_BODY, EngineConfig
from .enforce.work import DEFAULT_BUDGET, DEFAULT_OFFLOAD_BYTES, DEFAULT_TIMEOUT_S, WorkSettings
from .tls import TlsFiles
from .transport.limits import Limits


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Validated once, then frozen (every field is a CLI flag and an environment variable)."""

    policies: tuple[str, ...]
    listen: str = "127.0.0.1:50051"
    audit_log: str | None = "audit.jsonl"  # "-": standard output only
    fsync_interval_s: float = 1.0
    audit_max_bytes: int | None = None  # rotate the audit log past this size
    audit_max_age_s: float | None = None  # or once its file is this old
    audit_keep: int | None = None  # closed segments kept (None: all)
    audit_stdout: bool = False  # every audit line on standard output too (node log agents)
    audit_otlp: bool = True  # with otlp_endpoint: audit lines and checkpoints as OTLP log records
    audit_checkpoint_s: float = 10.0  # how often the chain's head is sent (OTLP logs)
    otlp_endpoint: str | None = None
    redis: str | None = None
    redis_timeout_s: float = 0.1  # bound on each Redis call; past it, the rule's on_error decides
    catalog: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    watch_interval_s: float = 1.0
    grace_s: float = 10.0
    alert_webhook: str | None = None
    alert_format: str = "json"  # json | slack
    alert_window_s: float = 300.0  # one alert per (policy, rule, user) per window
    budget_time_zone: str = "UTC"
    metrics_listen: str | None = None  # HOST:PORT of /metrics and /healthz; None: off
    # Control plane (admin/): the admin API's listener (None: off; `serve` defaults it to
    # 127.0.0.1:50052) and bearer token; without a token it must be loopback. Pushed policies are
    # re-read this often even without news.
    admin_listen: str | None = None
    admin_token: str | None = None
    admin_tokens: str | None = None  # name:role:token lines: a file, or a Secret's directory
    # With Redis: every record is also appended to a Redis Stream capped near this many entries
    # (the dashboard reads it: the decisions of all replicas); 0: no stream.
    decision_stream_max: int = 100_000
    policy_poll_s: float = 5.0
    # Reservations whose answer never came are swept this often (--workers N: N x per worker).
    reservation_sweep_s: float = 30.0
    # TLS on the ext_proc/ext_authz listener and on the admin API (None: plaintext); with a
    # client CA, mTLS. The files are re-read when they change (tls.py).
    tls: TlsFiles | None = None
    admin_tls: TlsFiles | None = None
    # Decide requests that name no organisation by the policies of empty scope, instead of
    # refusing them with 400 missing_identity (the default: fail closed).
    allow_anonymous: bool = False
    # The work one request may cost (enforce/examine.py): body bytes x text scanners, and the
    # elapsed time of a large body's examination in a worker process (0 workers: in the loop).
    work_budget: int = DEFAULT_BUDGET
    work_timeout_s: float = DEFAULT_TIMEOUT_S
    offload_bytes: int = DEFAULT_OFFLOAD_BYTES
    offload_workers: int = 1
    # Start the workers and compile the policies in them at start and on every swap, so the
    # first large body after either pays no start-up (off: on first use; tests).
    offload_warm: bool = True
    # Envoy's ext_proc message_timeout, as in envoy/*.yaml.
    message_timeout_s: float = 0.5
    # Admission control (enforce/admission.py): requests in flight, queue age, fail-open routes.
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    # Who reads answers for budgets and token limits (enforce/config.py, enforce/observe.py).
    response_accounting: str = "inline"
    observe_timeout_s: float = 300.0
    # What serves the listener (listeners.py): grpc.aio, or the lean HTTP/2 transport "h2".
    transport: str = "h2"
    # The h2 transport's abuse limits (transport/limits.py): streams, floods, timeouts.
    h2_limits: Limits = field(default_factory=Limits)
    # The event loop (eventloop.py): auto (uvloop under h2, asyncio's under grpc), asyncio, uvloop.
    event_loop: str = "auto"

    def __post_init__(self) -> None:
        if self.transport not in ("grpc", "h2"):
            raise ValueError(f"transport {self.transport!r}: grpc or h2")
        eventloop.check(self.event_loop)
        self.engine_config()  # the engine's settings validate themselves (ValueError) here

    @property
    def sweep_every_s(self) -> float:
        """How often expired reservations and unobserved answers are swept: often enough that
        an answer no observe stream reports is charged soon after its timeout."""
        return min(self.reservation_sweep_s, self.observe_timeout_s / 4)

    def engine_config(self) -> EngineConfig:
        """What the engine is given of this configuration."""
        return EngineConfig(
            max_body_bytes=self.max_body_bytes,
            limits=limits.Settings(time_zone=self.budget_time_zone),
            allow_anonymous=self.allow_anonymous,
            work=WorkSettings(
                budget=self.work_budget,
                timeout_s=self.work_timeout_s,
                offload_bytes=self.offload_bytes,
                workers=self.offload_workers,
            ),
            message_timeout_s=self.message_timeout_s,
            response_accounting=self.response_accounting,  # type: ignore[arg-type]
            observe_timeout_s=self.observe_timeout_s,
        )


__all__ = ["ServerConfig"]
