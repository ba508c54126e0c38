"""What the OpenAI formats share on the response side: usage objects, chunk text, refusals."""

from __future__ import annotations

from typing import Any

from .base import PromptPart
from .wire import Json, Refusal, Usage, compact, count, first

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
