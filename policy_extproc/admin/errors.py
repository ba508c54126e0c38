"""The refusals of the admin API, below ``errors.AdminError`` (code ``admin_error``).

    AdminError             admin_error     refused: bad argument, or a call the server cannot make
    ├── NotFound           not_found       no such policy or approval (or it expired)
    └── Conflict           conflict        the object is not in a state that allows the change

``admin.service`` turns them into gRPC status codes; ``PolicyError`` (a policy set that does
not load) and ``StateError`` (the shared store is unreachable) keep their own meaning.
"""

from __future__ import annotations

from ..errors import AdminError

# Trailing metadata of an INVALID_ARGUMENT for a policy set that does not load: the number of
# problem lines in the status details (so a client tells them from a one-line refusal).
PROBLEMS_KEY = "policy-problems"


class NotFound(AdminError):
    """No such policy or approval."""

    code = "not_found"
    http_status = 404


class Conflict(AdminError):
    """The change does not apply to the object as it is (a file policy, a decided approval)."""

    code = "conflict"
    http_status = 409


__all__ = ["PROBLEMS_KEY", "AdminError", "Conflict", "NotFound"]
