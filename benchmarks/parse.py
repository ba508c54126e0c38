"""Request parsing cost: ``parse_request`` per body kind, and what strict JSON adds.

Run by hand: ``.venv/bin/python benchmarks/parse.py [--rounds N]``. Prints a table; never
asserts. Times are CPU time of this process (``time.process_time``), the median over rounds of
the best of three runs, so other processes on a shared machine disturb them less than wall time.

Rows: chat bodies of 1, 4 and 32 KB (the common case: string contents, nothing else), a chat
body with ten tool definitions (JSON Schema parameters: many small objects and strings), and an
Anthropic body with content blocks and a base64 text document. Columns: ``parse_request``, the
plain ``json.loads`` of the same bytes, and the strict decoding (duplicate keys, non-finite
numbers, lone surrogates) that ``parse_request`` does instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate import prompt

from policy_extproc.llm.request import load_json_object, parse_request

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def _tools_body() -> bytes:
    body = json.loads(prompt(4096))
    props = {f"p{i}": {"type": "string", "description": f"parameter {i}"} for i in range(20)}
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a record up by its fields.",
            "parameters": {"type": "object", "properties": props},
        },
    }
    body["tools"] = [tool] * 10
    return json.dumps(body).encode()


def _anthropic_body() -> bytes:
    doc = base64.b64encode(b"Quarterly notes. " * 100).decode()
    content: list[dict[str, Any]] = [
        {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": doc}},
        *({"type": "text", "text": f"part {i} of the question"} for i in range(10)),
    ]
    body = {
        "model": "claude",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
    }
    return json.dumps(body).encode()


def _time(fn: Callable[[], object], rounds: int, number: int) -> float:
    runs = [
        min(timeit.repeat(fn, number=number, repeat=3, timer=time.process_time)) / number * 1e6
        for _ in range(rounds)
    ]
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="rounds per figure (median)")
    args = ap.parse_args()
    cases = [
        ("chat 1 KB", CHAT, prompt(1024)),
        ("chat 4 KB", CHAT, prompt(4096)),
        ("chat 32 KB", CHAT, prompt(32 * 1024)),
        ("chat 4 KB + 10 tools", CHAT, _tools_body()),
        ("anthropic blocks + doc", MESSAGES, _anthropic_body()),
    ]
    print(f"{'body':24s} {'bytes':>7s} {'parts':>6s} {'parse_request':>14s} "
          f"{'json.loads':>11s} {'strict load':>12s}  (us, CPU time)")  # fmt: skip
    for label, path, body in cases:
        number = max(20, 200_000 // len(body))
        text = body.decode()
        parts = len(parse_request(path, body).parts)
        full = _time(lambda: parse_request(path, body), args.rounds, number)  # noqa: B023
        plain = _time(lambda: json.loads(text), args.rounds, number)  # noqa: B023
        strict = _time(lambda: load_json_object(body, "request", strict=True), args.rounds, number)  # noqa: B023
        print(f"{label:24s} {len(body):7d} {parts:6d} {full:14.1f} {plain:11.1f} {strict:12.1f}")


if __name__ == "__main__":
    main()
