"""The external evaluation of prompt injection (tests/data/semantic/external/), for
``benchmarks/semantic.py --split ext-tune|ext-heldout|ext2`` (ext2: external2.yaml, kept out
of the lexical model's training, tools/train_injection_lexicon.py): recall at 1% and 3% FPR of
that part's benign texts, per family and per language, recall at each shipped sensitivity, and the
false-positive rate of each sensitivity per benign family. ``--misses N`` also prints the N
lowest-scoring attacks and highest-scoring benign texts (use it on ext-tune only); ``form``:
what is scored of each text (the reading form for ``--canonical``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

EXT = Path(__file__).resolve().parent.parent / "tests" / "data" / "semantic" / "external"


def external(det: object, split: str, sensitivity: dict[str, float],
             at_fpr: Callable[[list[float], list[float], float], tuple[float, float]],
             misses: int = 0, form: Callable[[str], str] = str) -> None:  # fmt: skip
    name = "external2.yaml" if split == "ext2" else "external.yaml"
    items = [x for x in yaml.safe_load((EXT / name).read_text())["items"] if x["split"] == split]
    for x in items:
        found = det.score(form(x["text"]))  # type: ignore[attr-defined]
        x["score"], x["via"] = found.score, f"{found.family}/{found.via}"
    pos = [x for x in items if x["label"] == "attack"]
    neg = [x for x in items if x["label"] == "benign"]
    negs = [x["score"] for x in neg]
    every = [x["score"] for x in pos]
    t1, _ = at_fpr(negs, every, 0.01)
    t3, _ = at_fpr(negs, every, 0.03)
    print(f"\nprompt injection, external {split}: {len(pos)} attacks, {len(neg)} benign")
    print(f"  {'family':<22}{'n':>4}{'@1%FPR':>9}{'@3%FPR':>9}" +
          "".join(f"{s:>9}" for s in sensitivity))  # fmt: skip
    groups: dict[str, list[float]] = {}
    for x in pos:
        groups.setdefault(x["family"], []).append(x["score"])
    for x in pos:
        if "lang" in x:
            groups.setdefault(f"lang {x['lang']}", []).append(x["score"])
    groups["all"] = every
    for fam, scores in groups.items():
        r1 = np.mean([s >= t1 for s in scores])
        r3 = np.mean([s >= t3 for s in scores])
        ops = "".join(f"{np.mean([s >= v for s in scores]):>9.2f}" for v in sensitivity.values())
        print(f"  {fam:<22}{len(scores):>4}{r1:>9.2f}{r3:>9.2f}{ops}")
    bgroups: dict[str, list[float]] = {}
    for x in neg:
        bgroups.setdefault(f"FPR {x['family']}", []).append(x["score"])
        if "lang" in x:
            bgroups.setdefault(f"FPR lang {x['lang']}", []).append(x["score"])
    bgroups["FPR (benign)"] = negs
    for fam, scores in bgroups.items():
        fp = "".join(f"{np.mean([s >= v for s in scores]):>9.2f}" for v in sensitivity.values())
        print(f"  {fam:<22}{len(scores):>4}{'':>18}{fp}")
    print(f"  thresholds giving 1% / 3% FPR: {t1:.3f} / {t3:.3f}; shipped: "
          + ", ".join(f"{k} {v}" for k, v in sensitivity.items()))  # fmt: skip
    if misses:
        print("  lowest-scoring attacks:")
        for x in sorted(pos, key=lambda x: x["score"])[:misses]:
            print(f"    {x['score']:.3f} {x['family']:<15} {x['via']:<28} {x['text'][:150]!r}")
        print("  highest-scoring benign:")
        for x in sorted(neg, key=lambda x: -x["score"])[:misses]:
            print(f"    {x['score']:.3f} {x['family']:<15} {x['via']:<28} {x['text'][:150]!r}")
