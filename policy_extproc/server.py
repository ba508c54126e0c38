"""Wiring: policies, audit sinks and the engine behind a grpc.aio server, with a clean lifecycle.

Start: load policies (a bad set at start-up is fatal: there is no last good set to serve), open
the audit sinks, listen, and only then report SERVING on gRPC health. Run: reload policies when
their files change (a bad reload keeps the last good set). Stop (SIGTERM, on every Kubernetes
rollout): report NOT_SERVING, stop accepting, let open streams finish within ``grace``, then
cancel the rest, and flush the audit log last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from .admin.control import ControlPlane
from .audit.chain import AuditLog
from .audit.sink import AuditSink, FanoutSink, JsonlSink
from .enforce import limits
from .enforce.alerts import AlertNotifier
from .enforce.engine import DEFAULT_MAX_BODY, Engine, EngineConfig
from .enforce.servicer import Authorization, ExternalProcessor
from .errors import PolicyError, StateError
from .llm.catalog import load_catalog
from .policy.store import PolicyStore
from .state.base import StateBackend

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

EXT_PROC = external_processor_pb2.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name
EXT_AUTHZ = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
# gRPC's default 4 MiB receive limit would drop a stream carrying a body at our own limit; leave
# room for the rest of the message (DESIGN.md s8).
_GRPC_OVERHEAD = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Validated once, then frozen (every field is a CLI flag and an environment variable)."""

    policies: tuple[str, ...]
    listen: str = "127.0.0.1:50051"
    audit_log: str | None = "audit.jsonl"
    fsync_interval_s: float = 1.0
    otlp_endpoint: str | None = None
    redis: str | None = None
    redis_timeout_s: float = 0.1  # bound on each Redis call; past it, the rule's on_error decides
    catalog: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    watch_interval_s: float = 1.0
    grace_s: float = 10.0
    alert_webhook: str | None = None
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


class Sidecar:
    """The running server; ``start`` returns once it is SERVING, ``stop`` drains and closes."""

    def __init__(self, config: ServerConfig, *, sinks: list[AuditSink] | None = None) -> None:
        self.config = config
        self.store = PolicyStore(config.policies)
        self.control = ControlPlane(
            self.store,
            redis_url=config.redis,
            admin_listen=config.admin_listen,
            admin_token=config.admin_token,
            admin_tokens=config.admin_tokens,
            poll_s=config.policy_poll_s,
        )
        self._extra_sinks = sinks or []
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._watch: asyncio.Task[None] | None = None
        self._sweep: asyncio.Task[None] | None = None
        self.health = HealthServicer()
        self.sink: AuditSink | None = None
        self.state: StateBackend | None = None
        self.processor: ExternalProcessor | None = None
        self.metrics: Metrics | None = None
        self.metrics_port = 0
        if config.metrics_listen:
            from .metrics import Metrics

            self.metrics = Metrics(config.metrics_listen)  # a bad address fails here, early

    async def start(self) -> None:
        cfg = self.config
        self.control.check()  # AdminError: an admin API open to the network without a token
        try:
            await self.control.load()  # files and pushed policies; PolicyError: nothing to serve
        except BaseException:
            await self.control.stop()
            raise
        self.catalog = load_catalog(cfg.catalog)
        self.state = self._open_state()
        # The live decision stream last: the durable log has the record before any watcher.
        self.sink = FanoutSink([*self._open_sinks(), self.control.live])
        self.alerts = AlertNotifier(cfg.alert_webhook)
        self.engine = Engine(
            self.store,
            self.sink,
            EngineConfig(
                max_body_bytes=cfg.max_body_bytes,
                limits=limits.Settings(time_zone=cfg.budget_time_zone),
            ),
            state=self.state,
            catalog=self.catalog,
            alerts=self.alerts,
        )
        limit = cfg.max_body_bytes + _GRPC_OVERHEAD
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        self.processor = ExternalProcessor(self.engine)
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(self.processor, server)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            Authorization(self.engine), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                EXT_PROC,
                EXT_AUTHZ,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        try:
            self.port = server.add_insecure_port(cfg.listen)
        except RuntimeError:  # grpcio raises "Failed to bind" rather than returning 0
            self.port = 0
        if self.port == 0:
            # Close what start opened (audit log and its fsync thread, state backend).
            await self.stop()
            raise OSError(f"cannot listen on {cfg.listen}: address in use or not available")
        await server.start()
        self._server = server
        try:
            await self.control.serve(self.state, self.sink)
        except BaseException:
            await self.stop()
            raise
        if self.metrics is not None:
            self.metrics.watch(
                self.store, processor=self.processor, alerts=self.alerts, audit=self.sink
            )
            try:
                self.metrics_port = self.metrics.serve()
            except OSError:
                await self.stop()
                raise
        for service in ("", EXT_PROC, EXT_AUTHZ):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._watch = asyncio.create_task(self._watch_policies())
        self._sweep = asyncio.create_task(self._sweep_reservations())
        # The bound port, not the configured one: with port 0 only this line says where we are.
        host = cfg.listen.rsplit(":", 1)[0]
        log.info(
            "serving on %s:%d with %d policies (%d rules), version %s",
            host,
            self.port,
            len(self.store.current),
            self.store.current.rule_count,
            self.store.current.version,
        )

    def _open_state(self) -> StateBackend:
        if self.config.redis:
            from .state.redis import RedisState

            return RedisState.from_url(self.config.redis, timeout_s=self.config.redis_timeout_s)
        from .state.memory import MemoryState

        return MemoryState()

    def _open_sinks(self) -> list[AuditSink]:
        sinks: list[AuditSink] = list(self._extra_sinks)
        if self.config.audit_log:
            log_file = AuditLog(
                self.config.audit_log, fsync_interval_s=self.config.fsync_interval_s
            )
            sinks.append(JsonlSink(log_file))
        if self.config.otlp_endpoint:
            from .audit.otel import OtelSink

            sinks.append(OtelSink(self.config.otlp_endpoint))
        if self.config.redis and self.config.decision_stream_max > 0:
            from .audit.stream import RedisStreamSink

            sinks.append(
                RedisStreamSink(self.config.redis, maxlen=self.config.decision_stream_max)
            )  # best effort: never raises, never blocks
        if self.metrics is not None:
            sinks.append(self.metrics.sink)  # counts every record; never raises
        return sinks

    async def _watch_policies(self) -> None:
        while True:
            await asyncio.sleep(self.config.watch_interval_s)
            if not self.store.changed():
                continue
            try:
                # Compiling is CPU work: off the event loop, so requests keep flowing.
                snapshot = await asyncio.to_thread(self.store.load)
                log.info("policies reloaded: version %s", snapshot.version)
            except PolicyError as exc:
                log.error(
                    "policy reload refused, still serving version %s:\n%s",
                    self.store.current.version,
                    exc,
                )
            except Exception:
                log.exception("policy reload failed")

    async def _sweep_reservations(self) -> None:
        # Reservations whose response never came (sidecar restarted mid-request, stream lost)
        # go back after their ttl; admit and reconcile also sweep their own org lazily.
        while True:
            await asyncio.sleep(30)
            try:
                await self.engine.state.expire_reservations()
            except StateError as exc:
                log.warning("reservation sweep failed: %s", exc)

    @property
    def admin_port(self) -> int:
        return self.control.admin_port

    async def stop(self) -> None:
        await self.control.stop()
        for task in (self._watch, self._sweep):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.config.grace_s)
        if hasattr(self, "engine"):
            await self.engine.drain()
            await self.alerts.close()
        if self.sink is not None:
            self.sink.close()
        if self.state is not None:
            await self.state.close()
        if self.metrics is not None:
            await self.metrics.close()  # last: the final counts stay scrapable while draining


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    sidecar = Sidecar(config)
    await sidecar.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining open streams (up to %.0fs)", config.grace_s)
    await sidecar.stop()
