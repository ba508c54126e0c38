"""Wiring: policies, audit sinks and the engine behind a gRPC listener, with a clean lifecycle.

Start: load policies (a bad set at start-up is fatal: there is no last good set to serve), open
the audit sinks, listen, and only then report SERVING on gRPC health. Run: reload policies when
their files change (a bad reload keeps the last good set). Stop (SIGTERM, on every Kubernetes
rollout): report NOT_SERVING, stop accepting, let open streams finish within ``grace``, then
cancel the rest (each cut stream gets a response record saying so), and flush the audit log last.

Readiness (gRPC health, service ``""`` and the two Envoy services) is SERVING only while every
condition holds: the policies are loaded, the pushed policies were read from Redis (a Redis down
at start does not stop the start: the sidecar serves the policy files, each rule's ``on_error``
decides, and it turns ready when Redis answers), and the audit log can be written. Service
``liveness`` is SERVING from start to stop, for a liveness probe that must not restart a pod
that only waits for Redis or for disk space. SIGHUP reopens the audit log (logrotate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from .admin.control import ControlPlane
from .audit.local import PROBE_S, LocalAudit
from .audit.sink import AuditSink, FanoutSink
from .enforce.admission import Admission
from .enforce.alerts import AlertNotifier
from .enforce.decision_alerts import BlockAlertSink, RuleOptOuts
from .enforce.engine import Engine
from .enforce.servicer import Authorization, ExternalProcessor
from .errors import PolicyError, StateError
from .listeners import EXT_AUTHZ, EXT_PROC, H2Listener, Listener, make_listener
from .policy.compiler import Snapshot
from .serverconfig import ServerConfig
from .sources.catalog import load_catalog
from .sources.store import PolicyStore
from .state.base import StateBackend
from .tls import CertificateReloader

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

# gRPC's default 4 MiB receive limit would drop a stream carrying a body at our own limit; leave
# room for the rest of the message (DESIGN.md s8).
_GRPC_OVERHEAD = 1024 * 1024
LIVENESS = "liveness"
# While Redis was down at start, the pushed policies are read again this often.
REDIS_RETRY_S = 1.0


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
            admin_tls=config.admin_tls,
        )
        self.tls: CertificateReloader | None = None
        self._extra_sinks = sinks or []
        self.port = 0
        self._server: Listener | None = None
        self._watch: asyncio.Task[None] | None = None
        self._sweep: asyncio.Task[None] | None = None
        self._warming: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.health = HealthServicer()
        self.sink: AuditSink | None = None
        self.state: StateBackend | None = None
        self.processor: ExternalProcessor | None = None
        self.admission = Admission(config.admission)  # one bound for both servicers
        self.metrics: Metrics | None = None
        self.metrics_port = 0
        self.local: LocalAudit | None = None  # the audit log file, its watcher and export
        self._ready = {"policies": False, "redis": True, "audit": True}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: list[asyncio.Task[None]] = []
        if config.metrics_listen:
            from .metrics import Metrics

            self.metrics = Metrics(config.metrics_listen)  # a bad address fails here, early

    async def start(self) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self._set_health()  # NOT_SERVING until every condition holds
        self.control.check()  # AdminError: an admin API open to the network without a token
        if cfg.tls is not None:
            CertificateReloader(cfg.tls)  # TlsError: an unusable certificate, before anything opens
        try:
            await self._load_policies()
        except BaseException:
            await self.control.stop()
            raise
        self.catalog = load_catalog(cfg.catalog)
        self.state = self._open_state()
        # The live decision stream last: the durable log has the record before any watcher.
        self.alerts = AlertNotifier(
            cfg.alert_webhook,
            format=cfg.alert_format,  # type: ignore[arg-type]
            window_s=cfg.alert_window_s,
            opted_out=RuleOptOuts(lambda: self.store.current if self.store.ready else None),
        )
        self.sink = FanoutSink([*self._open_sinks(), self.control.live])
        self.engine = Engine(
            self.store,
            self.sink,
            cfg.engine_config(),
            state=self.state,
            catalog=self.catalog,
            alerts=self.alerts,
        )
        self.processor = ExternalProcessor(
            self.engine,
            on_phase=self.metrics.sink.phase if self.metrics is not None else None,
            admission=self.admission,
        )
        authorization = Authorization(self.engine, admission=self.admission)
        try:
            listener = make_listener(
                cfg.transport,
                cfg.listen,
                self.processor,
                authorization,
                self.health,
                max_message=cfg.max_body_bytes + _GRPC_OVERHEAD,
                tls=cfg.tls,
                h2_limits=cfg.h2_limits,
            )
            self.tls = listener.reloader
            self.port = await listener.start()
        except BaseException:
            # Close what start opened (audit log and its fsync thread, state backend).
            await self.stop()
            raise
        self._server = listener
        try:
            await self.control.serve(
                self.state,
                self.sink,
                catalog=self.engine.catalog,
                settings=self.engine.config.limits,
            )
        except BaseException:
            await self.stop()
            raise
        if self.metrics is not None:
            m, p, a = self.metrics, self.processor, self.admission
            h2 = listener.violations if isinstance(listener, H2Listener) else None
            m.watch(
                self.store,
                processor=p,
                alerts=self.alerts,
                audit=self.sink,
                admission=a,
                h2_violations=h2,
            )
            try:
                self.metrics_port = self.metrics.serve()
            except OSError:
                await self.stop()
                raise
        self._ready["policies"] = True
        await self._set_health()
        if cfg.offload_warm and cfg.offload_workers:
            loop = asyncio.get_running_loop()

            # Swaps happen in reload threads and admin calls: hop onto the loop.
            def rewarm(snapshot: Snapshot) -> None:
                loop.call_soon_threadsafe(self._warm_workers, snapshot)

            self.store.on_swap(rewarm)
            self._warm_workers(self.store.current)
        self._watch = asyncio.create_task(self._watch_policies())
        self._sweep = asyncio.create_task(self._sweep_reservations())
        self._background.append(asyncio.create_task(self._prune()))
        # The bound port, not the configured one: with port 0 only this line says where we are.
        host = cfg.listen.rsplit(":", 1)[0]
        loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]  # asyncio, uvloop
        log.info(
            "serving on %s:%d%s over %s on %s's loop with %d policies (%d rules), version %s",
            host,
            self.port,
            "" if cfg.tls is None else (" (mTLS)" if cfg.tls.client_ca else " (TLS)"),
            cfg.transport,
            loop_kind,
            len(self.store.current),
            self.store.current.rule_count,
            self.store.current.version,
        )

    def _warm_workers(self, snapshot: Snapshot) -> None:
        if self._stopping:
            return
        task = asyncio.get_running_loop().create_task(self.engine.work.warm(snapshot))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    def _open_state(self) -> StateBackend:
        if self.config.redis:
            from .state.redis import RedisState

            observe = self.metrics.sink.redis if self.metrics is not None else None
            return RedisState.from_url(
                self.config.redis, timeout_s=self.config.redis_timeout_s, observe=observe
            )
        from .state.memory import MemoryState

        return MemoryState()

    async def _load_policies(self) -> None:
        try:
            await self.control.load()  # files and pushed policies; PolicyError: nothing to serve
        except StateError as exc:
            if not self.config.redis:
                raise
            # Serving the files beats restarting in a loop: this pod stays out of rotation
            # (not ready) until the pushed policies are read, and state rules apply on_error.
            log.warning("%s: serving the policy files, not ready until Redis answers", exc.message)
            await asyncio.to_thread(self.store.load)  # PolicyError: nothing to serve at all
            self._ready["redis"] = False
            self._background.append(asyncio.create_task(self._wait_for_redis()))

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(REDIS_RETRY_S)
            try:
                snapshot = await self.control.load()
            except StateError as exc:
                log.debug("Redis still unreachable: %s", exc)
                continue
            except PolicyError as exc:
                # The pushed set does not load with these files: as at a normal start, this
                # replica must not serve without them; stay not ready and try again later.
                log.error("pushed policies do not load here; not ready:\n%s", exc)
                await asyncio.sleep(30 * REDIS_RETRY_S)
                continue
            log.info("Redis answers: serving version %s", snapshot.version)
            self._ready["redis"] = True
            await self._set_health()
            return

    async def _set_health(self) -> None:
        h = health_pb2.HealthCheckResponse
        status = h.SERVING if all(self._ready.values()) else h.NOT_SERVING
        for service in ("", EXT_PROC, EXT_AUTHZ):
            await self.health.set(service, status)

    def _audit_changed(self, writable: bool) -> None:
        # Called where the record was emitted: on the loop, or on a thread (approvals).
        def apply() -> None:
            self._ready["audit"] = writable
            self._background.append(asyncio.ensure_future(self._set_health()))

        if self._loop is not None:
            self._loop.call_soon_threadsafe(apply)

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(PROBE_S)
            self._background = [t for t in self._background if not t.done()]

    def reopen_audit(self) -> None:
        """Open the audit log's path again (SIGHUP, after logrotate renamed the file)."""
        if self.local is not None:
            self.local.reopen()

    def _open_sinks(self) -> list[AuditSink]:
        sinks: list[AuditSink] = list(self._extra_sinks)
        cfg = self.config
        if cfg.audit_log:
            self.local = local = LocalAudit(
                cfg.audit_log,
                fsync_interval_s=cfg.fsync_interval_s,
                max_bytes=cfg.audit_max_bytes,
                max_age_s=cfg.audit_max_age_s,
                keep=cfg.audit_keep,
                stdout=cfg.audit_stdout,
                otlp_endpoint=cfg.otlp_endpoint if cfg.audit_otlp else None,
                checkpoint_s=cfg.audit_checkpoint_s,
                on_health=self._audit_changed,
            )
            self._background.append(asyncio.create_task(local.probe()))
            if local.otlp is not None:
                self._background.append(asyncio.create_task(local.checkpoints()))
            sinks.append(local.watched)
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
        if self.config.alert_webhook:
            sinks.append(BlockAlertSink(self.alerts))  # queues, never raises
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
        # Expired reservations go back; answers no observe stream reported are charged (observe.py)
        while True:
            await asyncio.sleep(self.config.sweep_every_s)
            try:
                await self.engine.observer.sweep()  # its own state errors wait for the next
                await self.engine.state.expire_reservations()
            except StateError as exc:
                log.warning("reservation sweep failed: %s", exc)

    @property
    def admin_port(self) -> int:
        return self.control.admin_port

    async def stop(self) -> None:
        if hasattr(self, "engine"):
            self.engine.stopping = True  # streams cut from here on are audited as such
        self._stopping = True
        await self.control.stop()
        for task in (self._watch, self._sweep, *self._background, *self._warming):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.config.grace_s)
        if hasattr(self, "engine"):
            await self.engine.drain()
            self.engine.close()
            await self.alerts.close()
        if self.sink is not None:
            self.sink.close()
        if self.local is not None:
            self.local.close_export()
        if self.state is not None:
            await self.state.close()
        if self.metrics is not None:
            await self.metrics.close()  # last: the final counts stay scrapable while draining


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    sidecar = Sidecar(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before start: a SIGTERM that comes as soon as "serving on" is logged still drains.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, sidecar.reopen_audit)  # no log yet: nothing to do
    await sidecar.start()
    await stop.wait()
    log.info("shutting down: draining open streams (up to %.0fs)", config.grace_s)
    await sidecar.stop()
