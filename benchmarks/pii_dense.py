"""PII-dense bodies: detection and masking time against the number of e-mail addresses.

Run by hand: ``.venv/bin/python benchmarks/pii_dense.py [--sizes 15000,150000] [--rounds 3]``.
Prints figures, never asserts. Issue 10 asks that 150,000 addresses cost at most 10x what
15,000 cost (linear time in the body); the last column is that ratio to the smallest size.
Each body mixes addresses (one in ten repeated, one in ten non-ASCII) with short words, the
shape of a mailing-list export pasted into a prompt.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy_extproc.detect.masking import mask
from policy_extproc.detect.pii import PiiDetector

_NAMES = ("anna", "bob", "chen", "dara", "eli", "fatima", "goran", "hana", "jörg", "мария")
_DOMAINS = ("example.org", "mail.example.com", "acme.io", "bücher.example", "uni.example.ac.uk")


def body(count: int, seed: int = 7) -> str:
    """About 25 bytes an address: ``name.tag@domain``, comma separated, some words between.

    Every address has the same shape whatever the count (a six-letter tag, not a growing
    number, which would turn into other candidates past five digits).
    """
    rng = random.Random(seed)
    parts: list[str] = []
    seen: list[str] = []
    for i in range(count):
        if seen and rng.random() < 0.1:  # one in ten a repeat
            parts.append(rng.choice(seen))
            continue
        name = rng.choice(_NAMES) if rng.random() < 0.1 else _NAMES[i % 8]
        domain = rng.choice(_DOMAINS) if rng.random() < 0.1 else _DOMAINS[i % 3]
        tag = "".join(rng.choice(string.ascii_lowercase) for _ in range(6))
        seen.append(f"{name}.{tag}@{domain}")
        parts.append(seen[-1])
        if i % 8 == 7:
            parts.append("cc")
    return ", ".join(parts)


def main() -> None:
    """Time find() and mask() per size, interleaved rounds, and print the median and spread."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="15000,150000")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    detector = PiiDetector()
    bodies = {n: body(n) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    found: dict[int, int] = {}
    for _ in range(args.rounds):
        for n in sizes:
            t0 = time.perf_counter()
            matches = detector.find(bodies[n])
            mask(bodies[n], matches)
            times[n].append(time.perf_counter() - t0)
            found[n] = len(matches)
    base = statistics.median(times[sizes[0]])
    print(f"{'e-mails':>8} {'MB':>6} {'found':>8} {'median s':>9} {'min-max s':>13} {'x first':>8}")
    for n in sizes:
        t = times[n]
        mb = len(bodies[n].encode()) / 1e6
        print(
            f"{n:>8} {mb:>6.2f} {found[n]:>8} {statistics.median(t):>9.3f} "
            f"{min(t):>6.3f}-{max(t):<6.3f} {statistics.median(t) / base:>8.1f}"
        )


if __name__ == "__main__":
    main()
