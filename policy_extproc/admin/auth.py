"""Who may call the admin API: named bearer tokens with a role, or, without any, only loopback.

The admin API changes the policies every request is judged by and grants approvals, so an
admin listener reachable from the network without a token is refused at start-up. Reflection
stays open: it describes the API, it changes nothing.

Identities come from a tokens file (``--admin-tokens``, env ``POLICY_EXTPROC_ADMIN_TOKENS``):
one ``name:role:token`` per line, ``#`` comments and blank lines allowed; or a directory (a
Kubernetes Secret mounted as a volume), every visible file of which is such a file. Roles are
ordered, each allowing what the one before allows:

    viewer     list and read policies, dry runs, approvals, the live decision stream
    approver   also approve and deny
    admin      also push and delete policies

``POLICY_EXTPROC_ADMIN_TOKEN`` (or a file named by ``POLICY_EXTPROC_ADMIN_TOKEN_FILE``) is one
more token, named ``admin``, with the admin role. The files are re-read when they change (a
rotated Secret), at most once a second; a change that does not parse keeps the last good set.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ..errors import AdminError

log = logging.getLogger(__name__)

SERVICE = "policy_extproc.v1.PolicyAdmin"
TOKEN_ENV = "POLICY_EXTPROC_ADMIN_TOKEN"
TOKEN_FILE_ENV = "POLICY_EXTPROC_ADMIN_TOKEN_FILE"
TOKENS_ENV = "POLICY_EXTPROC_ADMIN_TOKENS"
ROLES = ("viewer", "approver", "admin")
_RANK = {role: n for n, role in enumerate(ROLES)}
# The role each admin RPC needs; an RPC missing here needs admin (fail closed).
METHOD_ROLES = {
    "ListPolicies": "viewer",
    "GetPolicy": "viewer",
    "Evaluate": "viewer",
    "ListApprovals": "viewer",
    "WatchDecisions": "viewer",
    "DecideApproval": "approver",
    "PutPolicies": "admin",
    "DeletePolicy": "admin",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}\Z")
RELOAD_S = 1.0


@dataclass(frozen=True, slots=True)
class Identity:
    """Who holds a token: a name (recorded as the approver) and a role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this identity's role includes ``role``."""
        return _RANK[self.role] >= _RANK.get(role, len(ROLES))


def valid_token(token: str) -> bool:
    """Printable ASCII without spaces: what an ``authorization`` header value can carry."""
    return bool(token) and all(" " < c <= "~" for c in token)


def parse_tokens(text: str, source: str) -> list[tuple[str, Identity]]:
    """``name:role:token`` lines as (token, identity); AdminError names the file and line."""
    found = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, token = rest.partition(":")
        where = f"{source}:{n}"
        if not _NAME.match(name):
            raise AdminError(f"{where}: expected name:role:token, the name {name!r} is not valid")
        if role not in _RANK:
            raise AdminError(f"{where}: role {role!r} of {name!r} is not one of {', '.join(ROLES)}")
        if not valid_token(token):
            raise AdminError(f"{where}: the token of {name!r} is empty or not printable ASCII")
        found.append((token, Identity(name, role)))
    return found


def _files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    # A mounted Secret holds ..data and timestamped directories beside its keys: skip hidden.
    return [p for p in sorted(path.iterdir()) if not p.name.startswith(".") and p.is_file()]


def _read(paths: Iterable[Path]) -> list[tuple[str, Identity]]:
    found = []
    for file in paths:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AdminError(f"cannot read the admin tokens file {file}: {exc}") from exc
        found.extend(parse_tokens(text, str(file)))
    return found


def _table(entries: Iterable[tuple[str, Identity]]) -> dict[str, Identity]:
    table: dict[str, Identity] = {}
    names: set[str] = set()
    for token, identity in entries:
        if token in table:
            raise AdminError(f"two identities share a token ({table[token].name}, {identity.name})")
        if identity.name in names:
            raise AdminError(f"two tokens are named {identity.name!r}: approvers must be unique")
        table[token] = identity
        names.add(identity.name)
    return table


class Identities:
    """Tokens and who holds them; falsy when there are none (then: loopback only)."""

    def __init__(
        self,
        static: Mapping[str, Identity] | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._static = dict(static or {})
        self._path = Path(path) if path else None
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._checked = 0.0
        self._table = self._static
        if self._path is not None:
            self._signature = self._stat()
            self._table = _table([*self._static.items(), *_read(_files(self._path))])

    @classmethod
    def single(cls, token: str) -> Identities:
        """One admin token, named ``admin`` (``POLICY_EXTPROC_ADMIN_TOKEN``)."""
        return cls({token: Identity("admin", "admin")})

    def __bool__(self) -> bool:
        return bool(self._table)

    def __len__(self) -> int:
        return len(self._table)

    @property
    def names(self) -> list[tuple[str, str]]:
        """(name, role) of every identity."""
        return sorted((i.name, i.role) for i in self._table.values())

    def first(self, role: str) -> str | None:
        """A token of the lowest role that includes ``role`` (a dashboard's own reader)."""
        ranked = sorted(self._table.items(), key=lambda kv: (_RANK[kv[1].role], kv[1].name))
        return next((t for t, i in ranked if i.may(role)), None)

    def identify(self, token: str) -> Identity | None:
        """The identity holding ``token``, or None; compares in constant time."""
        self._refresh()
        found = None
        given = token.encode()
        for known, identity in self._table.items():
            # Every entry is compared: the time taken must not tell which token came close.
            if hmac.compare_digest(given, known.encode()):
                found = identity
        return found

    def identify_metadata(self, metadata: Any) -> Identity | None:
        """The identity of ``authorization: Bearer <token>`` in gRPC metadata, or None."""
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, given = value.partition(" ")
                if scheme.lower() == "bearer":
                    return self.identify(given.strip())
                return None
        return None

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        assert self._path is not None
        out = []
        for p in _files(self._path):
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _refresh(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._checked < RELOAD_S:
            return
        self._checked = now
        try:
            signature = self._stat()
            if signature == self._signature:
                return
            table = _table([*self._static.items(), *_read(_files(self._path))])
        except (OSError, AdminError) as exc:
            log.error("admin tokens not reloaded, keeping the last good set: %s", exc)
            return
        self._signature, self._table = signature, table
        log.info("admin tokens reloaded: %d identities", len(table))


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``POLICY_EXTPROC_ADMIN_TOKEN``, else the file named by ``..._TOKEN_FILE``; trimmed."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()  # a token from a Secret often ends with a newline
    file = env.get(TOKEN_FILE_ENV, "").strip()
    if not token and file:
        try:
            token = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AdminError(f"cannot read {TOKEN_FILE_ENV}={file}: {exc}") from exc
    if token and not valid_token(token):
        raise AdminError(f"{TOKEN_ENV} holds characters a bearer token cannot carry")
    return token or None


def load_identities(
    token: str | None = None, tokens_path: str | os.PathLike[str] | None = None
) -> Identities:
    """The single admin token and the tokens file or directory, together (AdminError)."""
    static = {token: Identity("admin", "admin")} if token else {}
    if tokens_path and not Path(tokens_path).exists():
        raise AdminError(f"the admin tokens file {tokens_path} does not exist")
    return Identities(static, tokens_path or None)


def is_loopback(listen: str) -> bool:
    """Whether ``HOST:PORT`` (or ``[v6]:PORT``) names a loopback address only."""
    host = listen.rsplit(":", 1)[0].strip("[]") if ":" in listen else listen
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost could resolve to anything


def check_listen(listen: str, tokens: Identities | str | None) -> None:
    """Refuse a non-loopback admin listener without a token (AdminError, the message says why)."""
    if not tokens and not is_loopback(listen):
        raise AdminError(
            f"refusing to serve the admin API on {listen} without a token: it can change "
            f"policies and grant approvals. Set {TOKENS_ENV} (name:role:token lines) or "
            f"{TOKEN_ENV}, or listen on loopback (--admin-listen 127.0.0.1:50052)"
        )


def caller(identities: Identities | None, context: grpc.aio.ServicerContext) -> Identity | None:
    """The identity of the call being served (None when the API runs without tokens)."""
    if not identities:
        return None
    return identities.identify_metadata(context.invocation_metadata())


class TokenAuth(grpc.aio.ServerInterceptor):
    """PolicyAdmin calls need a known bearer token (UNAUTHENTICATED) of the role the RPC needs
    (PERMISSION_DENIED, naming both)."""

    def __init__(self, identities: Identities) -> None:
        self._identities = identities

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(f"/{SERVICE}/"):
            return handler
        identity = self._identities.identify_metadata(details.invocation_metadata)
        if identity is None:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)
        method = details.method.rsplit("/", 1)[-1]
        needed = METHOD_ROLES.get(method, "admin")
        if not identity.may(needed):
            message = f"{identity.name} has the role {identity.role}; {method} needs {needed}"
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED, message)
        return handler


_MESSAGE = f"missing or wrong bearer token (authorization: Bearer ${TOKEN_ENV})"


def _refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    # A handler of the same shape as the refused one, so the client reads a clean status.
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        await context.abort(code, message)
        yield None  # unreachable: makes this an async generator, as stream handlers are

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary, **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary, **codec)
    return grpc.stream_stream_rpc_method_handler(stream, **codec)
