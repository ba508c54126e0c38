"""The usage-only chunk the sidecar asked for is taken out of an OpenAI stream, wherever Envoy
cuts the stream into chunks; everything else goes on byte for byte, and the usage is read."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.llm.response import Usage, UsageChunkFilter


def frame(payload: object, crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    return f"data: {json.dumps(payload)}{nl}{nl}".encode()


CHAT = [
    frame(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None}
    ),
    frame({"choices": [{"index": 0, "delta": {"content": "Hello"}}], "usage": None}),
    frame({"choices": [{"index": 0, "delta": {"content": " wörld ✓"}}], "usage": None}),
    frame({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}),
]
USAGE = frame(
    {
        "choices": [],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 2},
        },
    }
)
DONE = b"data: [DONE]\n\n"


def run(chunks: list[bytes], api: str = "openai.chat") -> tuple[bytes, Usage | None]:
    f = UsageChunkFilter(api)  # type: ignore[arg-type]
    out = b"".join(f.feed(c, i == len(chunks) - 1) for i, c in enumerate(chunks))
    return out, f.usage


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=200, deadline=None)
@given(points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_wherever_the_stream_is_cut_only_the_usage_chunk_is_removed(points: list[int]) -> None:
    stream = b"".join([*CHAT, USAGE, DONE])
    out, usage = run(cuts(stream, points) or [b""])
    assert out == b"".join([*CHAT, DONE])
    assert usage == Usage(7, 3, 2)


@pytest.mark.parametrize(
    ("events", "kept"),
    [
        # CRLF line ends (some proxies), an event name: still the usage chunk.
        ([*CHAT, frame(json.loads(USAGE[6:]), crlf=True), DONE], [*CHAT, DONE]),
        ([*CHAT, b"event: chunk\n" + USAGE, DONE], [*CHAT, DONE]),
        # Usage riding on a chunk that has a choice (some compatible providers): it stays.
        (
            [
                frame(
                    {
                        "choices": [{"delta": {"content": "x"}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                    }
                ),
                DONE,
            ],
            None,
        ),
        # Azure's first chunk has empty choices and content filter results, but no usage.
        (
            [frame({"choices": [], "prompt_filter_results": [{"prompt_index": 0}]}), *CHAT, DONE],
            None,
        ),
        # Comments, errors and a last event without its blank line go on as they came.
        ([b": keep-alive\n\n", *CHAT, b'data: {"error": {"message": "x"}}'], None),
    ],
)
def test_everything_else_goes_on_byte_for_byte(
    events: list[bytes], kept: list[bytes] | None
) -> None:
    out, _ = run(events)
    assert out == b"".join(kept if kept is not None else events)


def test_legacy_completions_too() -> None:
    text = frame({"choices": [{"index": 0, "text": "hi", "finish_reason": None}], "usage": None})
    out, usage = run([text, USAGE, DONE], "openai.completions")
    assert out == text + DONE and usage == Usage(7, 3, 2)
