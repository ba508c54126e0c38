"""What the OpenAI formats share on the response side: usage objects, chunk text, refusals."""

from __future__ import annotations

from typing import Any

from .base import PromptPart
from .wire import (
    Json,
    Refusal,
    ResponseInfo,
    Usage,
    answer_info,
    compact,
    count,
    finish_reasons,
    first,
)

_RESPONSES_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def openai_usage(usage: Any) -> Usage | None:
    """Usage from an OpenAI usage object, either shape.

    Chat/completions/embeddings: prompt_tokens, completion_tokens,
    prompt_tokens_details.cached_tokens; Responses API: input_tokens, output_tokens,
    input_tokens_details.cached_tokens. In both the input count includes the cached tokens.
    """
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:
        details = usage.get("prompt_tokens_details")
        in_key, out_key = "prompt_tokens", "completion_tokens"
    elif "input_tokens" in usage:
        details = usage.get("input_tokens_details")
        in_key, out_key = "input_tokens", "output_tokens"
    else:
        return None
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(count(usage.get(in_key)), count(usage.get(out_key)), cached)


def body_usage(body: Json) -> Usage | None:
    return openai_usage(body.get("usage"))


def chunk_usage(payload: Json, event: str | None, usage: Usage | None) -> Usage | None:
    """Chat and completions: with stream_options.include_usage every chunk has "usage": null
    except the last, which has empty choices and the usage of the whole request."""
    return openai_usage(payload.get("usage")) or usage


def responses_usage(payload: Json, event: str | None, usage: Usage | None) -> Usage | None:
    """Responses API: the final event (completed, incomplete, failed) carries the response."""
    if payload.get("type", event) in _RESPONSES_FINAL:
        response = payload.get("response")
        if isinstance(response, dict):
            return openai_usage(response.get("usage")) or usage
    return usage


def choices_info(
    payload: Json, event: str | None, info: ResponseInfo | None
) -> ResponseInfo | None:
    """Chat and completions, a body or a chunk alike: id, model, each choice's finish_reason
    (a chunk carries a choice's reason once, when that choice ends)."""
    reasons = finish_reasons(payload.get("choices"), "finish_reason")
    if not reasons and info is not None and info.model and info.id:
        return info  # a stream's every chunk repeats id and model: nothing new (the usual case)
    return answer_info(info, model=payload.get("model"), id=payload.get("id"), reasons=reasons)


def model_info(payload: Json, event: str | None, info: ResponseInfo | None) -> ResponseInfo | None:
    """Embeddings: the answer names its model, and has no id and no finish reason."""
    return answer_info(info, model=payload.get("model"))


def responses_info(
    payload: Json, event: str | None, info: ResponseInfo | None
) -> ResponseInfo | None:
    """Responses API: the response object (a body, or the ``response`` of the stream's
    response.* lifecycle events). It has no finish reason: its ``status`` stands in
    (completed, failed), or for an incomplete one the reason (max_output_tokens, ...)."""
    kind = payload.get("type", event)
    if kind is None and payload.get("object", "response") == "response":
        response: Any = payload  # a buffered body (a stream's events all have a type)
    elif isinstance(kind, str) and kind.startswith("response.") and "response" in payload:
        response = payload["response"]
    else:
        return info
    if not isinstance(response, dict):
        return info
    reasons: tuple[Any, ...] = ()
    status = response.get("status")
    if status == "incomplete":
        details = response.get("incomplete_details")
        reasons = ((details.get("reason") if isinstance(details, dict) else None) or status,)
    elif status in ("completed", "failed", "cancelled"):
        reasons = (status,)
    if info is not None and info.finish_reasons:
        reasons = ()  # the last lifecycle event repeats what the final one said
    return answer_info(info, model=response.get("model"), id=response.get("id"), reasons=reasons)


def chat_delta(payload: Any) -> str | None:
    choice = first(payload, "choices")
    delta = choice.get("delta") if choice is not None else None
    text = delta.get("content") if isinstance(delta, dict) else None
    return text if isinstance(text, str) else None


def set_chat_delta(payload: Any, text: str) -> None:
    payload["choices"][0]["delta"]["content"] = text


def completion_delta(payload: Any) -> str | None:
    choice = first(payload, "choices")
    text = choice.get("text") if choice is not None else None
    return text if isinstance(text, str) else None


def set_completion_delta(payload: Any, text: str) -> None:
    payload["choices"][0]["text"] = text


def chunk_refusal(r: Refusal) -> bytes:
    """Chat and completions: an error chunk as OpenAI sends one mid-stream, then [DONE]."""
    return f"data: {compact({'error': r.fields(), **r.extra()})}\n\ndata: [DONE]\n\n".encode()


def add_text(parts: list[PromptPart], obj: Json, key: str, path: tuple[str | int, ...]) -> None:
    text = obj.get(key)
    if isinstance(text, str) and text:
        parts.append(PromptPart((*path, key), text, "assistant"))
