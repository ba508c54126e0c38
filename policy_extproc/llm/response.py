"""LLM response bodies and server-sent-event streams: token usage and the model's output text.

Response parsing is lenient: the provider is the authority on its own answers, so a shape we do
not expect yields less information (no usage, fewer parts), never an error. Only a body that is
not JSON at all is MalformedBody. Shapes follow the OpenAI API reference (chat completion object,
chat completion chunk, completion object, response object and its streaming events) and
Anthropic's Messages API (message object, "Streaming Messages").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policy_extproc.llm.request import (
    Api,
    JsonPath,
    PromptPart,
    dump_json,
    load_json_object,
    replace_texts,
)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage; input_tokens includes cached_input_tokens (OpenAI's convention)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class LlmResponse:
    """A parsed non-streamed response: usage and the model's output text with locations."""

    usage: Usage | None
    parts: tuple[PromptPart, ...]
    body: dict[str, Any] = field(repr=False)


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


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
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(_count(usage.get(in_key)), _count(usage.get(out_key)), cached)


def anthropic_usage(usage: Any) -> Usage | None:
    """Usage from an Anthropic usage object.

    Anthropic's input_tokens excludes cache reads and cache writes (cache_read_input_tokens,
    cache_creation_input_tokens); we add both so input_tokens means all input, as for OpenAI.
    Cache writes are priced like plain input here (Anthropic bills them at 1.25x: a small
    underestimate, accepted to keep one Usage shape).
    """
    if not isinstance(usage, dict):
        return None
    read = _count(usage.get("cache_read_input_tokens"))
    write = _count(usage.get("cache_creation_input_tokens"))
    return Usage(
        _count(usage.get("input_tokens")) + read + write, _count(usage.get("output_tokens")), read
    )


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a list with their indexes; nothing for anything else."""
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _add(parts: list[PromptPart], obj: dict[str, Any], key: str, path: JsonPath) -> None:
    text = obj.get(key)
    if isinstance(text, str) and text:
        parts.append(PromptPart((*path, key), text, "assistant"))


def _chat_parts(body: dict[str, Any], parts: list[PromptPart]) -> None:
    for i, choice in _items(body.get("choices")):
        message = choice.get("message")
        if not isinstance(message, dict):
            continue
        path: JsonPath = ("choices", i, "message")
        content = message.get("content")
        if isinstance(content, str):
            _add(parts, message, "content", path)
        else:  # some OpenAI-compatible providers answer with content parts
            for j, block in _items(content):
                if block.get("type") == "text":
                    _add(parts, block, "text", (*path, "content", j))
        # Tool-call arguments are model output too (PII can leak into them).
        for j, call in _items(message.get("tool_calls")):
            fn = call.get("function")
            if isinstance(fn, dict):
                _add(parts, fn, "arguments", (*path, "tool_calls", j, "function"))


def _completions_parts(body: dict[str, Any], parts: list[PromptPart]) -> None:
    for i, choice in _items(body.get("choices")):
        _add(parts, choice, "text", ("choices", i))


def _responses_parts(body: dict[str, Any], parts: list[PromptPart]) -> None:
    for i, item in _items(body.get("output")):
        kind = item.get("type")
        if kind == "message":
            for j, block in _items(item.get("content")):
                if block.get("type") == "output_text":
                    _add(parts, block, "text", ("output", i, "content", j))
        elif kind == "function_call":
            _add(parts, item, "arguments", ("output", i))


def _anthropic_parts(body: dict[str, Any], parts: list[PromptPart]) -> None:
    for i, block in _items(body.get("content")):
        if block.get("type") == "text":
            _add(parts, block, "text", ("content", i))


def parse_response(api: Api, body: bytes) -> LlmResponse:
    """Parse a complete (non-streamed) response body of the given API."""
    data = load_json_object(body, "response")
    # OpenAI errors are {"error": {...}}, Anthropic's {"type": "error", "error": {...}};
    # a Responses API object carries "error": null when it succeeded.
    if data.get("error") is not None or data.get("type") == "error":
        return LlmResponse(None, (), data)
    parts: list[PromptPart] = []
    if api == "anthropic.messages":
        _anthropic_parts(data, parts)
        return LlmResponse(anthropic_usage(data.get("usage")), tuple(parts), data)
    if api == "openai.chat":
        _chat_parts(data, parts)
    elif api == "openai.completions":
        _completions_parts(data, parts)
    elif api == "openai.responses":
        _responses_parts(data, parts)
    return LlmResponse(openai_usage(data.get("usage")), tuple(parts), data)


def rewrite_response(resp: LlmResponse, new_texts: Mapping[JsonPath, str]) -> bytes:
    """The response body with the given parts replaced, compact UTF-8 JSON."""
    return dump_json(replace_texts(resp.body, new_texts) if new_texts else resp.body)


# --- server-sent events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event; raw is its exact bytes, terminating blank line included."""

    event: str | None
    data: str
    raw: bytes
    # The data parsed as JSON once (None for "[DONE]", comments or non-JSON); read-only.
    payload: Any = field(default=None, repr=False, compare=False)


# An event ends at a blank line: two line terminators in a row, each CRLF, LF or CR
# (WHATWG HTML, "Server-sent events", parsing an event stream). A CR directly followed by LF is
# one terminator, hence the lookahead.
_BOUNDARY = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CR = 0x0D
_RESPONSES_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class SseParser:
    """Incremental server-sent-events parser for streamed responses of one api."""

    __slots__ = ("_anthropic", "_api", "_buf", "_first", "_scan_from", "_usage")

    def __init__(self, api: Api) -> None:
        self._api = api
        self._buf = bytearray()
        self._scan_from = 0  # where the next boundary search starts, so no byte is rescanned
        self._first = True
        self._usage: Usage | None = None
        self._anthropic: list[int] | None = None  # [input, output, cached] once message_start

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Add bytes; return the events they complete, keeping any partial tail."""
        buf = self._buf
        buf += chunk
        events: list[SseEvent] = []
        start = 0
        while (m := _BOUNDARY.search(buf, self._scan_from)) is not None:
            end = m.end()
            if end == len(buf) and buf[-1] == _CR:
                break  # the CR may be the first half of a CRLF still in flight
            events.append(self._event(bytes(buf[start:end])))
            start = self._scan_from = end
        if start:
            del buf[:start]
        # A boundary is at most 4 bytes: resume just before the unsearched end next time.
        self._scan_from = max(0, len(buf) - 3)
        return events

    def flush(self) -> list[SseEvent]:
        """At end of stream: whatever is left as one last (unterminated) event, if anything."""
        if not self._buf:
            return []
        raw = bytes(self._buf)
        self._buf.clear()
        self._scan_from = 0
        return [self._event(raw)]

    @property
    def usage(self) -> Usage | None:
        """Token usage reported by the stream so far, None until the provider sent it."""
        if self._anthropic is not None:
            return Usage(*self._anthropic)
        return self._usage

    def delta_text(self, event: SseEvent) -> str | None:
        """The output text this event adds, None for events that carry none."""
        payload = event.payload
        if not isinstance(payload, dict):
            return None
        api = self._api
        text: Any = None
        if api == "openai.chat" or api == "openai.completions":
            choices = payload.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                if api == "openai.completions":
                    text = choices[0].get("text")
                else:
                    delta = choices[0].get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else None
        elif api == "openai.responses":
            if payload.get("type") == "response.output_text.delta":
                text = payload.get("delta")
        elif api == "anthropic.messages" and payload.get("type") == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                text = delta.get("text")
        return text if isinstance(text, str) else None

    def _event(self, raw: bytes) -> SseEvent:
        # Complete events end at ASCII line breaks, so a UTF-8 sequence is never cut here.
        text = raw.decode("utf-8", "replace")
        if self._first:
            self._first = False
            text = text.removeprefix("\ufeff")  # the spec ignores one leading BOM
        lines = _LINE_BREAK.split(text) if "\r" in text else text.split("\n")
        name: str | None = None
        data: list[str] = []
        for line in lines:
            if not line or line[0] == ":":
                continue  # blank line or comment
            key, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if key == "data":
                data.append(value)
            elif key == "event":
                name = value
        joined = "\n".join(data)
        payload: Any = None
        if joined[:1] == "{":
            try:
                payload = json.loads(joined)
            except (ValueError, RecursionError):
                payload = None
            if isinstance(payload, dict):
                self._track_usage(payload, name)
        return SseEvent(name, joined, raw, payload)

    def _track_usage(self, payload: dict[str, Any], name: str | None) -> None:
        api = self._api
        if api == "anthropic.messages":
            # message_start carries input usage, message_delta the cumulative output count
            # (and, in newer API versions, cumulative input counts too).
            kind = payload.get("type", name)
            if kind == "message_start":
                message = payload.get("message")
                usage = anthropic_usage(message.get("usage") if isinstance(message, dict) else None)
                if usage is not None:
                    self._anthropic = [
                        usage.input_tokens,
                        usage.output_tokens,
                        usage.cached_input_tokens,
                    ]
            elif kind == "message_delta":
                raw = payload.get("usage")
                if isinstance(raw, dict):
                    counts = self._anthropic or [0, 0, 0]
                    if "output_tokens" in raw:
                        counts[1] = _count(raw.get("output_tokens"))
                    if "input_tokens" in raw:
                        usage = anthropic_usage(raw)
                        if usage is not None:
                            counts[0], counts[2] = usage.input_tokens, usage.cached_input_tokens
                    self._anthropic = counts
        elif api == "openai.responses":
            if payload.get("type", name) in _RESPONSES_FINAL:
                response = payload.get("response")
                if isinstance(response, dict):
                    self._usage = openai_usage(response.get("usage")) or self._usage
        else:
            # With stream_options.include_usage every chunk has "usage": null except the last,
            # which has empty choices and the usage of the whole request.
            usage = openai_usage(payload.get("usage"))
            if usage is not None:
                self._usage = usage


def usage_only(event: SseEvent) -> bool:
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
