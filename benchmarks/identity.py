"""Cost of canonical identity and model names, and of taking the usage chunk out of a stream.

Prints, per request: building the context (identity headers folded, the model judged through
the catalog) and the model_access check, for names as policies write them and for spellings
that must meet them (``ACME``, ``OpenAI/O1-PREVIEW``); and per streamed answer, reading an
OpenAI stream for its usage with the SSE parser alone and with the usage chunk filter (what a
budget with a client that did not ask for usage costs). Interleaved rounds, median and spread.

    .venv/bin/python benchmarks/identity.py
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from policy_extproc.llm.request import parse_request
from policy_extproc.llm.response import SseParser, UsageChunkFilter
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.policy.evaluator import check_request
from policy_extproc.policy.loader import load_sources
from policy_extproc.sources.catalog import load_catalog

POLICIES = """
- policy_name: acme_models
  org: acme
  rules:
    - {type: model_access, id: models, models: ["gpt-4o*", "claude-3-5-*"], deny_models: ["o1*"]}
    - {type: model_access, id: interns, roles: [intern], models: [gpt-4o-mini]}
- policy_name: acme_ml
  scope: {org: acme, team: ml}
  rules:
    - {type: model_access, id: ml, deny_models: ["o3*"]}
"""
ROUNDS, N = 7, 5000


def request(model: str) -> object:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return parse_request("/v1/chat/completions", json.dumps(body).encode())


def stream(chunks: int) -> list[bytes]:
    delta = {"choices": [{"index": 0, "delta": {"content": "word "}}], "usage": None}
    usage = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": chunks}}
    frames = [f"data: {json.dumps(delta)}\n\n".encode() for _ in range(chunks)]
    return [*frames, f"data: {json.dumps(usage)}\n\n".encode(), b"data: [DONE]\n\n"]


def main() -> None:
    snapshot = Snapshot(load_sources([("p.yaml", POLICIES)]))
    cases: dict[str, tuple[dict[str, str], object]] = {
        "as written (acme, gpt-4o-mini)": (
            {"x-org-id": "acme", "x-team-id": "ml", "x-user-roles": "intern"},
            request("gpt-4o-mini"),
        ),
        "spelled (ACME, OpenAI/O1-PREVIEW)": (
            {"x-org-id": " ACME", "x-team-id": "ML", "x-user-roles": "Intern"},
            request("OpenAI/O1-PREVIEW"),
        ),
    }

    def decide(headers: dict[str, str], req: object) -> Callable[[], object]:
        def run() -> object:
            ctx = build_context(headers, req, catalog=load_catalog())  # type: ignore[arg-type]
            return check_request(snapshot.resolve(ctx.org, ctx.team, ctx.environment), ctx)

        return run

    sse = stream(200)

    def parse_only() -> object:
        p = SseParser("openai.chat")
        for c in sse:
            p.feed(c)
        return p.usage

    def filtered() -> object:
        f = UsageChunkFilter("openai.chat")
        for i, c in enumerate(sse):
            f.feed(c, i == len(sse) - 1)
        return f.usage

    work: dict[str, tuple[Callable[[], object], int, str]] = {
        f"context + model check, {name}": (decide(*case), N, "us/request")
        for name, case in cases.items()
    }
    work["stream of 200 chunks, SSE parser alone"] = (parse_only, 50, "us/stream")
    work["stream of 200 chunks, usage chunk filter"] = (filtered, 50, "us/stream")
    times: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(ROUNDS):  # interleaved: a noisy neighbour slows every case alike
        for name, (fn, n, _) in work.items():
            t = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t) / n * 1e6)
    for name, (_, _, unit) in work.items():
        ts = times[name]
        print(
            f"{name:55s} {statistics.median(ts):8.2f} {unit} (min {min(ts):.2f}, max {max(ts):.2f})"
        )


if __name__ == "__main__":
    main()
