"""Quality and cost of the semantic guards (prompt injection, topics by meaning).

Run by hand: ``.venv/bin/python benchmarks/semantic.py [--split heldout|tune|fresh-inj|all]
[--model static|multilingual|wordllama-l2-128|-64|tokenlearn-10k-64] [--injection-model ...]
[--iterations N] [--canonical]``
(``--split ext-tune|ext-heldout [--misses N]``: prompt injection on the external data,
benchmarks/semantic_external.py; ``--misses``: print the worst N, on ext-tune only)
(``--model``: the topics' model; ``--injection-model``: prompt injection's; the defaults are
the shipped ones; ``static`` and ``multilingual`` are the names a topic rule's ``model`` takes;
``--tree=PATH``: import the package from another checkout, to compare with a base;
``--topics-only``: the topic tables and the topic pass's cost; ``--canonical``: score the
reading form of each text (detect/reading), as the sidecar does, instead of the text as
written, for topics and prompt injection alike). Prints
tables; never asserts.

Data: ``tests/data/semantic/`` (written for this project). ``heldout`` (the default) is the part
never used to choose thresholds, signals or exemplars; ``tune`` is the part that was.

- injection: per family, recall at the thresholds that give 1% and 3% false positives on the
  hard negatives of the split (the benign texts), then recall and false-positive rate at each
  shipped sensitivity (low, medium, high);
- topics: per topic, recall of the paraphrases and the share of near misses and unrelated texts
  that fire, at the default threshold and at thresholds giving 1% / 3% near-miss firing; and
  how many of injection.yaml's benign texts (of the same split) fire any topic;
- cost: what both classifiers add to ``check_request`` on 4 KB chat requests, in-process, in
  interleaved rounds (wall and CPU time of this thread, p50 / p99): one new message of known
  words, one of new words, and a chat's 8th turn (7 earlier messages resent); compile of 100
  semantic topics; the topic pass alone (``TopicClassifier.hits`` on the embedded sentences of
  a 4 KB text, words seen before and every word new).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import sys
import time
from pathlib import Path

# As the sidecar's command does before numpy loads (policy_extproc/cli): one BLAS thread, unless
# set otherwise (OPENBLAS_NUM_THREADS=2 measures OpenBLAS's own threads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _tree(argv: list[str]) -> str:
    """``--tree PATH`` or ``--tree=PATH``: import the package from another checkout (a base to
    compare with, in interleaved runs), with this checkout's data and benchmark; read before
    the package is imported, so before argparse."""
    for i, a in enumerate(argv):
        if a.startswith("--tree="):
            return a.split("=", 1)[1]
        if a == "--tree" and i + 1 < len(argv):
            return argv[i + 1]
    return str(ROOT)


_TREE = _tree(sys.argv)
sys.path.insert(0, _TREE)

from semantic_external import external  # noqa: E402

from policy_extproc.detect.semantic.embedder import DEFAULT_MODEL  # noqa: E402
from policy_extproc.detect.semantic.injection import MODEL as INJECTION_MODEL  # noqa: E402
from policy_extproc.detect.semantic.injection import SENSITIVITY, InjectionDetector  # noqa: E402
from policy_extproc.detect.semantic.text import embed_sentences  # noqa: E402
from policy_extproc.detect.semantic.topics import (  # noqa: E402
    DEFAULT_THRESHOLD,
    TopicClassifier,
    TopicSpec,
)
from policy_extproc.llm.request import parse_request  # noqa: E402
from policy_extproc.policy.compiler import Snapshot  # noqa: E402
from policy_extproc.policy.context import build_context  # noqa: E402
from policy_extproc.policy.decision import RequestContext  # noqa: E402
from policy_extproc.policy.evaluator import check_request  # noqa: E402
from policy_extproc.policy.loader import load_sources  # noqa: E402
from policy_extproc.sources.catalog import load_catalog  # noqa: E402
from policy_extproc.sources.models import load_embedder, read_exemplars  # noqa: E402
from policy_extproc.sources.secrets import read_secrets  # noqa: E402

try:  # a --tree from before topic rules had a ``model``
    from policy_extproc.detect.semantic.topics import MODELS
except ImportError:
    MODELS = {"static": DEFAULT_MODEL}

DATA = ROOT / "tests" / "data" / "semantic"
# --canonical: what the classifiers are given (the sidecar gives them the reading form).
FORM = [lambda text: text]
try:  # the lexical model of prompt injection (--no-lexicon: without it; a --tree before it)
    from policy_extproc.sources.models import read_lexicon

    LEXICON: list[object] = [read_lexicon()]
except ImportError:
    LEXICON = [None]
CHAT = "/v1/chat/completions"


def _detector(model: str) -> InjectionDetector:
    extra = () if LEXICON[0] is None else (LEXICON[0],)
    return InjectionDetector(load_embedder(model), read_exemplars(), *extra)


def _splits(group: dict[str, list[str]], split: str) -> list[str]:
    return [t for name, texts in group.items() if split in ("all", name) for t in texts]


def _at_fpr(neg: list[float], pos: list[float], fpr: float) -> tuple[float, float]:
    """(threshold, recall) at the lowest threshold whose false-positive rate is <= fpr."""
    ranked = sorted(neg, reverse=True)
    allowed = int(np.floor(fpr * len(ranked)))
    thr = ranked[allowed] if allowed < len(ranked) else 0.0
    thr = np.nextafter(thr, 2.0)  # strictly above the negative left out
    return float(thr), float(np.mean([p >= thr for p in pos])) if pos else 0.0


def injection(model: str, split: str) -> None:
    data = yaml.safe_load((DATA / "injection.yaml").read_text())
    det = _detector(model)
    form = FORM[0]
    neg = [det.score(form(t)).score for t in _splits(data["benign"], split)]
    fams = {f: [det.score(form(t)).score for t in _splits(g, split)]
            for f, g in data["attacks"].items()}  # fmt: skip
    every = [s for v in fams.values() for s in v]
    print(f"\nprompt injection, {split} split, model {model}: {len(every)} attacks, "
          f"{len(neg)} hard negatives")  # fmt: skip
    t1, _ = _at_fpr(neg, every, 0.01)
    t3, _ = _at_fpr(neg, every, 0.03)
    print(f"  {'family':<14}{'n':>4}{'@1%FPR':>9}{'@3%FPR':>9}" +
          "".join(f"{s:>9}" for s in SENSITIVITY))  # fmt: skip
    for fam, scores in [*fams.items(), ("all", every)]:
        r1 = np.mean([s >= t1 for s in scores])
        r3 = np.mean([s >= t3 for s in scores])
        ops = "".join(f"{np.mean([s >= v for s in scores]):>9.2f}" for v in SENSITIVITY.values())
        print(f"  {fam:<14}{len(scores):>4}{r1:>9.2f}{r3:>9.2f}{ops}")
    fp = "".join(f"{np.mean([s >= v for s in neg]):>9.2f}" for v in SENSITIVITY.values())
    print(f"  {'FPR (benign)':<14}{len(neg):>4}{0.01:>9.2f}{0.03:>9.2f}{fp}")
    print(
        f"  thresholds giving 1% / 3% FPR: {t1:.3f} / {t3:.3f}; shipped: "
        + ", ".join(f"{k} {v}" for k, v in SENSITIVITY.items())
    )


def topics(model: str, split: str) -> None:
    data = yaml.safe_load((DATA / "topics.yaml").read_text())
    emb = load_embedder(model)
    specs = [TopicSpec(name, tuple(t["examples"])) for name, t in data["topics"].items()]
    clf = _classifier(emb, specs)
    unrelated = _splits(data["unrelated"], split)
    print(f"\ntopics, {split} split, model {model}: one rule with {len(specs)} topics, "
          f"default threshold {DEFAULT_THRESHOLD}")  # fmt: skip
    print(f"  {'topic':<19}{'pos':>4}{'recall':>8}{'near':>6}{'fired':>7}{'unrel':>7}"
          f"{'rec@1%':>8}{'rec@3%':>8}")  # fmt: skip
    tot_pos, tot_near = [], []
    for name, t in data["topics"].items():

        def score(text: str, topic: str = name) -> float:
            return clf.scores(FORM[0](text)).get(topic, 0.0)

        pos = [score(x) for x in _splits(t["positive"], split)]
        near = [score(x) for x in _splits(t["near_miss"], split)]
        unrel = [score(x) for x in unrelated]
        tot_pos += pos
        tot_near += near + unrel
        neg = near + unrel
        _, r1 = _at_fpr(neg, pos, 0.01)
        _, r3 = _at_fpr(neg, pos, 0.03)
        rec = np.mean([p >= DEFAULT_THRESHOLD for p in pos])
        fired = np.mean([n >= DEFAULT_THRESHOLD for n in near])
        fu = np.mean([n >= DEFAULT_THRESHOLD for n in unrel])
        print(f"  {name:<19}{len(pos):>4}{rec:>8.2f}{len(near):>6}{fired:>7.2f}{fu:>7.2f}"
              f"{r1:>8.2f}{r3:>8.2f}")  # fmt: skip
    rec = np.mean([p >= DEFAULT_THRESHOLD for p in tot_pos])
    fired = np.mean([n >= DEFAULT_THRESHOLD for n in tot_near])
    n_fired = sum(n >= DEFAULT_THRESHOLD for n in tot_near)
    print(
        f"  {'all':<19}{len(tot_pos):>4}{rec:>8.2f}{len(tot_near):>6}{fired:>7.2f}"
        f"  ({sum(p >= DEFAULT_THRESHOLD for p in tot_pos)} found, {n_fired} negatives fired)"
    )
    # Benign traffic not written for topics: the hard negatives of the injection data (work
    # requests, code, tool results, 13 languages), the same split (``fresh``: none there); and
    # the everyday traffic of topics.yaml (tune and fresh2).
    inj = yaml.safe_load((DATA / "injection.yaml").read_text())
    for label, texts in (
        ("benign texts of injection.yaml", _splits(inj["benign"], split)),
        ("everyday traffic of topics.yaml", _splits(data["traffic"], split)),
    ):
        if texts:
            hit = sum(bool(clf.matches(FORM[0](t))) for t in texts)
            print(f"  {label} firing any topic: {hit} of {len(texts)} ({hit / len(texts):.2f})")


def languages(model: str) -> None:
    """``topics_languages.yaml`` (evaluation only): paraphrases of the topics in other
    languages, near misses and everyday requests in the same languages (must fire nothing)."""
    data = yaml.safe_load((DATA / "topics.yaml").read_text())
    lang = yaml.safe_load((DATA / "topics_languages.yaml").read_text())
    specs = [TopicSpec(name, tuple(t["examples"])) for name, t in data["topics"].items()]
    clf = _classifier(load_embedder(model), specs)
    form = FORM[0]
    found = [
        name in dict(clf.matches(form(t)))
        for name, texts in lang["positive"].items()
        for t in texts
    ]
    near = sum(bool(clf.matches(form(t))) for t in lang["near_miss"])
    benign = sum(bool(clf.matches(form(t))) for t in lang["benign"])
    print(f"\nother languages (topics_languages.yaml), model {model}: recall "
          f"{np.mean(found):.2f} ({sum(found)} of {len(found)}); near misses firing {near} of "
          f"{len(lang['near_miss'])}; everyday requests firing {benign} of "
          f"{len(lang['benign'])}")  # fmt: skip


def _pcts(samples: list[float]) -> str:
    s = sorted(samples)
    return f"p50 {s[len(s) // 2] * 1e3:.3f}, p99 {s[int(len(s) * 0.99)] * 1e3:.3f} ms"


def _policies(semantic: bool, examples: dict[str, list[str]], model: str = DEFAULT_MODEL) -> str:
    rules = ["  - {type: content_filter, id: words, keywords: [project aurora]}"]
    if semantic:
        rules.append("  - {type: prompt_injection, id: injection, direction: request}")
        named = {v: k for k, v in MODELS.items()}.get(model, "static")
        line = "" if named == "static" else f"\n    model: {named}"
        rules.append(f"  - type: content_filter\n    id: topics{line}\n    topics:")
        for name, ex in examples.items():
            rules.append(f"      {name}: {{match: semantic, examples: {json.dumps(ex)}}}")
    return "policy_name: p\norg: acme\nrules:\n" + "\n".join(rules) + "\n"


def _context(messages: list[dict[str, str]]) -> RequestContext:
    body = {"model": "gpt-4o-mini", "messages": messages}
    return build_context({"x-org-id": "acme"}, parse_request(CHAT, json.dumps(body).encode()),
                         catalog=load_catalog())  # fmt: skip


def cost(iterations: int, model: str = DEFAULT_MODEL) -> None:
    """What the two classifiers add to ``check_request`` on 4 KB chat requests (the real
    in-process path), in interleaved rounds: each request is judged with and without the
    semantic rules back to back, and the difference of the two is the sample."""
    inj = yaml.safe_load((DATA / "injection.yaml").read_text())
    benign = [t for v in inj["benign"].values() for t in v]
    data = yaml.safe_load((DATA / "topics.yaml").read_text())
    examples = {n: t["examples"] for n, t in data["topics"].items()}
    snaps = {
        flag: Snapshot(
            load_sources([("p.yaml", _policies(flag, examples, model))]), secrets=read_secrets()
        ).resolve("acme", "", "")
        for flag in (False, True)
    }
    rng = random.Random(7)

    def prose(size: int, fresh: bool) -> str:
        """Sentences of known words in a new order (no part seen before), or of new words."""
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < size:
            sentence = rng.choice(benign).split()
            rng.shuffle(sentence)
            if fresh:  # words never seen: each request pays the tokenizer and the topic cache
                sentence = [w + str(rng.randrange(10**6)) for w in sentence]
            words += sentence
        return " ".join(words)[:size]

    def one(label: str, requests: list[list[RequestContext]]) -> None:
        """Each item: the requests of one conversation; the last one is timed."""
        wall: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        added_wall, added_cpu = [], []
        for n, convo in enumerate(requests):
            for ctx in convo[:-1]:
                for es in snaps.values():
                    check_request(es, ctx)
            ctx = convo[-1]
            got = {}
            for flag in (False, True) if n % 2 else (True, False):
                w0, c0 = time.perf_counter(), time.thread_time()
                check_request(snaps[flag], ctx)
                got[flag] = (time.perf_counter() - w0, time.thread_time() - c0)
                wall[flag].append(got[flag][0])
                cpu[flag].append(got[flag][1])
            added_wall.append(got[True][0] - got[False][0])
            added_cpu.append(got[True][1] - got[False][1])
        print(f"  {label}:\n    without: wall {_pcts(wall[False])}; with: wall {_pcts(wall[True])}"
              f"\n    added: wall {_pcts(added_wall)}; cpu {_pcts(added_cpu)}")  # fmt: skip

    print(f"\ncost, in-process check_request, {iterations} chat requests of 4 KB each, interleaved "
          "with/without the semantic rules (a prompt_injection rule, a rule of 4 semantic "
          "topics); prompt of shuffled hard-negative sentences (many heuristic cues):")  # fmt: skip
    warm = [[_context([{"role": "user", "content": prose(4096, False)}])] for _ in range(50)]
    one("warm-up (not a result)", warm)
    one("one new 4 KB message, known words",
        [[_context([{"role": "user", "content": prose(4096, False)}])]
         for _ in range(iterations)])  # fmt: skip
    one("one new 4 KB message, every word new",
        [[_context([{"role": "user", "content": prose(4096, True)}])]
         for _ in range(iterations)])  # fmt: skip
    chats = []
    for _ in range(iterations):
        turns = [{"role": ("user", "assistant")[k % 2], "content": prose(512, False)}
                 for k in range(8)]  # fmt: skip
        chats.append([_context(turns[: k + 1]) for k in range(8)])
    one("a chat's 8th turn: 7 earlier messages resent + a new one, 4 KB in all", chats)
    emb = load_embedder(model)
    specs = [TopicSpec(n, tuple(ex)) for n, ex in examples.items()]
    many = [TopicSpec(f"topic{i}", tuple(f"{e} variant {i}" for e in specs[i % 4].examples))
            for i in range(100)]  # fmt: skip
    t0 = time.perf_counter()
    TopicClassifier(emb, many)
    print(f"  compile of 100 semantic topics (6 examples each): {time.perf_counter() - t0:.2f} s")


def _classifier(emb: object, specs: list[TopicSpec]) -> TopicClassifier:
    """A classifier as a compile builds it: told whether BLAS runs on one thread, where the
    checkout's classifier takes it (``--tree`` may be a checkout from before)."""
    if "one_blas_thread" in inspect.signature(TopicClassifier).parameters:
        one = os.environ.get("OPENBLAS_NUM_THREADS", "").strip() == "1"
        return TopicClassifier(emb, specs, one_blas_thread=one)  # type: ignore[arg-type]
    return TopicClassifier(emb, specs)  # type: ignore[arg-type]


def topic_pass(iterations: int, model: str = DEFAULT_MODEL) -> None:
    """The topic pass alone: ``hits`` on the sentences (already embedded) of 4 KB texts; and
    the embedding of those sentences, per sentence (each text new: no row remembered)."""
    inj = yaml.safe_load((DATA / "injection.yaml").read_text())
    benign = [t for v in inj["benign"].values() for t in v]
    data = yaml.safe_load((DATA / "topics.yaml").read_text())
    emb = load_embedder(model)
    specs = [TopicSpec(n, tuple(t["examples"])) for n, t in data["topics"].items()]
    rng = random.Random(11)

    def text(fresh: bool) -> str:
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < 4096:
            sentence = rng.choice(benign).split()
            rng.shuffle(sentence)
            words += [w + str(rng.randrange(10**6)) for w in sentence] if fresh else sentence
        return " ".join(words)[:4096]

    for fresh in (False, True):
        clf = _classifier(emb, specs)
        texts, embed_cpu, n_sentences = [], 0.0, 0
        for _ in range(iterations + 20):
            c0 = time.thread_time()
            texts.append(embed_sentences(emb, text(fresh)))
            embed_cpu += time.thread_time() - c0
            n_sentences += len(texts[-1].spans)
        for sentences in texts[:20]:  # warm-up (and, for known words, the word memory)
            clf.hits(sentences)
        wall, cpu = [], []
        for sentences in texts[20:]:
            w0, c0 = time.perf_counter(), time.thread_time()
            clf.hits(sentences)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.thread_time() - c0)
        label = "every word new" if fresh else "words seen before"
        print(f"  topic pass alone, 4 KB ({len(texts[-1].spans)} sentences), {label}: "
              f"wall {_pcts(wall)}; cpu {_pcts(cpu)}")  # fmt: skip
        print(f"  embedding those texts ({emb.name}), {label}: cpu "
              f"{embed_cpu / n_sentences * 1e3:.3f} ms per sentence, "
              f"{embed_cpu / len(texts) * 1e3:.1f} ms per 4 KB text")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--split",
        default="heldout",
        choices=(
            "heldout",
            "fresh",
            "fresh2",
            "fresh-inj",
            "fresh3",
            "tune",
            "all",
            "ext-tune",
            "ext-heldout",
            "ext2",
        ),
    )
    ap.add_argument("--misses", type=int, default=0, help="external: print the N worst")
    ap.add_argument("--model", default="static",
                    help="the topics' model: static, multilingual, or a model's name")  # fmt: skip
    ap.add_argument("--canonical", action="store_true",
                    help="score the texts' reading forms (what the sidecar scores)")  # fmt: skip
    ap.add_argument("--injection-model", default=INJECTION_MODEL)
    ap.add_argument("--no-lexicon", action="store_true",
                    help="prompt injection without its lexical model (as before it)")  # fmt: skip
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument("--topics-only", action="store_true")
    ap.add_argument("--languages", action="store_true", help="also topics_languages.yaml")
    ap.add_argument("--tree", default=str(ROOT), help="import the package from this checkout")
    args = ap.parse_args()
    args.model = MODELS.get(args.model, args.model)
    if args.canonical:
        from policy_extproc.detect.reading import reading_text  # a tree that has it

        FORM[0] = reading_text
    print(f"package from {_TREE}")
    if args.no_lexicon:
        LEXICON[0] = None
    if args.split.startswith("ext"):  # the external data (prompt injection only)
        det = _detector(args.injection_model)
        external(det, args.split, SENSITIVITY, _at_fpr, args.misses, FORM[0])
        return
    if args.topics_only:
        topics(args.model, args.split)
        if args.languages:
            languages(args.model)
        if not args.no_cost:
            topic_pass(args.iterations, args.model)
        return
    for name in dict.fromkeys((args.injection_model, args.model)):
        t0 = time.perf_counter()
        load_embedder(name)
        print(f"model {name} loaded in {time.perf_counter() - t0:.2f} s")
    injection(args.injection_model, args.split)
    topics(args.model, args.split)
    if not args.no_cost:
        cost(args.iterations, args.model)
        topic_pass(args.iterations, args.model)


if __name__ == "__main__":
    main()
