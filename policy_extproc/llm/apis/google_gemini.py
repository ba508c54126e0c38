"""Google Gemini ``generateContent`` / ``streamGenerateContent`` (Gemini API and Vertex AI).

Reference: ai.google.dev/api/generate-content. The path names the model and whether the answer
streams (``/v1beta/models/{model}:generateContent``, ``...:streamGenerateContent?alt=sse``);
the body has neither. Text lives in ``contents[].parts[]`` (text parts, joined per content;
function calls' args and function responses; executable code and its results; inline data of a
text type, decoded), ``systemInstruction``, the tools' function declarations (names,
descriptions, parameter schemas) and ``generationConfig.stopSequences``. Every other string is
scanned too unless it is declared below as not text.

Answers: ``candidates[].content.parts[].text`` (and function-call args), usage in
``usageMetadata``; a stream is SSE, each event a whole ``GenerateContentResponse`` with the
usage so far. Without ``alt=sse`` Gemini streams one JSON array, which cannot be policed as it
flows: such a request is refused (400) rather than let through unchecked.
"""

from __future__ import annotations

import re
from typing import Any

from policy_extproc.errors import MalformedBody

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
from .wire import (
    Refusal,
    ResponseInfo,
    Usage,
    answer_info,
    compact,
    count,
    finish_reasons,
    first,
    items,
    set_text_parts,
    text_parts_delta,
)

_COMMON = ("role", "mimeType", "fileUri", "thoughtSignature", "thought", "category",
           "threshold", "mode", "responseMimeType", "responseModalities", "language",
           "outcome", "cachedContent", "mediaResolution", "videoMetadata", "id")  # fmt: skip
_API = generic(*_COMMON)


def _s(*keys: str, **fields: Shape) -> Shape:
    return skipping(*keys, rest=_API, enum=False, **fields)


_DECLARATION = _s("behavior", parameters=SCHEMA, parametersJsonSchema=SCHEMA,
                  response=SCHEMA, responseJsonSchema=SCHEMA)  # fmt: skip
TOP = _s(
    "contents",  # read by parse()
    "systemInstruction",
    "safetySettings",
    "toolConfig",  # modes and allowed function names
    "labels",  # Vertex AI billing labels: never sent to the model
    tools=_s(functionDeclarations=_DECLARATION),
    generationConfig=_s(
        "speechConfig",
        "thinkingConfig",
        "routingConfig",
        responseSchema=SCHEMA,
        responseJsonSchema=SCHEMA,
    ),
)
_PART = _s("text", "inlineData", "fileData", functionCall=_s("name", args=FREE),
           functionResponse=_s("name", response=FREE))  # fmt: skip
_CONTENT = _s("parts")
_GENERATION = {
    "maxOutputTokens": COUNT,
    "candidateCount": Num("int", 1, 8),
    "temperature": Num("number", 0.0, 2.0),
    "topP": Num("number", 0.0, 1.0),
    "topK": Num("int", 1),
    "seed": Num("int", -(2**31), 2**31 - 1),
    "presencePenalty": Num("number", -2.0, 2.0),
    "frequencyPenalty": Num("number", -2.0, 2.0),
}
_ROLES = {"model": "assistant", "user": "user"}


def parse(body: Json, out: Parsed) -> None:
    system = body.get("systemInstruction")
    if system is not None:
        _content(obj(system, ("systemInstruction",)), ("systemInstruction",), "system", out)
    for i, content in enumerate(required_list(body, "contents")):
        path: JsonPath = ("contents", i)
        c = obj(content, path)
        role = c.get("role", "user")
        if not isinstance(role, str):
            raise bad((*path, "role"), "must be a string")
        _content(c, path, _ROLES.get(role, role), out)
    config = body.get("generationConfig")
    if config is not None:
        gc = obj(config, ("generationConfig",))
        check_numbers(gc, _GENERATION, ("generationConfig",))
        cap = gc.get("maxOutputTokens")
        out.max_tokens = cap if type(cap) is int else None
    walk_rest(body, TOP, (), "system", out, frozenset())


def _content(c: Json, path: JsonPath, role: str, out: Parsed) -> None:
    """One Content: its text parts form one group (the model reads them joined), then the rest."""
    parts = c.get("parts")
    if parts is None:
        parts = []
    if not isinstance(parts, list):
        raise bad((*path, "parts"), "must be a list")
    group = out.group()
    for j, part in enumerate(parts):
        p = obj(part, (*path, "parts", j))
        text = p.get("text")
        if text is not None:
            if not isinstance(text, str):
                raise bad((*path, "parts", j, "text"), "must be a string")
            add(out, (*path, "parts", j, "text"), text, role, group)
    for j, part in enumerate(parts):
        ppath: JsonPath = (*path, "parts", j)
        inline = part.get("inlineData")
        if isinstance(inline, dict) and inline.get("data") is not None:
            mime = inline.get("mimeType")
            encoded_text(out, (*ppath, "inlineData", "data"), inline["data"], role,
                         media_type=mime if isinstance(mime, str) else None)  # fmt: skip
        who = "tool" if "functionResponse" in part else role
        walk(part, _PART, ppath, who, out)
    walk_rest(c, _CONTENT, path, role, out, frozenset())


def _from_path(path: str) -> tuple[str, bool]:
    clean, _, query = path.partition("?")
    m = _PATH.search(clean)
    if m is None:
        raise MalformedBody("a Gemini path names its model: /v1beta/models/{model}:generateContent")
    stream = m.group(2) == "streamGenerateContent"
    if stream and "alt=sse" not in query.split("#", 1)[0].split("&"):
        raise MalformedBody(
            "streamGenerateContent is accepted with ?alt=sse only: without it the answer is one "
            "JSON array that cannot be checked as it streams"
        )
    return m.group(1), stream


_PATH = re.compile(r"/([^/:]+):(generateContent|streamGenerateContent)\Z")


# --- answers ----------------------------------------------------------------------------------


def response_parts(body: Json) -> list[PromptPart]:
    parts: list[PromptPart] = []
    for i, cand in items(body.get("candidates")):
        content = cand.get("content")
        if not isinstance(content, dict):
            continue
        for j, part in items(content.get("parts")):
            path: JsonPath = ("candidates", i, "content", "parts", j)
            text = part.get("text")
            if isinstance(text, str) and text:
                parts.append(PromptPart((*path, "text"), text, "assistant"))
            call = part.get("functionCall")
            if isinstance(call, dict) and isinstance(call.get("args"), dict):
                out = Parsed()  # model output too: PII can leak into a call's arguments
                walk(call["args"], FREE, (*path, "functionCall", "args"), "assistant", out)
                parts += out.parts
    return parts


def usage_of(meta: Any) -> Usage | None:
    """usageMetadata: promptTokenCount includes cachedContentTokenCount; thinking tokens are
    billed as output; tool-use prompts as input."""
    if not isinstance(meta, dict):
        return None
    return Usage(
        count(meta.get("promptTokenCount")) + count(meta.get("toolUsePromptTokenCount")),
        count(meta.get("candidatesTokenCount")) + count(meta.get("thoughtsTokenCount")),
        count(meta.get("cachedContentTokenCount")),
    )


def _stream_usage(payload: Json, event: str | None, usage: Usage | None) -> Usage | None:
    return usage_of(payload.get("usageMetadata")) or usage  # each chunk: the usage so far


def _info(payload: Json, event: str | None, info: ResponseInfo | None) -> ResponseInfo | None:
    """A GenerateContentResponse (the body, or each streamed chunk): modelVersion, responseId,
    each candidate's finishReason (in a stream, on the chunk that ends the candidate)."""
    reasons = finish_reasons(payload.get("candidates"), "finishReason")
    if not reasons and info is not None and info.model and info.id:
        return info  # every chunk repeats them: nothing new
    model, id = payload.get("modelVersion"), payload.get("responseId")
    return answer_info(info, model=model, id=id, reasons=reasons)


def _parts(payload: Any) -> Any:
    cand = first(payload, "candidates")
    content = cand.get("content") if cand is not None else None
    return content.get("parts") if isinstance(content, dict) else None


def _delta(payload: Any) -> str | None:
    return text_parts_delta(_parts(payload))


def _set_delta(payload: Any, text: str) -> None:
    set_text_parts(_parts(payload), text)


def error_json(r: Refusal) -> Json:
    """Google's error shape (google.rpc.Status), the policy's details as an ErrorInfo."""
    metadata = {k: v or "" for k, v in r.extra().items()}
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r.code,
            "domain": "policy-extproc", "metadata": metadata}  # fmt: skip
    return {"error": {"code": r.status, "message": r.message, "status": "PERMISSION_DENIED",
                      "details": [info]}}  # fmt: skip


def _refusal(r: Refusal) -> bytes:
    return f"data: {compact(error_json(r))}\n\n".encode()


def _messages(body: Json) -> int:
    return len(body["contents"]) + (1 if body.get("systemInstruction") else 0)


FORMAT = ApiFormat(
    api="google.gemini",
    suffixes=(":generateContent", ":streamGenerateContent"),
    azure=None,
    parse=parse,
    max_tokens=(),  # generationConfig.maxOutputTokens, read by parse()
    numbers={},
    from_path=_from_path,
    response_parts=response_parts,
    usage=lambda body: usage_of(body.get("usageMetadata")),
    delta_text=_delta,
    set_delta=_set_delta,
    stream_usage=_stream_usage,
    answer_info=_info,
    refusal_event=_refusal,
    provider="google",
    messages=_messages,
    looks_like=lambda body: "contents" in body,
    example_path="/v1beta/models/unknown:generateContent",
)
