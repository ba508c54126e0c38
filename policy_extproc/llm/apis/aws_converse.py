"""AWS Bedrock Converse / ConverseStream (``POST /model/{modelId}/converse[-stream]``).

Reference: docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html. The path
names the model (URL-encoded when it is an ARN) and whether the answer streams. Text lives in
``messages[].content[]`` (text blocks, joined per message; tool uses' inputs and tool results;
documents with a text source, content blocks or bytes of a text format, decoded; guard content;
reasoning text), ``system[]``, the tool specs (names, descriptions, input schemas),
``inferenceConfig.stopSequences``, ``promptVariables`` and ``additionalModelRequestFields``.
Every other string is scanned too unless it is declared below as not text.

Answers: ``output.message.content[].text`` (and tool-use inputs), usage in ``usage``. A stream
is AWS event-stream framing (``eventstream.py``), not SSE: ``messageStart``,
``contentBlockDelta`` (``delta.text``), ``messageStop``, ``metadata`` (usage).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from policy_extproc.errors import MalformedBody

from . import eventstream
from .base import (
    COUNT,
    FREE,
    SCHEMA,
    ApiFormat,
    Json,
    JsonPath,
    Num,
    Parsed,
    PromptPart,
    Shape,
    add,
    bad,
    check_numbers,
    generic,
    obj,
    required_list,
    skipping,
    walk,
    walk_rest,
)
from .documents import encoded_text
from .wire import Refusal, ResponseInfo, StreamEvent, Usage, answer_info, compact, count, items

_COMMON = ("role", "format", "type", "toolUseId", "status", "signature", "redactedContent",
           "s3Location", "uri", "bucketOwner", "qualifiers", "cachePoint")  # fmt: skip
_API = generic(*_COMMON)


def _s(*keys: str, **fields: Shape) -> Shape:
    return skipping(*keys, rest=_API, enum=False, **fields)


TOP = _s(
    "messages",  # read by parse()
    "system",
    "guardrailConfig",
    "additionalModelResponseFieldPaths",
    "performanceConfig",
    "requestMetadata",  # key-value tags for invocation logs, never sent to the model
    "inferenceConfig",  # read by parse(): numbers and stop sequences
    toolConfig=_s("toolChoice", tools=_s(toolSpec=_s(inputSchema=_s(json=SCHEMA)))),
    additionalModelRequestFields=FREE,
)
_BLOCK = _s("text", "document", "image", "video", "toolResult",  # read by _blocks()
            toolUse=_s("name", input=FREE), json=FREE)  # fmt: skip
_RESULT = _s("content")
_INFERENCE_SHAPE = _s("maxTokens", "temperature", "topP")
_DOCUMENT = _s("source", "citations")
_INFERENCE = {
    "maxTokens": COUNT,
    "temperature": Num("number", 0.0, 1.0),
    "topP": Num("number", 0.0, 1.0),
}
# Document formats that are text (docs: DocumentBlock.format); pdf, doc(x), xls(x) are binary.
_TEXT_FORMATS = {"txt": "text/plain", "md": "text/markdown", "csv": "text/csv",
                 "html": "text/html"}  # fmt: skip


def parse(body: Json, out: Parsed) -> None:
    system = body.get("system")
    if system is not None:
        if not isinstance(system, list):
            raise bad(("system",), "must be a list of system content blocks")
        _blocks(system, ("system",), "system", out)
    for i, msg in enumerate(required_list(body, "messages")):
        path: JsonPath = ("messages", i)
        m = obj(msg, path)
        role = m.get("role")
        if not isinstance(role, str):
            raise bad((*path, "role"), "is required" if role is None else "must be a string")
        content = m.get("content")
        if not isinstance(content, list):
            raise bad((*path, "content"), "must be a list of content blocks")
        _blocks(content, (*path, "content"), role, out)
        walk_rest(m, _API, path, role, out, frozenset(("role", "content")))
    config = body.get("inferenceConfig")
    if config is not None:
        ic = obj(config, ("inferenceConfig",))
        check_numbers(ic, _INFERENCE, ("inferenceConfig",))
        cap = ic.get("maxTokens")
        out.max_tokens = cap if type(cap) is int else None
        walk(ic, _INFERENCE_SHAPE, ("inferenceConfig",), "system", out)  # stop sequences
    walk_rest(body, TOP, (), "system", out, frozenset())


def _blocks(blocks: list[Any], path: JsonPath, role: str, out: Parsed) -> None:
    """Content blocks: the text blocks of one list are one group (the model reads them joined),
    then documents, tool uses and results, guard content, reasoning."""
    group = out.group()
    for j, block in enumerate(blocks):
        b = obj(block, (*path, j))
        text = b.get("text")
        if text is not None:
            if not isinstance(text, str):
                raise bad((*path, j, "text"), "must be a string")
            add(out, (*path, j, "text"), text, role, group)
    for j, b in enumerate(blocks):
        bpath: JsonPath = (*path, j)
        doc = b.get("document")
        if isinstance(doc, dict):
            _document(doc, (*bpath, "document"), role, out)
        result = b.get("toolResult")
        if isinstance(result, dict):
            inner = result.get("content")
            if isinstance(inner, list):
                _blocks(inner, (*bpath, "toolResult", "content"), "tool", out)
            elif inner is not None:  # not skipped unread: refused
                raise bad((*bpath, "toolResult", "content"), "must be a list of content blocks")
            walk(result, _RESULT, (*bpath, "toolResult"), "tool", out)
        walk(b, _BLOCK, bpath, role, out)


def _document(doc: Json, path: JsonPath, role: str, out: Parsed) -> None:
    source = doc.get("source")
    if isinstance(source, dict):
        spath: JsonPath = (*path, "source")
        if isinstance(source.get("text"), str):
            add(out, (*spath, "text"), source["text"], role)
        inner = source.get("content")
        if isinstance(inner, list):
            _blocks(inner, (*spath, "content"), role, out)
        if source.get("bytes") is not None:
            fmt = doc.get("format")
            media = _TEXT_FORMATS.get(fmt, f"application/{fmt}") if isinstance(fmt, str) else None
            encoded_text(out, (*spath, "bytes"), source["bytes"], role, media_type=media)
    elif source is not None:
        raise bad((*path, "source"), "must be an object")
    walk(doc, _DOCUMENT, path, role, out)  # name, context


def _from_path(path: str) -> tuple[str, bool]:
    m = _PATH.search(path.split("?", 1)[0])
    if m is None:
        raise MalformedBody("a Converse path names its model: /model/{modelId}/converse")
    return unquote(m.group(1)), m.group(2) == "converse-stream"


_PATH = re.compile(r"/model/([^/]+)/(converse|converse-stream)/?\Z")


# --- answers ----------------------------------------------------------------------------------


def response_parts(body: Json) -> list[PromptPart]:
    output = body.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    if not isinstance(message, dict):
        return []
    parts: list[PromptPart] = []
    for j, block in items(message.get("content")):
        path: JsonPath = ("output", "message", "content", j)
        text = block.get("text")
        if isinstance(text, str) and text:
            parts.append(PromptPart((*path, "text"), text, "assistant"))
        use = block.get("toolUse")
        if isinstance(use, dict) and isinstance(use.get("input"), dict):
            found = Parsed()  # model output too: PII can leak into a tool call's input
            walk(use["input"], FREE, (*path, "toolUse", "input"), "assistant", found)
            parts += found.parts
    return parts


def usage_of(usage: Any) -> Usage | None:
    """Bedrock's inputTokens excludes cache reads and writes (cacheReadInputTokens,
    cacheWriteInputTokens): both are added so input_tokens means all input, as for OpenAI."""
    if not isinstance(usage, dict):
        return None
    read = count(usage.get("cacheReadInputTokens"))
    write = count(usage.get("cacheWriteInputTokens"))
    return Usage(count(usage.get("inputTokens")) + read + write,
                 count(usage.get("outputTokens")), read)  # fmt: skip


def _is_error(body: Json) -> bool:
    # Bedrock errors are {"message": ...} (the type is in the x-amzn-errortype header).
    return "output" not in body and isinstance(body.get("message"), str)


def _stream_usage(payload: Json, event: str | None, usage: Usage | None) -> Usage | None:
    return usage_of(payload.get("usage")) or usage if event == "metadata" else usage


def _info(payload: Json, event: str | None, info: ResponseInfo | None) -> ResponseInfo | None:
    """Converse answers carry no id and no model (the path named it): the stop reason only,
    at the top of the body or in the stream's messageStop event."""
    if event is None or event == "messageStop":
        return answer_info(info, reasons=(payload.get("stopReason"),))
    return info


def _delta_obj(payload: Any) -> tuple[Json, str] | None:
    """The object holding a delta's text and the key: delta.text or reasoning text."""
    delta = payload.get("delta") if isinstance(payload, dict) else None
    if not isinstance(delta, dict):
        return None
    if isinstance(delta.get("text"), str):
        return delta, "text"
    reasoning = delta.get("reasoningContent")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str):
        return reasoning, "text"
    return None


def _delta(payload: Any) -> str | None:
    found = _delta_obj(payload)
    return found[0][found[1]] if found is not None else None


def _set_delta(payload: Any, text: str) -> None:
    found = _delta_obj(payload)
    assert found is not None
    found[0][found[1]] = text


def _encode(event: StreamEvent, payload: Any) -> bytes:
    headers, _ = eventstream.decode_message(event.raw)  # it decoded once: it decodes again
    return eventstream.encode_message(headers, compact(payload).encode())


def _refusal(r: Refusal) -> bytes:
    # An exception message: the AWS SDKs raise it as an EventStreamError with this code.
    body = {"message": r.message, **r.fields(), **r.extra()}
    return eventstream.exception_message("modelStreamErrorException", body)


def _looks_like(body: Json) -> bool:
    if "inferenceConfig" in body or "toolConfig" in body:
        return True
    msgs = body.get("messages")
    if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
        content = msgs[0].get("content")
        return isinstance(content, list) and bool(content) and "type" not in content[0]
    return False


FORMAT = ApiFormat(
    api="aws.converse",
    suffixes=("/converse", "/converse-stream"),
    azure=None,
    parse=parse,
    max_tokens=(),  # inferenceConfig.maxTokens, read by parse()
    numbers={},
    from_path=_from_path,
    response_parts=response_parts,
    usage=lambda body: usage_of(body.get("usage")),
    is_error=_is_error,
    framer=eventstream.EventStreamFramer,
    stream_types=("application/vnd.amazon.eventstream",),
    encode_event=_encode,
    delta_text=_delta,
    set_delta=_set_delta,
    stream_usage=_stream_usage,
    answer_info=_info,
    refusal_event=_refusal,
    provider="bedrock",
    messages=lambda body: len(body["messages"]) + (1 if body.get("system") else 0),
    looks_like=_looks_like,
    example_path="/model/unknown/converse",
)
