"""What answers look like on the wire: usage, stream events, framings, and a refusal's content.

A format module's response side is made of these: its buffered answer is JSON; its stream is
framed as server-sent events (OpenAI, Anthropic, Gemini) or as AWS event-stream messages
(Bedrock, in ``eventstream.py``). Both framings yield the same ``StreamEvent``, so the stream
guard and the usage readers never see the framing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage; input_tokens includes cached_input_tokens (OpenAI's convention)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0


# Bounds on what an answer says about itself, as the provider wrote it: an id or model name
# longer than this is cut, and at most this many finish reasons (one per choice) are kept.
_INFO_CHARS = 200
_MAX_REASONS = 16


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What an answer says about itself: the model that answered (``gen_ai.response.model``),
    the answer's id (``gen_ai.response.id``) and why each choice stopped
    (``gen_ai.response.finish_reasons``, the provider's own values: stop, length, end_turn,
    STOP, ...). Identifiers and enums only, never the answer's text."""

    model: str | None = None
    id: str | None = None
    finish_reasons: tuple[str, ...] = ()


def answer_info(
    info: ResponseInfo | None, *, model: Any = None, id: Any = None, reasons: Any = ()
) -> ResponseInfo | None:
    """``info`` with what one body or stream event adds: a model or id replaces none (the first
    event that names them wins), finish reasons are appended. Anything that is not a non-empty
    string is ignored (lenient); None while nothing is known."""
    model = model[:_INFO_CHARS] if isinstance(model, str) and model else None
    id = id[:_INFO_CHARS] if isinstance(id, str) and id else None
    new = tuple(r[:_INFO_CHARS] for r in reasons if isinstance(r, str) and r)
    if info is None:
        if model is None and id is None and not new:
            return None
        return ResponseInfo(model, id, new[:_MAX_REASONS])
    if (model is None or info.model) and (id is None or info.id) and not new:
        return info
    return ResponseInfo(
        info.model or model, info.id or id, (*info.finish_reasons, *new)[:_MAX_REASONS]
    )


def finish_reasons(choices: Any, key: str) -> list[Any]:
    """The non-null ``key`` of each object in a list of choices or candidates (unchecked)."""
    if type(choices) is not list:
        return []
    return [r for c in choices if type(c) is dict and (r := c.get(key)) is not None]


def count(value: Any) -> int:
    """A token count from a provider's answer: a positive int, else 0 (lenient)."""
    return value if type(value) is int and value > 0 else 0


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of a streamed answer; raw is its exact bytes (SSE: blank line included).

    ``event``: the SSE event name or the event-stream ``:event-type`` header; ``data``: the
    payload as text; ``payload``: the data parsed as JSON once (None for "[DONE]", comments,
    non-JSON); read-only.
    """

    event: str | None
    data: str
    raw: bytes
    payload: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a policy refusal says, for a format to put into its own error shape."""

    code: str  # the stable error code, e.g. "content_blocked"
    message: str
    decision: str
    policy: str | None
    rule: str | None
    request_id: str
    status: int = 403

    def extra(self) -> Json:
        return {"decision": self.decision, "policy": self.policy, "rule": self.rule,
                "request_id": self.request_id}  # fmt: skip

    def fields(self) -> Json:
        return {"type": "policy_violation", "code": self.code, "message": self.message}


class Framer(Protocol):
    """Cuts a byte stream into events: ``feed`` returns the events chunk completes."""

    def feed(self, chunk: bytes) -> list[StreamEvent]: ...

    def flush(self) -> list[StreamEvent]: ...


def compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# --- server-sent events -----------------------------------------------------------------------

# An event ends at a blank line: two line terminators in a row, each CRLF, LF or CR
# (WHATWG HTML, "Server-sent events", parsing an event stream). A CR directly followed by LF is
# one terminator, hence the lookahead.
_BOUNDARY = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CR = 0x0D


class SseFramer:
    """Incremental server-sent-events parser: bytes in, complete events out."""

    __slots__ = ("_buf", "_first", "_scan_from")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan_from = 0  # where the next boundary search starts, so no byte is rescanned
        self._first = True

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        buf = self._buf
        buf += chunk
        events: list[StreamEvent] = []
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

    def flush(self) -> list[StreamEvent]:
        if not self._buf:
            return []
        raw = bytes(self._buf)
        self._buf.clear()
        self._scan_from = 0
        return [self._event(raw)]

    def _event(self, raw: bytes) -> StreamEvent:
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
        return StreamEvent(name, joined, raw, json_object(joined))


def json_object(text: str) -> Any:
    """text parsed as JSON if it is an object, else None (lenient: the provider's bytes)."""
    if text[:1] != "{":
        return None
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def sse_encode(event: StreamEvent, payload: Any) -> bytes:
    """An SSE event again, with a rewritten payload."""
    head = f"event: {event.event}\n" if event.event else ""
    return f"{head}data: {compact(payload)}\n\n".encode()


def sse_event(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {compact(data)}\n\n".encode()


# --- lenient readers of answers ---------------------------------------------------------------


def items(value: Any) -> list[tuple[int, Json]]:
    """The objects of a list with their indexes; nothing for anything else."""
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def first(payload: Any, key: str) -> Json | None:
    """payload[key][0] when it is an object (a stream chunk's first choice or candidate)."""
    if not isinstance(payload, dict):
        return None
    value = payload.get(key)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return None


def text_parts_delta(parts: Any) -> str | None:
    """The text of a list of {"text": ...} parts (Gemini, Bedrock), None when there is none."""
    texts = [p["text"] for _, p in items(parts) if isinstance(p.get("text"), str)]
    return "".join(texts) if texts else None


def set_text_parts(parts: list[Any], text: str) -> None:
    """Put text into the first text part of parts and empty the others (a rewritten delta)."""
    done = False
    for p in parts:
        if isinstance(p, dict) and isinstance(p.get("text"), str):
            p["text"] = "" if done else text
            done = True
