"""Train the prompt_injection rule's lexical model (``detect/semantic/lexical.py``) and write
the shipped lexicon, ``policy_extproc/detect/semantic/data/injection_lexicon_v1.json``.

Run by hand (the training texts are not in the repository; the sources are public, at the
commits named in docs/semantic.md):

    .venv/bin/python tools/train_injection_lexicon.py collect OUT_DIR GARAK_GIT SELF_INSTRUCT_GIT \\
        TENSOR_TRUST_GIT AWESOME_PROMPTS_GIT DEEPSET_TRAIN_JSON DEEPSET_TEST_JSON
    .venv/bin/python tools/train_injection_lexicon.py folds OUT_DIR/train.jsonl
    .venv/bin/python tools/train_injection_lexicon.py train OUT_DIR/train.jsonl

``collect`` writes ``train.jsonl`` (texts, labels, sources) and ``ext2.jsonl`` (a share of each
new source kept out of training), and the redistributable part of ext2 to
``tests/data/semantic/external/external2.yaml`` (``benchmarks/semantic.py --split ext2``); the
texts of our held-out splits (``injection.yaml`` heldout and fresh-inj, ``external.yaml``
ext-heldout) and of ``ext2`` are never trained on, nor is any text sharing half its word
3-grams with one of them.
``folds`` prints, out of fold (5 folds, seed 13), recall and false-positive rates of the
detector with the lexicon for a grid of (offset, scale): how OFFSET and SCALE below were
chosen. ``train`` fits on all of ``train.jsonl`` and writes the lexicon. Deterministic.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policy_extproc.detect.reading import reading_text  # noqa: E402
from policy_extproc.detect.semantic.lexical import LEXICON, features  # noqa: E402

DATA = ROOT / "tests" / "data" / "semantic"
OUT = ROOT / "policy_extproc" / "detect" / "semantic" / "data" / LEXICON
EXT2 = DATA / "external" / "external2.yaml"
SEED = 13
# The logit -> score map (lexical.Lexicon.score), chosen with ``folds``: the largest recall
# gain at `medium` for at most a point more false positives on the hard negatives.
OFFSET, SCALE = 1.0, 2.5
L2, EPOCHS, STEP = 1e-4, 300, 0.005
PRUNE = 0.03  # smaller weights are left out of the file: half the features, scores move little
# Extra weight of the benign texts that look most like attacks: role prompts, system prompts
# that defend against injection, our hard negatives, the external tune split's benign texts.
BENIGN_WEIGHT = {"acp": 3.0, "tt-defense": 3.0, "own-tune": 3.0, "ext-tune": 2.0}
# Left out of training: Tensor Trust's attacks are a game's (access codes, "access granted"),
# and with them the model flagged ordinary system prompts that say what to answer.
LEFT_OUT = {"tt-hijack", "tt-extract"}
# Share of each new source kept out of training, as the ext2 split.
EXT2_SHARE = {"acp": 0.5, "tt-hijack": 0.2, "tt-extract": 0.2, "tt-defense": 0.2, "wild": 0.2,
              "t0": 0.1, "self-instruct": 0.2, "seed-tasks": 0.2}  # fmt: skip


def _show(git: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", git, "show", f"HEAD:{path}"], check=True,
                          capture_output=True).stdout.decode("utf-8", "replace")  # fmt: skip


def _ls(git: str, path: str) -> list[str]:
    return subprocess.run(["git", "--git-dir", git, "ls-tree", "-r", "--name-only", "HEAD", path],
                          check=True, capture_output=True, text=True).stdout.split()  # fmt: skip


def _grams(text: str) -> set[tuple[str, ...]]:
    w = re.findall(r"\w+", text.lower())
    return {tuple(w[i : i + 3]) for i in range(max(len(w) - 2, 1))}


def collect(out_dir: str, garak: str, self_instruct: str, tensor_trust: str, prompts: str,
            deepset_train: str, deepset_test: str) -> None:  # fmt: skip
    rng = random.Random(SEED)
    items: list[dict[str, object]] = []

    def add(text: object, label: int, source: str) -> None:
        text = str(text).strip()
        if 8 <= len(text) <= 20000:
            items.append({"text": text, "label": label, "source": source})

    held: list[str] = []
    inj = yaml.safe_load((DATA / "injection.yaml").read_text())
    for fam, group in inj["attacks"].items():
        for split, texts in group.items():
            for t in texts:
                held.append(t) if split != "tune" else add(t, 1, f"own-tune:{fam}")
    for split, texts in inj["benign"].items():
        for t in texts:
            held.append(t) if split != "tune" else add(t, 0, "own-tune")
    for it in yaml.safe_load((DATA / "external" / "external.yaml").read_text())["items"]:
        if it["split"] == "ext-heldout":
            held.append(it["text"])
        else:
            add(it["text"], int(it["label"] == "attack"), f"ext-tune:{it['family']}")
    for path in (deepset_train, deepset_test):
        for row in json.loads(Path(path).read_text()):
            add(row["text"], int(row["label"]), "deepset")
    for t in json.loads(_show(garak, "garak/data/inthewild_jailbreak_llms.json")):
        add(t, 1, "wild")
    for path, source in (("hijacking-robustness", "tt-hijack"),
                         ("extraction-robustness", "tt-extract")):  # fmt: skip
        name = path.replace("-", "_")
        for line in _show(tensor_trust, f"benchmarks/{path}/v1/{name}_dataset.jsonl").splitlines():
            row = json.loads(line)
            add(row["attack"], 1, source)
            if rng.random() < 0.3:
                add(row["pre_prompt"], 0, "tt-defense")  # a system prompt that defends
    for path in _ls(garak, "garak/data/donotanswer/"):
        for line in _show(garak, path).splitlines():
            add(json.loads(line)["prompt"], 0, "donotanswer")  # harmful questions: not injections
    for line in _show(garak, "garak/data/harmbench/harmbench_prompts.txt").splitlines():
        add(line, 0, "harmbench")
    for path, source in (("human_eval/user_oriented_instructions.jsonl", "self-instruct"),
                         ("data/seed_tasks.jsonl", "seed-tasks")):  # fmt: skip
        for line in _show(self_instruct, path).splitlines():
            row = json.loads(line)
            add(f"{row['instruction']}\n{row['instances'][0].get('input', '')}", 0, source)
    for path in _ls(self_instruct, "data/finetuning/t0_train_50k/data_per_template/"):
        lines = _show(self_instruct, path).splitlines()
        for line in rng.sample(lines, min(8, len(lines))):
            row = json.loads(line)
            add(row.get("prompt") or row.get("input") or "", 0, "t0")
    for row in list(csv.reader(io.StringIO(_show(prompts, "prompts.csv"))))[1:]:
        add(row[1], 0, "acp")  # "I want you to act as ..." role prompts (CC0)
    ext2: list[dict[str, object]] = []
    rest: list[dict[str, object]] = []
    for it in items:
        (ext2 if rng.random() < EXT2_SHARE.get(str(it["source"]), 0.0) else rest).append(it)
    held += [str(it["text"]) for it in ext2]
    train = _dedup(rest, held)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("ext2.jsonl", ext2)):
        with (out / name).open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(name, len(rows), dict(Counter((str(r["source"]).split(":")[0], r["label"])
                                            for r in rows)))  # fmt: skip
    # The committed copy of ext2 leaves Tensor Trust's texts out: no licence is stated for them.
    shared = [{"text": r["text"], "label": "attack" if r["label"] else "benign",
               "family": r["source"], "split": "ext2"}
              for r in ext2 if not str(r["source"]).startswith("tt-")]  # fmt: skip
    EXT2.write_text("# Built by tools/train_injection_lexicon.py collect (docs/semantic.md): "
                    "public sources, fixed seed. Do not edit.\n"
                    + yaml.safe_dump({"items": shared}, allow_unicode=True, sort_keys=False,
                                     width=100))  # fmt: skip


def _dedup(items: list[dict[str, object]], held: list[str]) -> list[dict[str, object]]:
    """Items not held out, not repeated, sharing under half their word 3-grams with any
    held-out text (measured on the smaller of the two)."""
    held_grams = [_grams(t) for t in held]
    index: dict[tuple[str, ...], list[int]] = {}
    for i, g in enumerate(held_grams):
        for x in g:
            index.setdefault(x, []).append(i)
    seen = {" ".join(t.lower().split()) for t in held}
    kept = []
    for it in items:
        key = " ".join(str(it["text"]).lower().split())
        if key in seen:
            continue
        seen.add(key)
        g = _grams(str(it["text"]))
        shared: Counter[int] = Counter(i for x in g for i in index.get(x, ()))
        if any(c >= 0.5 * min(len(g), len(held_grams[i])) for i, c in shared.items()):
            continue
        kept.append(it)
    return kept


def _rows(texts: list[str], vocab: dict[object, int], grow: bool) -> list[tuple[np.ndarray, float]]:
    out = []
    for text in texts:
        words, pairs = features(reading_text(text))
        keys: list[object] = [*words, *pairs]
        if grow:
            for k in keys:
                vocab.setdefault(k, len(vocab))
        ids = np.fromiter((vocab[k] for k in keys if k in vocab), np.int64)
        out.append((ids, 1.0 / np.sqrt(max(len(keys), 1))))
    return out


def _fit(rows: list[tuple[np.ndarray, float]], y: np.ndarray, weight: np.ndarray,
         size: int) -> tuple[np.ndarray, float]:  # fmt: skip
    """Class-balanced, L2 logistic regression by full-batch Adam."""
    n = len(rows)
    ind = np.concatenate([ids for ids, _ in rows])
    val = np.concatenate([np.full(len(ids), v) for ids, v in rows])
    rid = np.repeat(np.arange(n), [len(ids) for ids, _ in rows])
    sw = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean())) * weight
    w, b = np.zeros(size), 0.0
    m, v, mb, vb = np.zeros(size), np.zeros(size), 0.0, 0.0
    for t in range(1, EPOCHS + 1):
        p = 1 / (1 + np.exp(-(np.bincount(rid, weights=val * w[ind], minlength=n) + b)))
        r = sw * (p - y) / n
        g = np.bincount(ind, weights=val * r[rid], minlength=size) + L2 * w
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w -= STEP * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        gb = float(r.sum())
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb * gb
        b -= STEP * (mb / (1 - 0.9**t)) / (np.sqrt(vb / (1 - 0.999**t)) + 1e-8)
    return w, b


def _load(path: str) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    rows = [r for r in rows if r["source"].split(":")[0] not in LEFT_OUT]
    sources = [r["source"].split(":")[0] for r in rows]
    weight = np.array([BENIGN_WEIGHT.get(s, 1.0) if r["label"] == 0 else 1.0
                       for s, r in zip(sources, rows, strict=True)])  # fmt: skip
    return [r["text"] for r in rows], np.array([r["label"] for r in rows], float), weight, sources


def _logits(rows: list[tuple[np.ndarray, float]], w: np.ndarray, b: float) -> np.ndarray:
    return np.array([b + v * w[ids].sum() for ids, v in rows])


def folds(path: str) -> None:
    from policy_extproc.detect.semantic.injection import MODEL, InjectionDetector
    from policy_extproc.sources.models import load_embedder, read_exemplars

    texts, y, weight, sources = _load(path)
    det = InjectionDetector(load_embedder(MODEL), read_exemplars())
    today = np.array([det.score(reading_text(t)).score for t in texts])
    fold = np.random.default_rng(SEED).integers(0, 5, len(texts))
    oof = np.zeros(len(texts))
    for k in range(5):
        vocab: dict[object, int] = {}
        train = _rows([t for t, f in zip(texts, fold, strict=True) if f != k], vocab, True)
        w, b = _fit(train, y[fold != k], weight[fold != k], len(vocab))
        test = _rows([t for t, f in zip(texts, fold, strict=True) if f == k], vocab, False)
        oof[fold == k] = _logits(test, w, b)
    src = np.array(sources)
    hard = (y == 0) & np.isin(src, [*BENIGN_WEIGHT, "deepset"])
    easy = (y == 0) & ~hard
    print("recall / FPR hard negatives / FPR other benign, at low, medium, high")

    def line(label: str, s: np.ndarray) -> None:
        cells = (f"{np.mean(s[y == 1] >= t):.2f}/{np.mean(s[hard] >= t):.3f}/"
                 f"{np.mean(s[easy] >= t):.3f}" for t in (0.85, 0.7, 0.55))  # fmt: skip
        print(f"  {label:<22}" + "  ".join(cells))

    line("without the lexicon", today)
    for offset in (1.0, 1.5, 2.0, 2.5):
        for scale in (1.5, 2.5, 4.0):
            lex = 1 / (1 + np.exp(-(oof - offset) * scale))
            line(f"offset {offset} scale {scale}", 1 - (1 - today) * (1 - lex))


def train(path: str) -> None:
    texts, y, weight, _ = _load(path)
    vocab: dict[object, int] = {}
    rows = _rows(texts, vocab, True)
    w, b = _fit(rows, y, weight, len(vocab))
    keys = [k if isinstance(k, str) else " ".join(k) for k in vocab]  # type: ignore[arg-type]
    kept = {k: round(float(x), 4) for k, x in zip(keys, w, strict=True) if abs(x) >= PRUNE}
    data = {"version": 1, "bias": round(b, 6), "offset": OFFSET, "scale": SCALE,
            "trained_on": dict(Counter(f"{int(lab)}" for lab in y)), "weights": kept}  # fmt: skip
    OUT.write_text(json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
    print(f"{OUT.name}: {len(kept)} of {len(vocab)} features, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"collect": collect, "folds": folds, "train": train}[command](*args)
