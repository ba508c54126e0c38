"""Streamed-answer parsing cost per API: ``SseParser`` (framing, usage, delta text) per event.

Run by hand: ``.venv/bin/python benchmarks/streams.py [--rounds N]``. Prints a table; never
asserts. Each row streams the mock provider's answer to a 2 KB prompt (16 text deltas plus the
API's framing events) through one parser, fed in 512-byte chunks; times are CPU time
(``time.process_time``), the median over rounds of the best of three runs, per event.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy_extproc.llm.response import SseParser
from policy_extproc.mockprovider import apis

TEXT = "the quick brown fox jumps over the lazy dog " * 48
CASES: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("openai.chat", "chat", apis.chat_completions,
     {"messages": [{"role": "user", "content": TEXT}], "stream": True,
      "stream_options": {"include_usage": True}}),
    ("anthropic.messages", "anthropic", apis.messages,
     {"messages": [{"role": "user", "content": TEXT}], "stream": True}),
]  # fmt: skip
if hasattr(apis, "gemini"):  # not before the Gemini and Converse formats existed
    CASES += [
        ("google.gemini", "gemini (SSE)", lambda b: apis.gemini(b, stream=True),
         {"contents": [{"parts": [{"text": TEXT}]}]}),
        ("aws.converse", "converse (event-stream)", lambda b: apis.converse(b, stream=True),
         {"messages": [{"role": "user", "content": [{"text": TEXT}]}]}),
    ]  # fmt: skip


def _run(api: Any, chunks: list[bytes]) -> int:
    parser = SseParser(api)
    n = 0
    for c in chunks:
        for ev in parser.feed(c):
            parser.delta_text(ev)
            n += 1
    parser.flush()
    assert parser.usage is not None
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="rounds per figure (median)")
    args = ap.parse_args()
    print(f"{'stream':26} {'bytes':>6} {'events':>6} {'us/event':>9}  (CPU time)")
    for api, name, handler, body in CASES:
        data = b"".join(handler(body))
        chunks = [data[i : i + 512] for i in range(0, len(data), 512)]
        events = _run(api, chunks)
        timer = timeit.Timer(lambda a=api, c=chunks: _run(a, c), timer=time.process_time)
        best = [min(timer.repeat(3, 20)) / 20 for _ in range(args.rounds)]
        per_event = statistics.median(best) / events * 1e6
        print(f"{name:26} {len(data):>6} {events:>6} {per_event:>9.2f}")


if __name__ == "__main__":
    main()
