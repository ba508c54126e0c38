"""OpenAI Completions, the legacy API (POST /v1/completions; Azure deployments too).

Reference: platform.openai.com/docs/api-reference/completions/create. Text: ``prompt`` (a
string or a list of them; token arrays are flagged), ``suffix`` (the text after an insertion),
``stop``, and any other string not declared below as not text.
"""

from __future__ import annotations

from . import _openai
from ._prompts import strings_or_tokens
from .base import (
    BOOL,
    PENALTY,
    ApiFormat,
    Json,
    Num,
    Parsed,
    PromptPart,
    generic,
    skipping,
    text_field,
    walk_rest,
)
from .wire import items

TOP = skipping(
    "model",
    "prompt",
    "suffix",
    "user",
    "logit_bias",
    "stream_options",
    "safety_identifier",
    rest=generic("type", "id", "model"),
)


def parse(body: Json, out: Parsed) -> None:
    strings_or_tokens(body, "prompt", out)
    if body.get("suffix") is not None:  # the provider reads it too: text after the insertion
        text_field(body, (), "suffix", "", out)
    walk_rest(body, TOP, (), "", out, frozenset())


def response_parts(body: Json) -> list[PromptPart]:
    parts: list[PromptPart] = []
    for i, choice in items(body.get("choices")):
        _openai.add_text(parts, choice, "text", ("choices", i))
    return parts


FORMAT = ApiFormat(
    api="openai.completions",
    suffixes=("/v1/completions",),
    azure="completions",
    parse=parse,
    max_tokens=("max_tokens",),
    numbers={
        # max_tokens 0 with echo is how the legacy API scores a prompt: allowed here.
        "max_tokens": Num("int", 0),
        "n": Num("int", 1, 128),
        "best_of": Num("int", 1, 128),
        "logprobs": Num("int", 0, 5),
        "seed": Num("int", -(2**63), 2**63 - 1),
        "temperature": Num("number", 0.0, 2.0),
        "top_p": Num("number", 0.0, 1.0),
        "frequency_penalty": PENALTY,
        "presence_penalty": PENALTY,
        "stream": BOOL,
        "echo": BOOL,
    },
    response_parts=response_parts,
    usage=_openai.body_usage,
    delta_text=_openai.completion_delta,
    set_delta=_openai.set_completion_delta,
    stream_usage=_openai.chunk_usage,
    answer_info=_openai.choices_info,
    refusal_event=_openai.chunk_refusal,
    usage_opt_in=True,
    example_path="/v1/completions",
)
