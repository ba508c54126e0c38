"""The one module that knows Envoy's ext_proc protobufs: messages in, replies out.

Facts of the protocol it follows (DESIGN.md s8):
- header values travel in ``raw_value`` (bytes); we read either field and set ``raw_value`` only;
- a body mutation goes with a matching ``content-length`` mutation (``answers`` adds it);
- ``clear_route_cache`` goes in the same ``CommonResponse`` as the header that picks the route;
- decisions go back as dynamic metadata under our namespace (``receiving_namespaces``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format, struct_pb2

from .admission import request_time_s
from .envoy_replies import Continue, Extend, Immediate, Phase, Reply

NAMESPACE = "policy_extproc"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"  # the key of the filter's request_attributes
JWT_NAMESPACE = "envoy.filters.http.jwt_authn"

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_BODY_MODES = {
    "NONE": processing_mode_pb2.ProcessingMode.NONE,
    "STREAMED": processing_mode_pb2.ProcessingMode.STREAMED,
    "BUFFERED": processing_mode_pb2.ProcessingMode.BUFFERED,
    "BUFFERED_PARTIAL": processing_mode_pb2.ProcessingMode.BUFFERED_PARTIAL,
}


def _no_response(request_body_mode: int) -> processing_mode_pb2.ProcessingMode:
    """A mode override that asks Envoy for no response phase, and the request body or not."""
    mode = processing_mode_pb2.ProcessingMode
    return mode(
        request_header_mode=mode.SEND,
        request_body_mode=request_body_mode,
        request_trailer_mode=mode.SKIP,
        response_header_mode=mode.SKIP,
        response_body_mode=mode.NONE,
        response_trailer_mode=mode.SKIP,
    )


_COMMON_PHASES = frozenset({"request_headers", "response_headers", "request_body", "response_body"})
_SKIP_RESPONSE = _no_response(processing_mode_pb2.ProcessingMode.BUFFERED)
_SKIP_REST = _no_response(processing_mode_pb2.ProcessingMode.NONE)


@dataclass(frozen=True, slots=True)
class Event:
    """One incoming ext_proc message, decoded."""

    phase: Phase | None  # None: a message kind we do not know
    headers: Mapping[str, str]
    body: bytes
    end_of_stream: bool
    claims: Mapping[str, Any] | None = None
    # Envoy's request.time attribute (request_attributes, sent with the request headers), in
    # seconds since the epoch: when Envoy got the request (admission control's queue age).
    request_time_s: float | None = None


def _headers(hm: base_pb2.HeaderMap) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in hm.headers:
        raw = h.raw_value  # each read of a field makes a new Python object
        value = raw.decode("utf-8", "replace") if raw else h.value
        key = h.key.lower()
        # Repeated headers fold into one comma-separated value (RFC 9110 s5.3), as Envoy folds
        # them for ext_authz: an identity header sent twice reads as two values, and is
        # refused as ambiguous (policy.context), never decided as the first or the last one.
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def _claims(msg: ep.ProcessingRequest) -> Mapping[str, Any] | None:
    if not msg.HasField("metadata_context"):
        return None
    return jwt_claims(msg.metadata_context)


def jwt_claims(metadata: base_pb2.Metadata) -> Mapping[str, Any] | None:
    """Verified JWT claims from the jwt_authn namespace of Envoy dynamic metadata, if any.

    ext_proc forwards it in ``metadata_context`` (``metadata_options.forwarding_namespaces``),
    ext_authz in ``attributes.metadata_context`` (``metadata_context_namespaces``).
    """
    ns = metadata.filter_metadata.get(JWT_NAMESPACE)
    if ns is None:
        return None
    data = json_format.MessageToDict(ns)
    # jwt_authn writes the payload under the key named by ``payload_in_metadata``; take the
    # one mapping that looks like claims (our configurations name it ``jwt_payload``).
    payload = data.get("jwt_payload")
    if isinstance(payload, dict):
        return payload
    mappings = [v for v in data.values() if isinstance(v, dict)]
    # With header_in_metadata the JOSE header ({alg, kid, typ}) sits beside the payload: taking
    # it would drop the verified identity. A payload has registered claims (RFC 7519 s4.1).
    for v in mappings:
        if "sub" in v or "iss" in v:
            return v
    return mappings[0] if len(mappings) == 1 else None


_OWN_KEYS = ("observe", "org", "request_id", "api")  # what the observe stream reads (observe.py)


def own_metadata(msg: ep.ProcessingRequest) -> dict[str, Any] | None:
    """The keys the observe stream reads of our namespace of Envoy's dynamic metadata, which
    the inline filter set on the request (``metadata_options.forwarding_namespaces``). Read
    field by field: MessageToDict of the whole namespace costs more than the rest of it."""
    if not msg.HasField("metadata_context"):
        return None
    ns = msg.metadata_context.filter_metadata.get(NAMESPACE)
    if ns is None:
        return None
    out: dict[str, Any] = {}
    for key in _OWN_KEYS:
        if key in ns.fields:
            value = ns.fields[key]
            kind = value.WhichOneof("kind")
            out[key] = value.bool_value if kind == "bool_value" else value.string_value
    return out


def _request_time(msg: ep.ProcessingRequest) -> float | None:
    attrs = msg.attributes.get(EXT_PROC_FILTER) if msg.attributes else None
    if attrs is None or "request.time" not in attrs.fields:
        return None
    return request_time_s(attrs.fields["request.time"].string_value)


def event(msg: ep.ProcessingRequest) -> Event:
    """Decode one ProcessingRequest."""
    kind = msg.WhichOneof("request")
    claims = _claims(msg)
    if kind == "request_headers":
        h = msg.request_headers
        return Event(kind, _headers(h.headers), b"", h.end_of_stream, claims, _request_time(msg))
    if kind == "response_headers":
        h = msg.response_headers
        return Event(kind, _headers(h.headers), b"", h.end_of_stream, claims)
    if kind in ("request_body", "response_body"):
        b = getattr(msg, kind)
        return Event(kind, {}, b.body, b.end_of_stream, claims)
    if kind in ("request_trailers", "response_trailers"):
        return Event(kind, {}, b"", True, claims)
    return Event(None, {}, b"", False, claims)


def _mutation(
    set_headers: tuple[tuple[str, str], ...], remove: tuple[str, ...]
) -> ep.HeaderMutation:
    return ep.HeaderMutation(
        set_headers=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=k, raw_value=v.encode()), append_action=_OVERWRITE
            )
            for k, v in set_headers
        ],
        remove_headers=list(remove),
    )


def _struct(metadata: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if all(type(v) is str for v in metadata.values()):
        # What answers.metadata gives: strings only, set field by field (Struct.update walks
        # every value through Python-level type dispatch; half the time for these).
        fields = s.fields[NAMESPACE].struct_value.fields
        for key, value in metadata.items():
            fields[key].string_value = value
    else:
        s.update({NAMESPACE: dict(metadata)})
    return s


def extend(reply: Extend) -> ep.ProcessingResponse:
    """A ProcessingResponse holding only ``override_message_timeout`` (ext_proc v3 proto)."""
    msg = ep.ProcessingResponse()
    msg.override_message_timeout.FromNanoseconds(int(reply.seconds * 1e9))
    return msg


def response(reply: Reply) -> ep.ProcessingResponse:
    """Encode one reply as the ProcessingResponse Envoy expects."""
    if isinstance(reply, Immediate):
        msg = ep.ProcessingResponse(
            immediate_response=ep.ImmediateResponse(
                status=http_status_pb2.HttpStatus(code=reply.status),
                headers=_mutation(reply.headers, ()),
                body=reply.body,
                details=reply.details,
            )
        )
        if reply.metadata:
            msg.dynamic_metadata.CopyFrom(_struct(reply.metadata))
        return msg
    return _continue(reply)


def _continue(reply: Continue) -> ep.ProcessingResponse:
    msg = ep.ProcessingResponse()
    phase = reply.phase
    if phase in _COMMON_PHASES:
        # Filled in place (no CommonResponse built apart and copied in): replies are per message.
        common = getattr(msg, phase).response
        common.SetInParent()  # an empty CommonResponse still says which phase it answers
        if reply.set_headers or reply.remove_headers:
            common.header_mutation.CopyFrom(_mutation(reply.set_headers, reply.remove_headers))
        if reply.body is not None:
            common.body_mutation.body = reply.body
        if reply.clear_route_cache:
            common.clear_route_cache = True
    elif phase == "request_trailers":
        msg.request_trailers.SetInParent()
    else:
        msg.response_trailers.SetInParent()
    if reply.response_body_mode is not None:
        msg.mode_override.response_body_mode = _BODY_MODES[reply.response_body_mode]
    if reply.skip_response:
        # Envoy applies the whole ProcessingMode it is given (ext_proc.cc onReceiveMessage), so
        # the request side is restated as configured: headers sent, body buffered.
        msg.mode_override.CopyFrom(_SKIP_RESPONSE)
    if reply.skip_rest:
        msg.mode_override.CopyFrom(_SKIP_REST)
    if reply.metadata:
        msg.dynamic_metadata.CopyFrom(_struct(reply.metadata))
    return msg
