"""OpenAI Embeddings (POST /v1/embeddings; Azure deployments too).

Reference: platform.openai.com/docs/api-reference/embeddings/create. Text: ``input`` (a string
or a list of them; token arrays are flagged) and any other string not declared below as not text.
"""

from __future__ import annotations

from . import _openai
from ._prompts import strings_or_tokens
from .base import ApiFormat, Json, Num, Parsed, generic, skipping, walk_rest

TOP = skipping("model", "input", "encoding_format", "user", rest=generic("type", "id", "model"))


def parse(body: Json, out: Parsed) -> None:
    strings_or_tokens(body, "input", out)
    walk_rest(body, TOP, (), "", out, frozenset())


FORMAT = ApiFormat(
    api="openai.embeddings",
    suffixes=("/v1/embeddings",),
    azure="embeddings",
    parse=parse,
    max_tokens=(),
    numbers={"dimensions": Num("int", 1, 65536)},
    usage=_openai.body_usage,
    answer_info=_openai.model_info,
    example_path="/v1/embeddings",
)
