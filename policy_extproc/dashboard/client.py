"""The admin API as the dashboard calls it: one channel, the signed-in person's token per call."""

from __future__ import annotations

from typing import Any

import grpc

from .._proto import admin_pb2, admin_pb2_grpc
from ..admin.errors import PROBLEMS_KEY

TIMEOUT_S = 10.0


class AdminCallError(Exception):
    """A refused or failed admin call, in words a person can act on."""

    def __init__(self, code: str, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(code, message)
        self.code = code  # the gRPC status name, lower-case
        self.message = message
        self.problems = problems  # one check line each, for a refused policy set

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def _error(exc: grpc.aio.AioRpcError, admin: str) -> AdminCallError:
    code, details = exc.code(), exc.details() or ""
    trailers = dict(exc.trailing_metadata() or ())
    if code == grpc.StatusCode.INVALID_ARGUMENT and PROBLEMS_KEY in trailers:
        return AdminCallError("invalid_argument", "the policy set does not load",
                              tuple(details.splitlines()))  # fmt: skip
    if code == grpc.StatusCode.UNAVAILABLE and "redis" not in details.lower():
        return AdminCallError("unavailable", f"cannot reach the admin API at {admin}: {details}")
    return AdminCallError(code.name.lower(), details)


class AdminClient:
    """Async calls to ``policy_extproc.v1.PolicyAdmin`` on ``address``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None

    @property
    def stub(self) -> Any:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        return admin_pb2_grpc.PolicyAdminStub(self._channel)

    async def call(self, method: str, request: Any, token: str | None) -> Any:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            return await getattr(self.stub, method)(request, metadata=metadata, timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self.address) from None

    def watch(self, token: str | None) -> Any:
        """The WatchDecisions stream (every decision of that replica from now on)."""
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return self.stub.WatchDecisions(admin_pb2.WatchDecisionsRequest(), metadata=metadata)

    async def list_policies(self, token: str | None) -> Any:
        return await self.call("ListPolicies", admin_pb2.ListPoliciesRequest(), token)

    async def get_policy(self, name: str, token: str | None) -> Any:
        return await self.call("GetPolicy", admin_pb2.GetPolicyRequest(name=name), token)

    async def put(self, text: str, file_name: str, token: str | None) -> Any:
        request = admin_pb2.PutPoliciesRequest(text=text, file_name=file_name)
        return await self.call("PutPolicies", request, token)

    async def delete(self, name: str, token: str | None) -> Any:
        return await self.call("DeletePolicy", admin_pb2.DeletePolicyRequest(name=name), token)

    async def evaluate(
        self,
        body: bytes,
        headers: dict[str, str],
        token: str | None,
        *,
        path: str = "",
        policies: str = "",
        file_name: str = "",
    ) -> Any:
        request = admin_pb2.EvaluateRequest(
            body=body, headers=headers, path=path, policies=policies, file_name=file_name
        )
        return await self.call("Evaluate", request, token)

    async def approvals(self, token: str | None, status: str = "") -> Any:
        request = admin_pb2.ListApprovalsRequest(status=status)
        return (await self.call("ListApprovals", request, token)).approvals

    async def decide(self, approval_id: str, approve: bool, reason: str, token: str | None,
                     approver: str = "") -> Any:  # fmt: skip
        verdict = admin_pb2.VERDICT_APPROVE if approve else admin_pb2.VERDICT_DENY
        request = admin_pb2.DecideApprovalRequest(
            id=approval_id, verdict=verdict, reason=reason, approver=approver
        )
        return await self.call("DecideApproval", request, token)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
