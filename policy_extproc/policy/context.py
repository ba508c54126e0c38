"""Who is asking: the request context from verified JWT claims, then request headers (DESIGN s4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .decision import RequestContext

if TYPE_CHECKING:
    from ..llm.request import LlmRequest


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """Header and claim names that carry identity; the defaults are DESIGN.md s4's."""

    org_header: str = "x-org-id"
    team_header: str = "x-team-id"
    user_header: str = "x-user-id"
    environment_header: str = "x-environment"
    roles_header: str = "x-user-roles"
    tags_header: str = "x-request-tags"
    approval_header: str = "x-approval-id"
    org_claim: str = "org"
    team_claim: str = "team"
    user_claim: str = "sub"
    environment_claim: str = "environment"
    roles_claim: str = "roles"


DEFAULT_IDENTITY = IdentityConfig()


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_tags(value: str) -> dict[str, str]:
    """``key=value`` pairs, comma-separated; an item without ``=`` is a tag with value "true"."""
    tags = {}
    for item in _split(value):
        key, sep, val = item.partition("=")
        tags[key.strip()] = val.strip() if sep else "true"
    return tags


def _claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def build_context(
    headers: Mapping[str, str],
    request: LlmRequest | None = None,
    *,
    claims: Mapping[str, Any] | None = None,
    config: IdentityConfig = DEFAULT_IDENTITY,
) -> RequestContext:
    """The request context; ``headers`` keys are lower-case, ``claims`` are verified JWT claims.

    A claim, when present, wins over the header of the same meaning: in JWT mode the shipped
    Envoy configuration also strips the headers, so a client cannot claim another tenant.
    """
    claims = claims or {}

    def pick(claim: str, header: str) -> str:
        value = _claim(claims, claim)
        return value if value is not None else headers.get(header, "")

    roles = pick(config.roles_claim, config.roles_header)
    return RequestContext(
        org=pick(config.org_claim, config.org_header).strip(),
        team=pick(config.team_claim, config.team_header).strip(),
        user=pick(config.user_claim, config.user_header).strip(),
        environment=pick(config.environment_claim, config.environment_header).strip(),
        roles=frozenset(_split(roles)),
        tags=parse_tags(headers.get(config.tags_header, "")),
        request_id=headers.get("x-request-id", ""),
        request=request,
        approval_id=headers.get(config.approval_header) or None,
    )
