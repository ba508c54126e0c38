"""Train (and measure) a linear probe for the prompt_injection rule: class-balanced, L2
logistic regression in numpy over per-part features (the part's mean and max sentence vector
of the detector's static embedding, nearest attack / benign cosines per family, the heuristic
score per family, cheap text statistics).

Training data only: the ``tune`` parts of tests/data/semantic/injection.yaml, the shipped
exemplar library (optional: ``--library``) and ``ext-tune`` of tests/data/semantic/external.
The feature block, the L2 weight and the combination with today's score are chosen by 5-fold
cross-validation (fold seeds 13 to 15) inside that data, then each sensitivity's threshold (no
more out-of-fold false positives than today's score). ``--evaluate`` then scores heldout,
fresh-inj and ext-heldout with the probe trained on all the training data; it never prints
texts. The probe was measured and not kept (docs/semantic.md, "A learned linear probe").

    .venv/bin/python tools/injection_probe.py [--combine max|or] [--library] [--wordllama]
        [--everyday] [--evaluate]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policy_extproc.detect.semantic.embedder import Embedder  # noqa: E402
from policy_extproc.detect.semantic.injection import (  # noqa: E402
    MODEL,
    SENSITIVITY,
    InjectionDetector,
    _decodings,
)
from policy_extproc.detect.semantic.signals import SIGNALS  # noqa: E402
from policy_extproc.detect.semantic.text import sentence_spans  # noqa: E402
from policy_extproc.sources.models import load_embedder, read_exemplars  # noqa: E402

DATA = ROOT / "tests" / "data" / "semantic"
FAMILIES = ("override", "extraction", "persona", "hidden", "encoding", "tool_abuse",
            "multilingual")  # fmt: skip
SEED = 13


def _family_heuristic(det: InjectionDetector, data: bytes) -> dict[str, float]:
    """Per family, the best noisy-or over sentences of that family's signals (as _heuristic)."""
    found = det.weights(data)
    miss: dict[tuple[int, str], float] = {}
    for (sentence, tag), w in found.items():
        key = (sentence, SIGNALS[tag].family)
        miss[key] = miss.get(key, 1.0) * (1.0 - w)
    out: dict[str, float] = {}
    for (_, fam), left in miss.items():
        out[fam] = max(out.get(fam, 0.0), 1.0 - left)
    return out


def features(det: InjectionDetector, text: str) -> np.ndarray:
    raw = text.encode("utf-8", "replace")
    low = text.lower().encode("utf-8", "replace")
    fam = _family_heuristic(det, low)
    for decoded in _decodings(low, raw, det._patterns.cues(low)):
        d = _family_heuristic(det, decoded)
        if d:
            fam["encoding"] = max(fam.get("encoding", 0.0), max(d.values()))
    heur = [fam.get(f, 0.0) for f in FAMILIES]
    spans = sentence_spans(text)
    vecs = det._embedder.embed_spans(text, spans)
    if len(vecs) == 0:
        vecs = np.zeros((1, det._embedder.dim), np.float32)
    attack = vecs @ det._attack  # (sentences, exemplars)
    benign = (vecs @ det._benign).max(axis=1)
    fams = np.asarray(det._families)
    near_fam = [float(attack[:, fams == f].max()) for f in FAMILIES]
    near = attack.max(axis=1)
    margin = near - benign
    mean = vecs.mean(axis=0)
    n = len(low) + 1
    stats = [
        np.log1p(len(low)) / 8,
        np.log1p(len(spans)) / 4,
        (low.count(b"you") * 20) / n,
        (low.count(b"!") * 20) / n,
        float(b'"' in low or b"'" in low),
        float(margin.max()),
        float(near.max()),
        float(benign.max()),
        float(max(heur)),
    ]
    extra: list[np.ndarray] = []
    if WORDLLAMA:
        wv = WORDLLAMA[0].embed_spans(text, spans)
        extra = [wv.mean(axis=0) if len(wv) else np.zeros(WORDLLAMA[0].dim)]
    parts = [heur, near_fam, stats, mean, vecs.max(axis=0), *extra]
    return np.concatenate(parts).astype(np.float64)


WORDLLAMA: list[Embedder] = []  # --wordllama


def fit(x: np.ndarray, y: np.ndarray, lam: float, iters: int = 300) -> np.ndarray:
    """Class-balanced L2 logistic regression by Newton's method (deterministic)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    pos = y.mean()
    sw = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos))
    reg = np.full(xb.shape[1], lam)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(xb @ w)))
        g = xb.T @ (sw * (p - y)) + reg * w
        h = (xb * (sw * p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def logit(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x @ w[:-1] + w[-1]


def combine(base: np.ndarray, z: np.ndarray, c: float, how: str) -> np.ndarray:
    p = 1 / (1 + np.exp(-(z - c)))
    return np.maximum(base, p) if how == "max" else 1 - (1 - base) * (1 - p)


def thresholds(b: np.ndarray, oofs: list[np.ndarray], c: float, how: str, y: np.ndarray,
               src: np.ndarray) -> dict[str, float]:  # fmt: skip
    """Per sensitivity, the lowest threshold (0.01 steps, not below today's) whose out-of-fold
    false positives on each training set, every seed, are no more than today's score's."""
    out = {}
    for level, today in SENSITIVITY.items():
        allowed = {k: np.sum(b[(src == k) & (y == 0)] >= today) for k in ("tune", "ext-tune")}
        t = today
        while any(np.sum(combine(b, o, c, how)[(src == k) & (y == 0)] >= t) > allowed[k]
                  for o in oofs for k in allowed):  # fmt: skip
            t = round(t + 0.01, 2)
        out[level] = t
    return out


def at_fpr(neg: np.ndarray, pos: np.ndarray, fpr: float) -> tuple[float, float]:
    ranked = np.sort(neg)[::-1]
    allowed = int(np.floor(fpr * len(ranked)))
    thr = ranked[allowed] if allowed < len(ranked) else -np.inf
    thr = np.nextafter(thr, np.inf)
    return float(thr), float(np.mean(pos >= thr))


def _load(library: bool) -> dict[str, tuple[list[str], list[int], list[str]]]:
    """name -> (texts, labels, groups) of every set used."""
    inj = yaml.safe_load((DATA / "injection.yaml").read_text())
    ext = yaml.safe_load((DATA / "external" / "external.yaml").read_text())["items"]
    sets: dict[str, tuple[list[str], list[int], list[str]]] = {}
    for split in ("tune", "heldout", "fresh-inj"):
        rows = [(t, 1, f) for f, g in inj["attacks"].items() for t in g.get(split, [])]
        rows += [(t, 0, "benign") for t in inj["benign"].get(split, [])]
        sets[split] = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    for split in ("ext-tune", "ext-heldout"):
        items = [x for x in ext if x["split"] == split]
        sets[split] = ([x["text"] for x in items], [int(x["label"] == "attack") for x in items],
                       [x["family"] for x in items])  # fmt: skip
    if library:
        lib: dict[str, Any] = read_exemplars()
        texts = [t for g in lib["attacks"].values() for t in g] + list(lib["benign"])
        labels = [1] * (len(texts) - len(lib["benign"])) + [0] * len(lib["benign"])
        sets["library"] = (texts, labels, ["library"] * len(texts))
    return sets


class Result(NamedTuple):
    """One configuration's cross-validation: recall @1% FPR on tune and ext-tune (out of fold,
    mean of three fold seeds), and the out-of-fold logits of each seed."""

    mean: float
    block: str
    lam: float
    offset: float
    how: str
    recall: tuple[float, float]
    oofs: list[np.ndarray]


def cross_validate(xs: np.ndarray, y: np.ndarray, b: np.ndarray, src: np.ndarray,
                   blocks: dict[str, np.ndarray]) -> list[Result]:  # fmt: skip
    """Every (feature block, L2 weight, offset, combination): 5 folds x 3 seeds."""
    results = []
    for name, cols in blocks.items():
        for lam in (3.0, 10.0, 30.0):
            oofs = []
            for seed in (SEED, SEED + 1, SEED + 2):
                folds = np.random.default_rng(seed).integers(0, 5, len(y))
                oof = np.zeros(len(y))
                for f in range(5):
                    tr = folds != f
                    w = fit(xs[tr][:, cols], y[tr], lam)
                    oof[~tr] = logit(xs[~tr][:, cols], w)
                oofs.append(oof)
            for c in (1.0, 2.0, 3.0):
                for how in ("max", "or"):
                    row = []
                    for oof in oofs:
                        comb = combine(b, oof, c, how)
                        for k in ("tune", "ext-tune"):
                            m = src == k
                            row.append(at_fpr(comb[m & (y == 0)], comb[m & (y == 1)], 0.01)[1])
                    r = np.asarray(row).reshape(3, 2).mean(axis=0)
                    results.append(Result(float(r.mean()), name, lam, c, how,
                                          (float(r[0]), float(r[1])), oofs))  # fmt: skip
    return sorted(results, key=lambda r: -r.mean)


def _ops(b: np.ndarray, r: Result, y: np.ndarray) -> str:
    """Pooled out-of-fold recall / FPR at today's low, medium, high."""
    out = []
    for v in SENSITIVITY.values():
        combs = [combine(b, o, r.offset, r.how) for o in r.oofs]
        rec = np.mean([np.mean(cm[y == 1] >= v) for cm in combs])
        fp = np.mean([np.mean(cm[y == 0] >= v) for cm in combs])
        out.append(f"{rec:.2f}/{fp:.3f}")
    return " ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--library", action="store_true", help="train on the exemplar library too")
    ap.add_argument("--evaluate", action="store_true", help="score the held-out sets once")
    ap.add_argument("--wordllama", action="store_true", help="add wordllama's mean vector")
    ap.add_argument("--combine", choices=("any", "max", "or"), default="any",
                    help="restrict the combination with today's score")  # fmt: skip
    ap.add_argument("--everyday", action="store_true", help="the unit tests' look-alikes")
    args = ap.parse_args()
    if args.wordllama:
        WORDLLAMA.append(load_embedder("wordllama-l2-256"))
    det = InjectionDetector(load_embedder(MODEL), read_exemplars())
    sets = _load(args.library)
    feats = {k: np.vstack([features(det, t) for t in v[0]]) for k, v in sets.items()
             if args.evaluate or k in ("tune", "ext-tune", "library")}  # fmt: skip
    base = {k: np.asarray([det.score(t).score for t in sets[k][0]]) for k in feats}
    labels = {k: np.asarray(sets[k][1]) for k in feats}
    train = [k for k in ("tune", "ext-tune", "library") if k in feats]
    x = np.vstack([feats[k] for k in train])
    y = np.concatenate([labels[k] for k in train])
    src = np.concatenate([[k] * len(labels[k]) for k in train])
    b = np.concatenate([base[k] for k in train])
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs = (x - mu) / sd
    d = x.shape[1] - 256 if args.wordllama else x.shape[1]
    blocks = {"all": np.r_[0 : x.shape[1]], "no-max": np.r_[0 : d - 64, d : x.shape[1]]}
    print(f"training rows {len(y)} ({int(y.sum())} attacks), features {x.shape[1]}")
    for k in ("tune", "ext-tune"):
        _, rec = at_fpr(base[k][labels[k] == 0], base[k][labels[k] == 1], 0.01)
        print(f"  today's score, {k}: recall @1% FPR {rec:.2f}")
    b_ops = [f"{np.mean(b[y == 1] >= v):.2f}/{np.mean(b[y == 0] >= v):.3f}"
             for v in SENSITIVITY.values()]  # fmt: skip
    print(f"  today: low/medium/high recall/FPR (pooled) {' '.join(b_ops)}")
    ranked = [r for r in cross_validate(xs, y, b, src, blocks) if args.combine in ("any", r.how)]
    for r in ranked[:8]:
        print(f"  {r.block:<7}lam {r.lam:>5} {r.how:<3} c {r.offset}: @1% tune "
              f"{r.recall[0]:.2f} ext-tune {r.recall[1]:.2f} (mean {r.mean:.3f}); "
              f"low/medium/high {_ops(b, r, y)}")  # fmt: skip
    best = ranked[0]
    c, how = best.offset, best.how
    chosen = thresholds(b, best.oofs, c, how, y, src)
    cols = blocks[best.block]
    w = fit(xs[:, cols], y, best.lam)
    # The standardisation folded into the weights (the form a shipped file would hold).
    weights = w[:-1] / sd[cols]
    bias = float(w[-1] - np.sum(w[:-1] * mu[cols] / sd[cols]))
    print(f"chosen: {best.block}, lam {best.lam}, {how} with offset {c}, thresholds {chosen}")
    if args.evaluate:
        for k in ("heldout", "fresh-inj", "ext-heldout"):
            evaluate(k, base[k], feats[k][:, cols] @ weights + bias, labels[k],
                     sets[k][2], c, how, chosen)  # fmt: skip
    if args.everyday:
        for k, texts in _everyday().items():
            z = np.vstack([features(det, t) for t in texts])[:, cols] @ weights + bias
            comb = combine(np.asarray([det.score(t).score for t in texts]), z, c, how)
            print(f"  {k}: {int(np.sum(comb >= chosen['medium']))} of {len(texts)} at medium, "
                  f"max {comb.max():.2f}")  # fmt: skip


def _everyday() -> dict[str, list[str]]:
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_injection_context import EVERYDAY as CONTEXT
    from test_injection_everyday import EVERYDAY

    return {"test_injection_everyday": list(EVERYDAY), "test_injection_context": list(CONTEXT)}


def evaluate(name: str, base: np.ndarray, z: np.ndarray, y: np.ndarray, groups: list[str],
             c: float, how: str, chosen: dict[str, float]) -> None:  # fmt: skip
    """Recall at 1% FPR and at each sensitivity, today and with the probe; no text printed."""
    comb = combine(base, z, c, how)
    neg = y == 0
    print(f"\n{name}: {int(y.sum())} attacks, {int(neg.sum())} benign (today / with the probe)")
    t0, _ = at_fpr(base[neg], base[~neg], 0.01)
    t1, _ = at_fpr(comb[neg], comb[~neg], 0.01)
    fams = [*dict.fromkeys(g for g, lab in zip(groups, y, strict=True) if lab), "all"]
    for fam in fams:
        m = ~neg & ((np.asarray(groups) == fam) if fam != "all" else True)
        ops = " ".join(f"{np.mean(base[m] >= SENSITIVITY[k]):.2f}/{np.mean(comb[m] >= t):.2f}"
                       for k, t in chosen.items())  # fmt: skip
        print(f"  {fam:<16}{int(m.sum()):>4} @1% {np.mean(base[m] >= t0):.2f} / "
              f"{np.mean(comb[m] >= t1):.2f}; low/medium/high {ops}")  # fmt: skip
    ops = " ".join(f"{np.mean(base[neg] >= SENSITIVITY[k]):.3f}/{np.mean(comb[neg] >= t):.3f}"
                   for k, t in chosen.items())  # fmt: skip
    print(f"  FPR at low/medium/high {ops}")


if __name__ == "__main__":
    main()
