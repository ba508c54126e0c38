"""Cost of matching on the canonical text, next to matching the raw text (the code before it).

Run by hand: ``.venv/bin/python benchmarks/canonical.py [--base DIR] [--rounds 7]
[--iterations 300]``. Prints a table; never asserts.

The same request evaluation (``check_request`` + ``decide``: content filters with keywords,
topic phrases and regexes, and a ``pii`` rule with every entity type) is timed in two worker
processes: one imports this checkout, the other the code before canonical matching (``--base``,
a checkout of it; by default a temporary ``git worktree`` of commit 88f9dd8, removed after).
Rounds are interleaved (old, new, old, new, ...) so that both see the same machine load; each
round reports the median of ``--iterations`` evaluations, and the table shows the median of the
rounds with their spread (min..max). Prompts: 1, 4 and 32 KB in four chat messages, nothing
fires (the common case), in ASCII and in mixed scripts (random Cyrillic, kana and kanji words,
accented Latin, emoji ZWJ sequences); 200 distinct prompts per case, taken in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_COMMIT = "88f9dd8"
SIZES = (("1 KB", 1024), ("4 KB", 4096), ("32 KB", 32 * 1024))
VARIANTS = 200  # distinct prompts per case

POLICY = {
    "policy_name": "bench",
    "org": "bench",
    "rules": [
        {"type": "content_filter", "id": "kw", "action": "redact",
         "keywords": [f"codename{i}" for i in range(200)] + ["project-aurora", "confidential"]},
        {"type": "content_filter", "id": "topics", "action": "block",
         "topics": {"weapons": ["build a bomb", "make a gun"], "drugs": ["synthesize meth"]}},
        {"type": "content_filter", "id": "rx", "action": "redact",
         "patterns": [r"acct-\d{6}", r"sk-[A-Za-z0-9]{32}", r"\b\d{3}-\d{2}-\d{4}\b"]},
        {"type": "pii", "id": "pii"},
    ],
}  # fmt: skip

ASCII_WORDS = ["the", "quarterly", "report", "shows", "steady", "growth", "in", "all",
               "regions", "and", "teams"]  # fmt: skip
_CYRILLIC = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
_KANA_KANJI = "あいうえおかきくけこさしすせそたちつてとアイウエオカキクケコ日本語東京会議報告書"
_ACCENTED = "àâçéèêëîïôûùüÿñæœß"
_EMOJI = ["👩\u200d💻", "🏳\ufe0f\u200d🌈", "👨\u200d👩\u200d👧", "❤\ufe0f"]


def _mixed_word(rnd: random.Random) -> str:
    """A fresh word: mixed-script text has more distinct words than a short vocabulary."""
    kind = rnd.randrange(5)
    n = rnd.randint(3, 8)
    if kind == 0:
        return "".join(rnd.choice(_CYRILLIC) for _ in range(n))
    if kind == 1:
        return "".join(rnd.choice(_KANA_KANJI) for _ in range(n))
    if kind == 2:
        return rnd.choice(ASCII_WORDS) + rnd.choice(_ACCENTED)
    if kind == 3:
        return rnd.choice(_EMOJI)
    return rnd.choice(ASCII_WORDS)


def _prompt(script: str, size: int, seed: int) -> str:
    rnd = random.Random(seed)
    out: list[str] = []
    length = 0
    while length < size:
        w = rnd.choice(ASCII_WORDS) if script == "ascii" else _mixed_word(rnd)
        out.append(w)
        length += len(w.encode()) + 1
    return " ".join(out)


def _body(script: str, size: int, seed: int) -> bytes:
    per = size // 4
    messages = [{"role": "user", "content": _prompt(script, per, seed * 4 + i)} for i in range(4)]
    return json.dumps({"model": "gpt-4o-mini", "messages": messages}, ensure_ascii=False).encode()


def worker() -> None:
    """Read ``case iterations`` lines; answer the median evaluation time in microseconds."""
    from policy_extproc.llm.request import parse_request
    from policy_extproc.policy.compiler import Snapshot
    from policy_extproc.policy.context import build_context
    from policy_extproc.policy.evaluator import check_request, decide
    from policy_extproc.policy.loader import load_sources
    from policy_extproc.sources.catalog import load_catalog

    snapshot = Snapshot(load_sources([("bench.json", json.dumps(POLICY))]))
    # Distinct prompts per case, taken in turn: what is cached per text or per word (the
    # canonical forms of the last request, folded runs) is not reused from one to the next.
    cases: dict[str, list[object]] = {}
    for script in ("ascii", "mixed"):
        for label, size in SIZES:
            cases[f"{label} {script}"] = [
                build_context(
                    {"x-org-id": "bench"},
                    parse_request("/v1/chat/completions", _body(script, size, seed)),
                    catalog=load_catalog(),
                )
                for seed in range(VARIANTS)
            ]

    def once(ctx: object) -> float:
        t = time.perf_counter_ns()
        es = snapshot.resolve("bench", None, None)  # type: ignore[arg-type]
        d = decide(es, ctx, check_request(es, ctx))  # type: ignore[arg-type]
        elapsed = (time.perf_counter_ns() - t) / 1000
        assert d.action == "allow", d.reason
        return elapsed

    for contexts in cases.values():
        for ctx in contexts[:20]:
            once(ctx)  # warm-up: scratch space, the folding of each character met
    for line in sys.stdin:
        name, n = line.rsplit(" ", 1)
        contexts = cases[name]
        times = [once(contexts[i % VARIANTS]) for i in range(int(n))]
        print(statistics.median(times), flush=True)


def _spawn(root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root,
    )  # fmt: skip


def _ask(proc: subprocess.Popen[str], case: str, iterations: int) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{case} {iterations}\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, help="checkout of the code before canonical matching")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker()
        return
    scratch = None
    base = args.base
    if base is None:
        scratch = tempfile.mkdtemp(prefix="canon-base-")
        base = Path(scratch) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base),
                        BASE_COMMIT], check=True)  # fmt: skip
    try:
        old, new = _spawn(base), _spawn(ROOT)
        cases = [f"{label} {script}" for script in ("ascii", "mixed") for label, _ in SIZES]
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for case in cases:
                for name, proc in (("old", old), ("new", new)):
                    results.setdefault((case, name), []).append(_ask(proc, case, args.iterations))
        for proc in (old, new):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait()
    finally:
        if scratch is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False)  # fmt: skip
    print(f"check_request + decide, µs per request; median of {args.rounds} interleaved rounds "
          f"of {args.iterations} (min..max of the rounds)")  # fmt: skip
    print(f"{'prompt':<14}{'raw text (before)':>24}{'canonical (now)':>24}{'change':>10}")
    for case in cases:
        o, n = results[(case, "old")], results[(case, "new")]
        mo, mn = statistics.median(o), statistics.median(n)
        change = (mn / mo - 1) * 100
        print(f"{case:<14}{mo:>10.1f} ({min(o):6.1f}..{max(o):6.1f})"
              f"{mn:>10.1f} ({min(n):6.1f}..{max(n):6.1f}){change:>+9.0f}%")  # fmt: skip


if __name__ == "__main__":
    main()
