"""The LLM API formats, one module each: how to recognise a request, where its text lives.

To add a format, write a module with a ``FORMAT`` (an ``ApiFormat``) and list it in ``FORMATS``
(docs/api-formats.md says what a format declares).
"""

from __future__ import annotations

import re

from policy_extproc.errors import UnknownApi

from . import (
    anthropic_messages,
    aws_converse,
    google_gemini,
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_responses,
)
from .base import Api, ApiFormat

FORMATS: tuple[ApiFormat, ...] = (
    openai_chat.FORMAT,
    openai_completions.FORMAT,
    openai_embeddings.FORMAT,
    openai_responses.FORMAT,
    anthropic_messages.FORMAT,
    google_gemini.FORMAT,
    aws_converse.FORMAT,
)
BY_API: dict[Api, ApiFormat] = {f.api: f for f in FORMATS}
_SUFFIXES = tuple((s, f) for f in FORMATS for s in f.suffixes)
# Azure OpenAI: /openai/deployments/{deployment-id}/chat/completions?api-version=...; Azure
# routes by the deployment, not by the body's model (learn.microsoft.com/azure/ai-services/openai).
_AZURE_APIS = {f.azure: f for f in FORMATS if f.azure}
_AZURE = re.compile(
    r"/openai/deployments/([^/]+)/(" + "|".join(map(re.escape, _AZURE_APIS)) + r")\Z"
)


def detect(path: str) -> tuple[ApiFormat, str | None]:
    """The format a request path addresses and the Azure deployment it names; UnknownApi."""
    clean = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    m = _AZURE.search(clean)
    if m is not None:
        return _AZURE_APIS[m.group(2)], m.group(1)
    for suffix, fmt in _SUFFIXES:
        if clean.endswith(suffix):
            return fmt, None
    shown = path if len(path) <= 120 else path[:120] + "..."
    raise UnknownApi(
        f"unknown LLM API path {shown!r}: expected /v1/chat/completions, /v1/completions, "
        "/v1/embeddings, /v1/responses (OpenAI, Azure), /v1/messages (Anthropic), "
        ".../models/{m}:generateContent (Gemini) or /model/{m}/converse (Bedrock)"
    )
