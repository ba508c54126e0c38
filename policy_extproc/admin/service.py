"""The ``policy_extproc.v1.PolicyAdmin`` servicer: messages in, admin core calls, messages out.

Every refusal becomes a gRPC status with a message a person can act on, never a traceback:

    PolicyError      INVALID_ARGUMENT     one ``check`` line per problem, newline-separated
    RequestError     INVALID_ARGUMENT     ``code: message`` (a dry run's body)
    NotFound         NOT_FOUND
    Conflict         FAILED_PRECONDITION  a file policy, an approval already decided
    AdminError       INVALID_ARGUMENT     a missing or wrong argument
    StateError       UNAVAILABLE          Redis could not be reached
    anything else    INTERNAL             logged with its traceback here, not sent
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from .._proto import admin_pb2, admin_pb2_grpc
from ..enforce import limits
from ..errors import AdminError, PolicyError, RequestError, StateError
from ..llm.catalog import Catalog
from ..policy.identity import canonical
from ..sources.store import PolicyStore, is_pushed, pushed_file
from . import convert
from .approvals import Approvals
from .auth import Identities, caller
from .errors import PROBLEMS_KEY, Conflict, NotFound
from .evaluate import dry_run
from .live import LiveDecisions
from .pushed import PushedPolicies

log = logging.getLogger(__name__)

R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message that tell a client about ``exc``."""
    if isinstance(exc, PolicyError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, RequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code}: {exc.message}"
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, exc.message
    if isinstance(exc, Conflict):
        return grpc.StatusCode.FAILED_PRECONDITION, exc.message
    if isinstance(exc, AdminError):
        return grpc.StatusCode.INVALID_ARGUMENT, exc.message
    if isinstance(exc, StateError):
        return grpc.StatusCode.UNAVAILABLE, exc.message
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def _translated(method: Handler[R]) -> Handler[R]:
    @functools.wraps(method)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except Exception as exc:
            code, message = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("admin %s failed", method.__name__)
            if isinstance(exc, PolicyError):
                context.set_trailing_metadata(((PROBLEMS_KEY, str(len(exc.problems))),))
        # Outside the handler: abort raises an exception of its own, which must not be caught.
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")

    return call


class PolicyAdmin(admin_pb2_grpc.PolicyAdminServicer):
    """policy_extproc.v1.PolicyAdmin over a sidecar's store, pushed policies, state and sinks."""

    def __init__(
        self,
        store: PolicyStore,
        pushed: PushedPolicies,
        approvals: Approvals,
        live: LiveDecisions,
        identities: Identities | None = None,
        *,
        catalog: Catalog | None = None,
        settings: limits.Settings | None = None,
    ) -> None:
        self.identities = identities
        # The sidecar's own catalog (serve --catalog) and limit settings, so a dry run prices,
        # renames and limits as the request path does.
        self.catalog = catalog
        self.settings = settings
        self.store = store
        self.pushed = pushed
        self.approvals = approvals
        self.live = live

    # -- policies ------------------------------------------------------------------------------

    @_translated
    async def ListPolicies(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        snapshot = self.store.current
        error = self.store.last_error
        return admin_pb2.ListPoliciesResponse(
            policies=[convert.policy_info(cp.policy) for cp in snapshot.policies],
            version=snapshot.version,
            repository_version=max(self.pushed.applied, 0),
            loaded_at=convert.timestamp(self.store.loaded_at),
            last_error=[str(p) for p in error.error.problems] if error is not None else [],
        )

    @_translated
    async def GetPolicy(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name = request.name
        found = next((cp.policy for cp in self.store.current.policies if cp.policy.name == name),
                     None)  # fmt: skip
        text = self.pushed.texts.get(name)
        if text is not None:  # pushed (perhaps not in force here: see ListPolicies.last_error)
            if found is not None and is_pushed(found):
                info = convert.policy_info(found)
            else:
                info = admin_pb2.PolicyInfo(name=name, source="pushed", file=pushed_file(name))
            return admin_pb2.GetPolicyResponse(policy=info, text=text)
        if found is None:
            raise NotFound(f"no policy {name!r}")
        try:
            text = await asyncio.to_thread(Path(found.file).read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AdminError(f"policy {name!r}: its file cannot be read: {exc}") from exc
        return admin_pb2.GetPolicyResponse(policy=convert.policy_info(found), text=text)

    @_translated
    async def PutPolicies(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        change = await self.pushed.put(request.text, request.file_name or "pushed")
        log.info("admin: %s pushed %s (version %s)", self._who(context), ", ".join(change.names),
                 change.version)  # fmt: skip
        return admin_pb2.PutPoliciesResponse(
            names=change.names,
            version=change.version,
            repository_version=change.repository_version,
        )

    @_translated
    async def DeletePolicy(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        change = await self.pushed.delete(request.name)
        log.info("admin: %s deleted %s (version %s)", self._who(context), request.name,
                 change.version)  # fmt: skip
        return admin_pb2.DeletePolicyResponse(
            version=change.version, repository_version=change.repository_version
        )

    @_translated
    async def Evaluate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def compile_candidate() -> Any:
            return self.pushed.candidate(request.policies, request.file_name or "pushed")

        # Compiling a candidate set and scanning a body are CPU work: off the event loop. The
        # dry run reads the server's own state (limits, budgets, approvals), consuming nothing.
        if request.policies:
            snapshot = await asyncio.to_thread(compile_candidate)
        else:
            snapshot = self.store.current
        result = await dry_run(
            snapshot,
            request.body,
            dict(request.headers),
            request.path,
            state=self.approvals.state,
            catalog=self.catalog,
            settings=self.settings,
            offload=True,
        )
        response = admin_pb2.EvaluateResponse(
            decision=convert.decision_record(result.record), explanation=result.explanation
        )
        if result.body is not None:
            response.body = result.body
        return response

    # -- approvals -----------------------------------------------------------------------------

    @_translated
    async def ListApprovals(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # Approvals hold the canonical organisation of their request (policy.identity).
        org = canonical(request.org) if request.org else None
        found = await self.approvals.list(org, request.status or None)
        return admin_pb2.ListApprovalsResponse(approvals=[convert.approval(a) for a in found])

    @_translated
    async def DecideApproval(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.verdict not in (admin_pb2.VERDICT_APPROVE, admin_pb2.VERDICT_DENY):
            raise AdminError("verdict must be VERDICT_APPROVE or VERDICT_DENY")
        approve = request.verdict == admin_pb2.VERDICT_APPROVE
        identity = caller(self.identities, context)
        # With tokens, who decides is the token's holder, never what the client says it is.
        approver = identity.name if identity is not None else request.approver
        decided = await self.approvals.decide(request.id, approve, approver, request.reason)
        log.info("admin: approval %s %s by %s", decided.id, decided.status, decided.approver)
        return convert.approval(decided)

    def _who(self, context: grpc.aio.ServicerContext) -> str:
        identity = caller(self.identities, context)
        return identity.name if identity is not None else "a loopback client"

    # -- live decisions ------------------------------------------------------------------------

    async def WatchDecisions(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        sub = self.live.subscribe(org=request.org or None, decisions=request.decisions)
        try:
            async for record, dropped in sub.records():
                yield admin_pb2.WatchDecisionsResponse(
                    record=convert.decision_record(record), dropped=dropped
                )
        finally:
            sub.close()
