"""Who is asking: the request context from verified JWT claims, then request headers (DESIGN s4).

Identity is canonical and required:

- organisation, team, environment and roles are compared case-insensitively after trimming
  (``policy.identity.canonical``); the context holds the canonical form, and so do audit records;
- two values for one identity (a repeated header, which Envoy and ``translate`` fold into
  ``a,b``, a folded ``acme, x``, or a claim that is a list of two) are refused
  (``AmbiguousIdentity``): no policy can say which one the request belongs to;
- a request that names no organisation is refused (``MissingIdentity``) unless the operator
  started the sidecar with ``--allow-anonymous``: a policy scoped to an organisation must never
  be walked around by leaving the header out. Policies with an empty scope apply to everyone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import AmbiguousIdentity, MissingIdentity
from ..llm.catalog import Catalog, ModelJudge
from .decision import RequestContext
from .identity import canonical

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
    # A request without an organisation is decided by the policies of empty scope only, instead
    # of refused with missing_identity (``serve --allow-anonymous``).
    allow_anonymous: bool = False


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
    catalog: Catalog | ModelJudge | None = None,
    strict: bool = True,
) -> RequestContext:
    """The request context; ``headers`` keys are lower-case, ``claims`` are verified JWT claims.

    A claim, when present, wins over the header of the same meaning: in JWT mode the shipped
    Envoy configuration also strips the headers, so a client cannot claim another tenant.
    ``strict``: two values for one identity raise ``AmbiguousIdentity``; otherwise (the audit
    record of a refusal) that field is left empty. ``catalog`` resolves the model the policies
    judge (an Azure deployment to its model); it is required with a ``request``: the caller
    holds the catalog in force (``sources.catalog`` reads it), this module reads no file.
    """
    claims = claims or {}
    org = _single(claims, headers, config.org_claim, config.org_header, True, strict)
    team = _single(claims, headers, config.team_claim, config.team_header, True, strict)
    user = _single(claims, headers, config.user_claim, config.user_header, False, strict)
    env = _single(
        claims, headers, config.environment_claim, config.environment_header, True, strict
    )
    roles = _pick(claims, headers, config.roles_claim, config.roles_header)
    model = ""
    if request is not None:
        if catalog is None:
            raise TypeError("build_context needs the catalog to judge a request's model")
        model = catalog.judged_model(request.model, request.deployment)
    tags = headers.get(config.tags_header)
    return RequestContext(
        org=org,
        team=team,
        user=user,
        environment=env,
        roles=_roles(roles) if roles else frozenset(),
        tags=parse_tags(tags) if tags else {},
        request_id=headers.get("x-request-id", ""),
        request=request,
        approval_id=headers.get(config.approval_header) or None,
        model=model,
    )


def _roles(value: str) -> frozenset[str]:
    if value.isascii():  # the common case: fold the whole list at once
        return frozenset(_split(value.lower()))
    return frozenset(canonical(r) for r in _split(value))


def _pick(claims: Mapping[str, Any], headers: Mapping[str, str], claim: str, header: str) -> str:
    value = _claim(claims, claim) if claims else None
    return value if value is not None else headers.get(header, "")


def _single(
    claims: Mapping[str, Any],
    headers: Mapping[str, str],
    claim: str,
    header: str,
    fold: bool,
    strict: bool,
) -> str:
    """The one value of an identity, canonical when ``fold``; two values are ambiguous."""
    raw = _pick(claims, headers, claim, header)
    if "," not in raw:  # the common case: one value, no list to split
        value = raw.strip()
        return canonical(value) if fold and value else value
    values = _split(raw)
    if len(values) > 1:
        if strict:
            source = f"claim '{claim}'" if claims and _claim(claims, claim) is not None else header
            raise AmbiguousIdentity(
                f"{source} carries {len(values)} values; a request names one (send the "
                "header once, without commas)"
            )
        return ""
    if not values:
        return ""
    return canonical(values[0]) if fold else values[0]


def require_identity(ctx: RequestContext, config: IdentityConfig = DEFAULT_IDENTITY) -> None:
    """Refuse a request that names no organisation, unless anonymous requests are allowed."""
    if not ctx.org and not config.allow_anonymous:
        raise MissingIdentity(
            f"the request names no organisation (header {config.org_header} or a verified "
            f"token claim '{config.org_claim}')"
        )
