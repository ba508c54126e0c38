"""ext_authz adapter: the same engine, answered as allow (200 OK) or deny (a JSON refusal).

ext_authz cannot rewrite a body. A request that a policy wants redacted (``modify``) is
therefore refused (403 ``redaction_unavailable``, one audit record), never let through
unredacted: failing open is a setting elsewhere, never a silent side effect. Deployments that
redact use ext_proc.
"""

from __future__ import annotations

import logging

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth
from envoy.type.v3 import http_status_pb2
from google.rpc import status_pb2

from ..errors import PolicyExtprocError
from ..policy.decision import Decision
from . import answers, translate
from .admission import Admission
from .engine import Engine, RedactionUnavailable
from .exchange import Exchange

log = logging.getLogger(__name__)

_OK = 0
_PERMISSION_DENIED = 7


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _refuse(engine: Engine, ex: Exchange, exc: PolicyExtprocError) -> Decision:
    """Refuse for ``exc``; when even that cannot be audited, still answer with a JSON refusal
    (an RPC error would leave the client with Envoy's bare status_on_error)."""
    try:
        decision = engine.refuse(ex, exc)
        engine.perform(ex.take_effects())
        return decision
    except Exception as audit_exc:
        log.error("ext_authz: could not audit the refusal (%s): %s", exc.code, audit_exc)
        cause = audit_exc if isinstance(audit_exc, PolicyExtprocError) else exc
        return answers.request_error(cause)


async def check(
    engine: Engine, request: auth.CheckRequest, *, admission: Admission | None = None
) -> auth.CheckResponse:
    """Decide one ext_authz CheckRequest; with ``admission``, shed it when overloaded."""
    attrs = request.attributes
    http = attrs.request.http
    headers = {k.lower(): v for k, v in http.headers.items()}
    if http.HasField("header_map"):
        # encode_raw_headers: true sends the headers here, values in raw_value, and leaves
        # ``headers`` empty; repeated headers fold into one comma-separated value (Envoy folds
        # them so in ``headers`` too): a repeated identity header is refused as ambiguous.
        for h in http.header_map.headers:
            key = h.key.lower()
            value = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    headers.setdefault(":path", http.path)
    headers.setdefault(":method", http.method)
    if http.id:
        headers.setdefault("x-request-id", http.id)
    body = http.raw_body or http.body.encode()
    # Verified JWT claims (metadata_context_namespaces: [envoy.filters.http.jwt_authn]) win over
    # identity headers, as for ext_proc (DESIGN.md s4).
    claims = translate.jwt_claims(attrs.metadata_context)
    ex = engine.begin(headers, claims)
    if admission is None:
        return await _decide(engine, ex, body)
    path = headers.get(":path", "")
    age_s = None
    if attrs.request.HasField("time"):  # when Envoy got the request (AttributeContext.Request)
        age_s = max(0.0, engine.clock.wall_s() - attrs.request.time.ToNanoseconds() / 1e9)
    shed = admission.admit(path, age_s)
    if shed is not None:
        try:
            decision = engine.shed(ex, shed)
            engine.perform(ex.take_effects())
        except Exception:
            decision = _refuse(engine, ex, shed)
        return _answer(ex, decision)
    try:
        return await _decide(engine, ex, body)
    finally:
        admission.release()


async def _decide(engine: Engine, ex: Exchange, body: bytes) -> auth.CheckResponse:
    headers = ex.headers
    try:
        # Envoy's with_request_body sets allow_partial_message: a body cut at max_request_bytes
        # is shorter than its declared length, and is refused rather than half-evaluated.
        declared = headers.get("content-length", "")
        complete = not (declared.isdigit() and int(declared) > len(body))
        # redact=False: a request to be redacted is refused by the engine, one record for it.
        decision, _ = await engine.decide_request(ex, body, complete=complete, redact=False)
        engine.perform(ex.take_effects())  # the audit record, before the answer
    except PolicyExtprocError as exc:
        decision = _refuse(engine, ex, exc)
    except Exception:
        log.exception("ext_authz check failed")
        decision = _refuse(engine, ex, PolicyExtprocError("internal error"))
    return _answer(ex, decision)


def _answer(ex: Exchange, decision: Decision) -> auth.CheckResponse:
    rid = ex.request_id
    if decision.action == "allow":
        return auth.CheckResponse(
            status=status_pb2.Status(code=_OK),
            ok_response=auth.OkHttpResponse(
                response_headers_to_add=[
                    _header(answers.DECISION_HEADER, decision.action),
                    _header(answers.REQUEST_ID_HEADER, rid),
                ],
            ),
        )
    refusal = answers.refusal(decision, rid)
    return auth.CheckResponse(
        status=status_pb2.Status(code=_PERMISSION_DENIED, message=answers.public_reason(decision)),
        denied_response=auth.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=refusal.status),
            headers=[_header(k, v) for k, v in refusal.headers],
            body=refusal.body.decode(),
        ),
    )


__all__ = ["RedactionUnavailable", "check"]
