"""The control plane of one sidecar: pushed policies, the live decision stream, the admin server.

``server.Sidecar`` drives it in four steps: ``check`` (refuse a bad admin listener before
anything opens), ``load`` (the pushed policies with the files: the first policy set), ``serve``
(the admin API, once the state backend and the audit sinks exist) and ``stop``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from ..audit.sink import AuditSink
from ..enforce import limits
from ..errors import StateError
from ..llm.catalog import Catalog
from ..policy.compiler import Snapshot
from ..sources.store import PolicyStore
from ..state.base import StateBackend
from ..state.policies import MemoryPolicies, PolicyRepository
from ..tls import TlsFiles
from .approvals import Approvals
from .auth import Identities, check_listen, load_identities
from .live import LiveDecisions
from .pushed import POLL_S, PushedPolicies
from .server import AdminServer
from .service import PolicyAdmin

log = logging.getLogger(__name__)


def open_repository(redis_url: str | None) -> PolicyRepository:
    """The shared repository on Redis when there is one, else one in this process."""
    if redis_url:
        from ..state.redis_policies import RedisPolicies

        return RedisPolicies.from_url(redis_url)
    return MemoryPolicies()


class ControlPlane:
    """Pushed policies, live decisions and the admin API of one sidecar."""

    def __init__(
        self,
        store: PolicyStore,
        *,
        redis_url: str | None = None,
        admin_listen: str | None = None,
        admin_token: str | None = None,
        admin_tokens: str | None = None,
        poll_s: float = POLL_S,
        repository: Callable[[str | None], PolicyRepository] = open_repository,
        admin_tls: TlsFiles | None = None,
    ) -> None:
        self.store = store
        self.admin_listen = admin_listen or None
        self.admin_token = admin_token or None
        self.admin_tokens = admin_tokens or None  # a name:role:token file or a Secret directory
        self.identities: Identities | None = None
        self.live = LiveDecisions()
        self.repository = repository(redis_url)
        self.pushed = PushedPolicies(store, self.repository, poll_s=poll_s)
        self.admin: AdminServer | None = None
        self.admin_tls = admin_tls

    @property
    def admin_port(self) -> int:
        """The bound admin port (0 when the admin API is off or not started)."""
        return self.admin.port if self.admin is not None else 0

    def check(self) -> None:
        """Refuse a non-loopback admin listener without a token (AdminError)."""
        if self.admin_listen:
            self.identities = load_identities(self.admin_token, self.admin_tokens)
            check_listen(self.admin_listen, self.identities)

    async def load(self) -> Snapshot:
        """The first policy set: files and pushed policies (PolicyError, StateError)."""
        return await self.pushed.start()

    async def serve(
        self,
        state: StateBackend,
        sink: AuditSink,
        *,
        catalog: Catalog | None = None,
        settings: limits.Settings | None = None,
    ) -> None:
        """Start the admin API, if configured; verdicts on approvals are audited to ``sink``.
        Dry runs (``Evaluate``) use the sidecar's ``catalog`` and limit ``settings``."""
        if not self.admin_listen:
            return
        approvals = Approvals(state, sink, lambda: self.store.current.version)
        if self.identities is None:
            self.identities = load_identities(self.admin_token, self.admin_tokens)
        service = PolicyAdmin(self.store, self.pushed, approvals, self.live, self.identities,
                              catalog=catalog, settings=settings)  # fmt: skip
        self.admin = AdminServer(service, self.admin_listen, self.identities, tls=self.admin_tls)
        await self.admin.start()

    async def stop(self) -> None:
        """Stop the admin API and stop following the repository."""
        if self.admin is not None:
            await self.admin.stop()
        self.live.close()
        await self.pushed.stop()
        with contextlib.suppress(StateError):
            await self.repository.close()
