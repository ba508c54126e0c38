"""Which handler answers a path, with what content type when it streams, and the error body
of the provider behind it."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from urllib.parse import unquote

from policy_extproc.mockprovider.apis import (
    Json,
    Reply,
    chat_completions,
    completions,
    converse,
    embeddings,
    gemini,
    messages,
    responses,
)

_GEMINI = re.compile(r"/([^/:]+):(generateContent|streamGenerateContent)\Z")
_CONVERSE = re.compile(r"/model/([^/]+)/(converse|converse-stream)\Z")


# Path suffixes, so Azure OpenAI paths (/openai/deployments/D/chat/completions) work too.
APIS: dict[str, Callable[[Json], Reply]] = {
    "/chat/completions": chat_completions,
    "/completions": completions,
    "/embeddings": embeddings,
    "/responses": responses,
    "/messages": messages,
}
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "unknown_url"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def api_for(path: str) -> Callable[[Json], Reply] | None:
    """The handler for a path (its query string ignored), bound to the model a path names."""
    clean, _, query = path.partition("?")
    m = _GEMINI.search(clean)
    if m is not None:
        stream = m.group(2) == "streamGenerateContent" and "alt=sse" in query.split("&")
        return partial(gemini, model=m.group(1), stream=stream)
    m = _CONVERSE.search(clean)
    if m is not None:
        return partial(converse, model=unquote(m.group(1)), stream=m.group(2) == "converse-stream")
    return next((fn for suffix, fn in APIS.items() if clean.endswith(suffix)), None)


def stream_type(path: str) -> str:
    """The content type of a streamed answer on path: event-stream for Bedrock, else SSE."""
    if _CONVERSE.search(path.partition("?")[0]):
        return "application/vnd.amazon.eventstream"
    return "text/event-stream"


_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                  503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip


def error_body(path: str, status: int, message: str) -> Json:
    """The error body the provider behind path would send: Anthropic's for /messages, Google's
    (google.rpc.Status) for Gemini, Bedrock's bare message for Converse, else OpenAI's."""
    clean = path.partition("?")[0]
    if _GEMINI.search(clean):
        status_name = _GOOGLE_STATUS.get(status, "UNKNOWN")
        return {"error": {"code": status, "message": message, "status": status_name}}
    if _CONVERSE.search(clean):
        return {"message": message}
    if clean.endswith("/messages"):
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind, code = _OPENAI_ERRORS.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
