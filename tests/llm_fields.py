"""Request fields that carry text a model reads, per API format: one case per field that was
once never scanned (issue "Sound enforcement", "Fields never scanned"), shared by the parser's
unit tests and the ext_proc tests.

Each case builds a body with ``text`` at one field and says where that field is, and how the
text is stored there (as is, or base64 behind a data URL or bare).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"

Path = tuple[str | int, ...]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True)
class Field:
    name: str
    path: str  # the request path
    build: Callable[[str], dict[str, Any]]
    at: Path  # where the text sits in the body
    encoding: str | None = None  # None, "data:text/plain;base64," or "" (bare base64)

    def stored(self, text: str) -> str:
        """How text appears at ``at`` in the body."""
        return text if self.encoding is None else self.encoding + b64(text)

    def decode(self, stored: str) -> str:
        if self.encoding is None:
            return stored
        return base64.b64decode(stored[len(self.encoding) :]).decode()


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], **extra}


def _fn(**function: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "lookup", **function}}]


def _schema(prop: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"q": {"type": "string", **prop}}, "required": ["q"]}


def _resp(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1", "input": "hello", **extra}


def _claude(content: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-3-5-sonnet-20241022",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def _text_block(text: str = "summarise it") -> dict[str, Any]:
    return {"type": "text", "text": text}


DATA_URL = "data:text/plain;base64,"

FIELDS: list[Field] = [
    # -- OpenAI chat ---------------------------------------------------------------------------
    Field(
        "chat tools[].function.description",
        CHAT,
        lambda t: _chat(tools=_fn(description=t, parameters=_schema({}))),
        ("tools", 0, "function", "description"),
    ),
    Field(
        "chat tool parameter description",
        CHAT,
        lambda t: _chat(tools=_fn(parameters=_schema({"description": t}))),
        ("tools", 0, "function", "parameters", "properties", "q", "description"),
    ),
    Field(
        "chat tool parameter enum",
        CHAT,
        lambda t: _chat(tools=_fn(parameters=_schema({"enum": ["plain", t]}))),
        ("tools", 0, "function", "parameters", "properties", "q", "enum", 1),
    ),
    Field(
        "chat response_format schema description",
        CHAT,
        lambda t: _chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": _schema({"description": t})},
            }
        ),
        ("response_format", "json_schema", "schema", "properties", "q", "description"),
    ),
    Field(
        "chat prediction.content",
        CHAT,
        lambda t: _chat(prediction={"type": "content", "content": t}),
        ("prediction", "content"),
    ),
    Field(
        "chat file part with base64 text",
        CHAT,
        lambda t: {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "read this"},
                        {
                            "type": "file",
                            "file": {"filename": "a.txt", "file_data": DATA_URL + b64(t)},
                        },
                    ],
                }
            ],
        },
        ("messages", 0, "content", 1, "file", "file_data"),
        DATA_URL,
    ),
    Field(
        "chat a field added next month",
        CHAT,
        lambda t: _chat(context_documents=[{"type": "note", "body": t}]),
        ("context_documents", 0, "body"),
    ),
    # -- OpenAI Responses ----------------------------------------------------------------------
    Field(
        "responses tools[].description",
        RESPONSES,
        lambda t: _resp(
            tools=[
                {"type": "function", "name": "lookup", "description": t, "parameters": _schema({})}
            ]
        ),
        ("tools", 0, "description"),
    ),
    Field(
        "responses prompt.variables",
        RESPONSES,
        lambda t: _resp(prompt={"id": "pmpt_123", "version": "2", "variables": {"city": t}}),
        ("prompt", "variables", "city"),
    ),
    Field(
        "responses text.format description",
        RESPONSES,
        lambda t: _resp(
            text={
                "format": {
                    "type": "json_schema",
                    "name": "answer",
                    "description": t,
                    "schema": _schema({}),
                }
            }
        ),
        ("text", "format", "description"),
    ),
    Field(
        "responses input_file with base64 text",
        RESPONSES,
        lambda t: {
            "model": "gpt-4.1",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "read this"},
                        {"type": "input_file", "filename": "notes.txt", "file_data": b64(t)},
                    ],
                }
            ],
        },
        ("input", 0, "content", 1, "file_data"),
        "",
    ),
    # -- Anthropic Messages --------------------------------------------------------------------
    Field(
        "anthropic tool_use.input in the history",
        MESSAGES,
        lambda t: {
            "model": "claude-3-5-sonnet-20241022",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "look it up"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": t}}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
                },
            ],
        },
        ("messages", 1, "content", 0, "input", "q"),
    ),
    Field(
        "anthropic tools[].description",
        MESSAGES,
        lambda t: _claude(
            [_text_block()],
            tools=[{"name": "lookup", "description": t, "input_schema": _schema({})}],
        ),
        ("tools", 0, "description"),
    ),
    Field(
        "anthropic tools[].input_schema",
        MESSAGES,
        lambda t: _claude(
            [_text_block()],
            tools=[{"name": "lookup", "input_schema": _schema({"description": t})}],
        ),
        ("tools", 0, "input_schema", "properties", "q", "description"),
    ),
    Field(
        "anthropic document with a content source",
        MESSAGES,
        lambda t: _claude(
            [
                {
                    "type": "document",
                    "source": {"type": "content", "content": [_text_block(t)]},
                },
                _text_block(),
            ]
        ),
        ("messages", 0, "content", 0, "source", "content", 0, "text"),
    ),
    Field(
        "anthropic base64 text/plain document",
        MESSAGES,
        lambda t: _claude(
            [
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "text/plain", "data": b64(t)},
                },
                _text_block(),
            ]
        ),
        ("messages", 0, "content", 0, "source", "data"),
        "",
    ),
    Field(
        "anthropic document title",
        MESSAGES,
        lambda t: _claude(
            [
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "body"},
                    "title": t,
                },
                _text_block(),
            ]
        ),
        ("messages", 0, "content", 0, "title"),
    ),
    Field(
        "anthropic document context",
        MESSAGES,
        lambda t: _claude(
            [
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "body"},
                    "context": t,
                },
                _text_block(),
            ]
        ),
        ("messages", 0, "content", 0, "context"),
    ),
    Field(
        "anthropic search_result block",
        MESSAGES,
        lambda t: _claude(
            [
                {
                    "type": "search_result",
                    "source": "https://example.org/a",
                    "title": "Result",
                    "content": [_text_block(t)],
                },
                _text_block(),
            ]
        ),
        ("messages", 0, "content", 0, "content", 0, "text"),
    ),
    Field(
        "anthropic search_result inside tool_result",
        MESSAGES,
        lambda t: _claude(
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [
                        {
                            "type": "search_result",
                            "source": "https://example.org/a",
                            "title": t,
                            "content": [_text_block("result")],
                        }
                    ],
                }
            ]
        ),
        ("messages", 0, "content", 0, "content", 0, "title"),
    ),
    # -- Completions and Embeddings ------------------------------------------------------------
    Field(
        "completions suffix",
        COMPLETIONS,
        lambda t: {"model": "gpt-3.5-turbo-instruct", "prompt": "def f(", "suffix": t},
        ("suffix",),
    ),
    Field(
        "embeddings list of strings",
        EMBEDDINGS,
        lambda t: {"model": "text-embedding-3-small", "input": ["plain", t]},
        ("input", 1),
    ),
]


def at(body: Any, path: Path) -> Any:
    for key in path:
        body = body[key]
    return body
