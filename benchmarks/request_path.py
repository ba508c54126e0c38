"""CPU of the sidecar's own request path per request, without gRPC: the servicer's ``Process``
fed the ext_proc messages Envoy sends for one chat request, in process.

What ``benchmarks/e2e.py`` measures is this plus gRPC, the event loop and the kernel; this
isolates the part our code controls (translate, the state machine and its driver, the
engine, the audit record written to a real file), so that a change to it can be measured
without the noise of a loaded machine. The configuration is ``serve``'s: examples/policies
and benchmarks/policies, an audit log in a temporary directory, in-memory state. Per team
(support: no rule reads the answer's usage; ml: a budget reads it; both have output PII
guardrails, so both read the answer) it prints CPU microseconds per request
(``time.process_time``, the process's threads included), median [min..max] of the rounds.
Prints figures; asserts nothing. Usage:

    .venv/bin/python benchmarks/request_path.py [--requests 2000] [--rounds 5]
        [--prompt-chars 400] [--teams support,ml]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep  # noqa: E402

from policy_extproc.mockprovider import apis  # noqa: E402
from policy_extproc.server import Sidecar  # noqa: E402
from policy_extproc.serverconfig import ServerConfig  # noqa: E402


def _header_map(headers: dict[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    )


def messages(n: int, prompt_chars: int, team: str) -> list[ep.ProcessingRequest]:
    """The four messages Envoy sends for request ``n``: request headers and body, response
    headers and body (the mock provider's answer)."""
    words = ("the quick brown fox jumps over the lazy dog " * (prompt_chars // 44 + 1))[
        :prompt_chars
    ]
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": words}]}
    body = json.dumps(payload).encode()
    answer = apis.dumps(apis.chat_completions(payload))
    request_headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "127.0.0.1",
        ":scheme": "http",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "x-org-id": "acme",
        "x-team-id": team,
        "x-user-id": "bench-user",
        "x-environment": "bench",
        "x-request-id": f"bench-{n}",
    }
    response_headers = {
        ":status": "200",
        "content-type": "application/json",
        "content-length": str(len(answer)),
    }
    return [
        ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=_header_map(request_headers))),
        ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True)),
        ep.ProcessingRequest(
            response_headers=ep.HttpHeaders(headers=_header_map(response_headers))
        ),
        ep.ProcessingRequest(response_body=ep.HttpBody(body=answer, end_of_stream=True)),
    ]


class _Context:
    """What the servicer asks of grpc.aio's ServicerContext: the stream's messages in
    (``read``, then ``grpc.aio.EOF``), its replies out (``write``, counted)."""

    def __init__(self, msgs: list[ep.ProcessingRequest]) -> None:
        self._msgs = iter(msgs)
        self.replies = 0

    def invocation_metadata(self) -> tuple[Any, ...]:
        return ()

    async def read(self) -> Any:
        return next(self._msgs, grpc.aio.EOF)

    async def write(self, reply: ep.ProcessingResponse) -> None:
        self.replies += 1


async def _stream(processor: Any, msgs: list[ep.ProcessingRequest]) -> int:
    """One ext_proc stream through the servicer; the number of replies it wrote."""
    context = _Context(msgs)
    await processor.Process(_nothing(), context)
    return context.replies


async def _nothing() -> AsyncIterator[ep.ProcessingRequest]:
    # The servicer reads with context.read(); grpc.aio passes an iterator it leaves alone.
    return
    yield


async def run(args: argparse.Namespace, teams: Sequence[str]) -> dict[str, list[float]]:
    """Start the sidecar in process (no port is served to), then rounds of requests per team."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-path-"))
    config = ServerConfig(
        policies=(str(ROOT / "examples" / "policies"), str(ROOT / "benchmarks" / "policies")),
        listen="127.0.0.1:0",
        audit_log=str(tmp / "audit.jsonl"),
        admin_listen=None,
    )
    sidecar = Sidecar(config)
    await sidecar.start()
    processor = sidecar.processor
    assert processor is not None
    out: dict[str, list[float]] = {t: [] for t in teams}
    try:
        prepared = {
            t: [messages(i, args.prompt_chars, t) for i in range(args.requests)] for t in teams
        }
        for t in teams:  # warm-up: caches, first compiles
            for msgs in prepared[t][:50]:
                await _stream(processor, msgs)
        for _ in range(args.rounds):
            for t in teams:
                replies = 0
                started = time.process_time()
                for msgs in prepared[t]:
                    replies += await _stream(processor, msgs)
                await asyncio.sleep(0)  # let the settlements spawned off the path run
                used = time.process_time() - started
                assert replies == 4 * args.requests, f"{t}: {replies} replies"
                out[t].append(used * 1e6 / args.requests)
    finally:
        await sidecar.stop()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per round and team")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--prompt-chars", type=int, default=400, help="size of the user prompt")
    parser.add_argument("--teams", default="support,ml", help="comma-separated teams")
    args = parser.parse_args(argv)
    teams = [t.strip() for t in args.teams.split(",") if t.strip()]
    figures = asyncio.run(run(args, teams))
    print(f"{'team':<10}{'CPU us/request':>28}   ({args.requests} requests x {args.rounds} rounds)")
    for t, v in figures.items():
        print(f"{t:<10}{statistics.median(v):>12.1f} [{min(v):.1f}..{max(v):.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
