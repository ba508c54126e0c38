"""LLM response bodies and streams: token usage, what the answer says about itself (model, id,
finish reasons: ``ResponseInfo``) and the model's output text.

This is the facade the rest of the code imports; each API format declares its own answers in
its module under ``llm/apis/`` (text parts and usage of a buffered answer, its stream framing,
how a streamed event's text and usage are read). Response parsing is lenient: the provider is
the authority on its own answers, so a shape we do not expect yields less information (no usage,
fewer parts), never an error. Only a body that is not JSON at all is MalformedBody.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policy_extproc.llm.apis import BY_API, FORMATS
from policy_extproc.llm.apis._openai import openai_usage
from policy_extproc.llm.apis.anthropic_messages import usage_of as anthropic_usage
from policy_extproc.llm.apis.wire import ResponseInfo, StreamEvent, Usage
from policy_extproc.llm.request import (
    Api,
    JsonPath,
    PromptPart,
    dump_json,
    load_json_object,
    replace_texts,
)
from policy_extproc.llm.tokens import token_weight, tokens_of_weight

__all__ = [
    "LlmResponse",
    "ResponseInfo",
    "SseEvent",
    "SseParser",
    "StreamEvent",
    "Usage",
    "UsageChunkFilter",
    "anthropic_usage",
    "is_stream",
    "openai_usage",
    "parse_response",
    "rewrite_response",
    "usage_only",
]

SseEvent = StreamEvent  # the name it had when every stream was SSE
_STREAM_TYPES = tuple({t for f in FORMATS for t in f.stream_types})


@dataclass(frozen=True, slots=True)
class LlmResponse:
    """A parsed non-streamed response: usage, the model's output text with locations, and
    what the answer says about itself (None for an error body, or one that says nothing)."""

    usage: Usage | None
    parts: tuple[PromptPart, ...]
    body: dict[str, Any] = field(repr=False)
    info: ResponseInfo | None = None

    @property
    def output_tokens(self) -> int:
        """The model's output text counted as ``llm/tokens.py`` estimates it."""
        return tokens_of_weight(sum(token_weight(p.text) for p in self.parts))


def is_stream(content_type: str) -> bool:
    """Whether a response's content type is a stream framing of any format we read."""
    ct = content_type.lower()
    return any(t in ct for t in _STREAM_TYPES)


def parse_response(api: Api, body: bytes) -> LlmResponse:
    """Parse a complete (non-streamed) response body of the given API."""
    data = load_json_object(body, "response")
    fmt = BY_API[api]
    if fmt.is_error(data):
        return LlmResponse(None, (), data)
    parts = tuple(fmt.response_parts(data))
    return LlmResponse(fmt.usage(data), parts, data, fmt.answer_info(data, None, None))


def rewrite_response(resp: LlmResponse, new_texts: Mapping[JsonPath, str]) -> bytes:
    """The response body with the given parts replaced, compact UTF-8 JSON."""
    return dump_json(replace_texts(resp.body, new_texts) if new_texts else resp.body)


class SseParser:
    """Incremental parser of one api's streamed answer (SSE or AWS event-stream framing):
    events, the text each adds, the usage reported so far and what the answer says about
    itself (model, id, finish reasons), and its output text counted as ``llm/tokens.py``
    estimates it (what is charged when the provider reports no usage)."""

    __slots__ = ("_delta", "_fold", "_fold_info", "_framer", "_info", "_usage", "_weight")

    def __init__(self, api: Api) -> None:
        fmt = BY_API[api]
        self._framer = fmt.framer()
        self._fold = fmt.stream_usage
        self._fold_info = fmt.answer_info
        self._delta = fmt.delta_text
        self._usage: Usage | None = None
        self._info: ResponseInfo | None = None
        self._weight = 0  # token_weight of the output text so far

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        """Add bytes; return the events they complete, keeping any partial tail."""
        return self._track(self._framer.feed(chunk))

    def flush(self) -> list[StreamEvent]:
        """At end of stream: whatever is left as one last (unterminated) event, if anything."""
        return self._track(self._framer.flush())

    def _track(self, events: list[StreamEvent]) -> list[StreamEvent]:
        for ev in events:
            if isinstance(ev.payload, dict):
                self._usage = self._fold(ev.payload, ev.event, self._usage)
                self._info = self._fold_info(ev.payload, ev.event, self._info)
                text = self._delta(ev.payload)
                if text:
                    self._weight += token_weight(text)
        return events

    @property
    def usage(self) -> Usage | None:
        """Token usage reported by the stream so far, None until the provider sent it."""
        return self._usage

    @property
    def info(self) -> ResponseInfo | None:
        """The answer's model, id and finish reasons as the stream told them so far."""
        return self._info

    @property
    def output_tokens(self) -> int:
        """The output text of the events so far, counted as ``llm/tokens.py`` estimates it."""
        return tokens_of_weight(self._weight)

    def delta_text(self, event: StreamEvent) -> str | None:
        """The output text this event adds, None for events that carry none."""
        return self._delta(event.payload)


def usage_only(event: StreamEvent) -> bool:
    """Whether an OpenAI chat or completions chunk is the one ``include_usage`` adds.

    With ``stream_options.include_usage`` the API sends, before ``[DONE]``, one more chunk with
    an empty ``choices`` list and the whole request's ``usage`` (API reference, "The chat
    completion chunk object"); no other chunk has both.
    """
    payload = event.payload
    return (
        isinstance(payload, dict)
        and payload.get("choices") == []
        and isinstance(payload.get("usage"), dict)
    )


class UsageChunkFilter:
    """Removes the usage-only chunk from an OpenAI chat or completions stream, and reads it.

    The sidecar asks for usage (``stream_options.include_usage``) when a budget or token limit
    needs the real cost; a client that did not ask for it must not get the extra chunk: the
    official SDKs' usual ``for chunk in stream: chunk.choices[0]`` loop would raise IndexError.
    Every other byte goes on as it came; a partial event waits for its end (at most one event).
    """

    __slots__ = ("parser",)

    def __init__(self, api: Api) -> None:
        self.parser = SseParser(api)

    def feed(self, chunk: bytes, end: bool) -> bytes:
        """The bytes to send on for ``chunk``: its complete events, the usage-only one left out."""
        events = self.parser.feed(chunk)
        if end:
            events += self.parser.flush()
        return b"".join(ev.raw for ev in events if not usage_only(ev))

    @property
    def usage(self) -> Usage | None:
        """The usage the stream reported (from the chunk removed), None until it came."""
        return self.parser.usage

    @property
    def info(self) -> ResponseInfo | None:
        """The answer's model, id and finish reasons, as the stream told them so far."""
        return self.parser.info

    @property
    def output_tokens(self) -> int:
        """The output text of the stream so far, counted (``SseParser.output_tokens``)."""
        return self.parser.output_tokens
