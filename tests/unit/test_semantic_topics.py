"""Topics by meaning: the vectorised classifier against a plain reference of its formula, and
the generated background module against its YAML source."""

from __future__ import annotations

import gc
import importlib.util
import random
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from policy_extproc.detect.semantic import (
    HashEmbedder,
    TopicClassifier,
    TopicSpec,
    prior,
    topic_data,
    topics,
)
from policy_extproc.detect.semantic.embedder import Embedder, embed_texts
from policy_extproc.detect.semantic.rowcache import RowCache
from policy_extproc.detect.semantic.text import embed_sentences, sentence_spans
from policy_extproc.sources.models import load_embedder

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "semantic"


def _generator() -> Any:
    path = ROOT / "tools" / "topic_data.py"
    spec = importlib.util.spec_from_file_location("topic_data_gen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_background_module_matches_its_yaml() -> None:
    gen = _generator()
    fresh = gen.render(gen.SOURCE.read_text("utf-8"), gen.LIBRARY.read_text("utf-8"))
    committed = (ROOT / "policy_extproc/detect/semantic/topic_data.py").read_text("utf-8")
    assert fresh == committed, "run `make topic-data`: topic_data.py differs from its YAML"
    data = yaml.safe_load(gen.SOURCE.read_text(encoding="utf-8"))
    assert tuple(data["background"]) == topic_data.BACKGROUND
    assert data["version"] == topic_data.VERSION
    lib = yaml.safe_load(gen.LIBRARY.read_text(encoding="utf-8"))
    assert {k: tuple(v) for k, v in lib["domains"].items()} == topic_data.LIBRARY


@pytest.mark.parametrize(
    ("text", "message", "library"),
    [("version: 1\nbackground: [a]\n", "not a version", ""),
     ("version: 5\nbackground: a\n", "list of strings", ""),
     ("version: 5\nbackground: [a, a]\n", "appears twice", ""),
     ("version: 5\nbackground: [a]\n", "not a version 1 topic library", "version: 9"),
     ("version: 5\nbackground: [a]\n", "'domains' must be", "version: 1\ndomains: []"),
     ("version: 5\nbackground: [a]\n", "domain 'x' must be", "version: 1\ndomains: {x: []}")],
)  # fmt: skip
def test_the_generator_refuses_a_bad_source(text: str, message: str, library: str) -> None:
    gen = _generator()
    text = text.replace("version: 5", f"version: {gen.VERSION}")
    library = library or "version: 1\ndomains: {x: [b]}"
    with pytest.raises(ValueError, match=message):
        gen.render(text, library)


# -- a plain reference of the formula (one sentence, one topic at a time) ---------------------

_WORD = re.compile(r"\w+")


def reference_scores(emb: Embedder, specs: Sequence[TopicSpec], background: Sequence[str],
                     library: dict[str, Sequence[str]], text: str) -> np.ndarray:  # fmt: skip
    """The score of each sentence of ``text`` for each topic, as the module docstring and
    docs/semantic.md describe it, with loops."""
    words_of = lambda ts: sorted({w.lower() for t in ts for w in _WORD.findall(t)})  # noqa: E731
    bg_words = words_of(background)
    own = [[w for w in words_of(s.examples) if w not in set(bg_words)
            and w not in topics._COMMON and len(w) > 2] for s in specs]  # fmt: skip
    ex = [embed_texts(emb, s.examples) for s in specs]
    # A library domain joins the topic nearest to its requests on average, from _ADOPT on.
    extra: list[list[np.ndarray]] = [[] for _ in specs]
    for requests in library.values():
        vecs = embed_texts(emb, list(requests))
        affinity = [np.mean([max(float(v @ e) for e in ex[k]) for v in vecs])
                    for k in range(len(specs))]  # fmt: skip
        best = int(np.argmax(affinity))
        if affinity[best] >= topics._ADOPT:
            extra[best] += list(vecs)
    bg = embed_texts(emb, background)

    def unit_mean(rows: Sequence[np.ndarray]) -> np.ndarray:
        total = np.sum(rows, axis=0)
        norm = float(np.linalg.norm(total))
        return total / norm if norm > 0 else total

    # A topic's centroid: the unit mean of its examples and adopted requests; its own words
    # are only those nearer its centroid than the background's centroid.
    centroid = [unit_mean([*ex[k], *extra[k]]) for k in range(len(specs))]
    bg_centroid = unit_mean(list(bg))

    def topical(w: str, k: int) -> bool:
        v = embed_texts(emb, [w])[0]
        return float(v @ centroid[k]) > float(v @ bg_centroid)

    own = [[w for w in ws if topical(w, k)] for k, ws in enumerate(own)]
    own_v = [embed_texts(emb, ws) for ws in own]
    bgw_v = embed_texts(emb, bg_words)

    def nearest(v: np.ndarray, m: np.ndarray) -> float:
        return float((m @ v).max()) if len(m) else -1.0

    def word_margin(w: str, k: int) -> float:
        v = embed_texts(emb, [w])[0]
        mine = nearest(v, own_v[k])
        others = max([nearest(v, own_v[j]) for j in range(len(specs)) if j != k], default=-1.0)
        neighbour = max(others, nearest(v, bgw_v), topics._WORD_FLOOR)
        return max(mine - neighbour, 0.0) * topics._WORD_WEIGHT

    spans = sentence_spans(text)
    vecs = embed_sentences(emb, text).vectors
    low = text.lower()
    out = np.zeros((len(spans), len(specs)))

    def nearest_proto(v: np.ndarray, k: int) -> float:
        lib = max([float(v @ x) - topics._LIBRARY_DISCOUNT for x in extra[k]], default=-1.0)
        nearest_one = max(nearest(v, ex[k]), lib)
        return (1 - topics._CENTROID) * nearest_one + topics._CENTROID * float(v @ centroid[k])

    for i, (s, e) in enumerate(spans):
        sentence = low[s:e]
        words = _WORD.findall(low, s, e)
        generic = prior.EDUCATIONAL.search(sentence) and not prior.PERSONAL.search(sentence)
        for k in range(len(specs)):
            mine = nearest_proto(vecs[i], k)
            others = max([nearest_proto(vecs[i], j) for j in range(len(specs)) if j != k],
                         default=-1.0)  # fmt: skip
            neighbour = max(others, nearest(vecs[i], bg))
            best_word = max([word_margin(w, k) for w in words], default=0.0)
            raw = topics._OFFSET + mine - neighbour + best_word
            raw -= prior.PENALTY if generic else 0.0
            out[i, k] = min(max(raw, 0.0), 1.0)
    return out


def _specs() -> list[TopicSpec]:
    data = yaml.safe_load((DATA / "topics.yaml").read_text(encoding="utf-8"))
    return [TopicSpec(n, tuple(t["examples"])) for n, t in data["topics"].items()]


def _tune_texts() -> list[str]:
    data = yaml.safe_load((DATA / "topics.yaml").read_text(encoding="utf-8"))
    texts = [x for t in data["topics"].values() for g in ("positive", "near_miss")
             for x in t[g]["tune"]]  # fmt: skip
    return texts + data["unrelated"]["tune"]


def test_vectorised_scores_equal_the_reference_on_the_hash_embedder() -> None:
    emb = HashEmbedder()
    specs = [TopicSpec("a", ("alpha beta gamma", "delta epsilon")),
             TopicSpec("b", ("alpha zeta eta",)),
             TopicSpec("c", ("theta iota kappa",))]  # fmt: skip
    background = ("alpha omega", "how does beta work", "zeta lambda mu")
    # "far" is near no topic: never adopted; "near" is adopted by topic "c".
    library = {"far": ("omicron pi rho",), "near": ("theta iota sigma", "theta kappa tau")}
    clf = TopicClassifier(emb, specs, background, library)
    text = ("Alpha beta gamma now. How does theta work in general? Zeta eta kappa; mu nu. "
            "I want delta epsilon! Lambda. Sigma tau theta? Omicron pi rho.")  # fmt: skip
    got = clf.score_matrix(embed_sentences(emb, text))
    assert np.allclose(got, reference_scores(emb, specs, background, library, text), atol=1e-5)
    assert got.max() > 0.5  # the case tests a firing sentence too
    without = TopicClassifier(emb, specs, background, {})
    assert not np.allclose(got, without.score_matrix(embed_sentences(emb, text)))


def test_vectorised_scores_equal_the_reference_on_the_model() -> None:
    emb, specs = load_embedder(), _specs()
    clf = TopicClassifier(emb, specs)
    text = "\n".join(_tune_texts())
    got = clf.score_matrix(embed_sentences(emb, text))
    want = reference_scores(emb, specs, topic_data.BACKGROUND, topic_data.LIBRARY, text)
    assert got.shape == want.shape == (len(sentence_spans(text)), len(specs))
    assert np.allclose(got, want, atol=1e-4)
    # hits: every sentence and topic at or over its threshold, and only those.
    hits = {(k, span) for k, _, span in clf.hits(embed_sentences(emb, text))}
    spans = sentence_spans(text)
    assert hits == {(k, spans[i]) for i, k in zip(*np.nonzero(want >= 0.47), strict=True)}
    assert hits  # the tune positives fire


def test_generic_prior_in_two_parts_equals_the_one_search() -> None:
    """``_generic`` (opening matched, phrases searched only when present) against the one
    search of ``_EDUCATIONAL``, on the labelled texts, their words shuffled, and near cases."""
    data = yaml.safe_load((DATA / "topics.yaml").read_text(encoding="utf-8"))
    texts = [x for t in data["topics"].values() for g in ("positive", "near_miss")
             for xs in t[g].values() for x in xs]  # fmt: skip
    texts += [x for g in ("unrelated", "traffic") for xs in data[g].values() for x in xs]
    rng = random.Random(5)
    near = ["how do i", "how does it work in general?", "in generality", "the history of x",
            "a difference betweens", "  what is my score", "-- explain it", "xin general",
            "why is the sky blue", "who invented it, me?", "define", "", "history ofs"]  # fmt: skip
    cases = [*near, *texts]
    for t in texts:
        words = t.split()
        rng.shuffle(words)
        cases.append(" ".join(words))
    for low in (c.lower() for c in cases):
        want = bool(prior.EDUCATIONAL.search(low)) and not prior.PERSONAL.search(low)
        assert prior.generic(low, 0, len(low)) == want, low
        assert prior.generic("x. " + low, 3, 3 + len(low)) == want, low  # a span, not a text
    assert sum(prior.generic(c.lower(), 0, len(c)) for c in near) >= 4  # both ways seen


def test_product_in_blocks_equals_one_product() -> None:
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((300, 64)).astype(np.float32)
    cols = rng.standard_normal((64, 5000)).astype(np.float32)
    assert np.allclose(topics._product(rows, cols), rows @ cols, atol=1e-4)
    assert topics._product(rows[:0], cols).shape == (0, 5000)


def test_word_memory_is_bounded_and_shared_by_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads share a classifier's word memory, full and started again many times, and get a
    thread alone's scores: up to float32 rounding, not bit for bit. A word's margins are those
    of the batch it was first computed in, and BLAS rounds a row's last bit by the batch's
    shape (numpy hands a one-row product to gemv, more rows to gemm; on the real model with
    one BLAS thread gemm's bits depend on the rows too), which the threads' interleaving
    changes. Another word's row or a torn one would be off by a margin; that the memory keeps
    rows exactly under threads is the next test's."""
    monkeypatch.setattr(topics, "_WORD_CACHE_LIMIT", 50)
    emb = HashEmbedder()
    clf = TopicClassifier(emb, [TopicSpec("a", ("alpha beta gamma",))], ("omega",))
    rng = random.Random(5)
    texts = [" ".join(f"w{rng.randrange(400)}" for _ in range(30)) + " alpha." for _ in range(40)]
    want = [clf.score_matrix(embed_sentences(emb, t)) for t in texts]
    got: list[list[np.ndarray]] = [[] for _ in range(4)]

    def run(k: int) -> None:
        got[k] = [clf.score_matrix(embed_sentences(emb, t)) for t in texts]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.allclose(g, w, rtol=0, atol=1e-6)
               for rows in got for g, w in zip(rows, want, strict=True))  # fmt: skip
    assert 0 < len(clf._word_rows) <= 50  # bounded: full, it started again


def test_remembered_rows_are_exact_when_threads_share_them() -> None:
    """``RowCache`` reads without a lock: threads gathering overlapping keys, the table filled and
    started again many times, each get exactly the rows computed for their keys (a row that
    depends on its key only: no batch to round it otherwise)."""
    rows = RowCache(50, 3)

    def compute(keys: list[str]) -> np.ndarray:
        return np.asarray([[len(k), int(k[1:]), hash(k) % 1009] for k in keys], np.float32)

    rng = random.Random(5)
    batches = [[f"w{rng.randrange(400)}" for _ in range(30)] for _ in range(300)]
    wrong: list[list[str]] = []

    def run() -> None:
        for keys in batches:
            if not np.array_equal(rows.gather(keys, compute), compute(keys)):
                wrong.append(keys)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter will
    try:
        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
    assert 0 < len(rows) <= 50


def test_library_domains_join_the_nearest_topic_only() -> None:
    """On the real model: each domain goes to one topic at most, the topic it is nearest to;
    a topic far from every domain (a codename) adopts none and scores as without a library."""
    emb = load_embedder()
    specs = [*_specs(), TopicSpec("codename", ("project aurora launch plan", "aurora roadmap"))]
    adopted = topics._adopt(emb, specs, topic_data.LIBRARY)
    by_name = {s.name: set(a) for s, a in zip(specs, adopted, strict=True)}
    lib = topic_data.LIBRARY
    assert set(lib["explosives"]) | set(lib["firearms"]) <= by_name["weapons"]
    assert set(lib["suicide"]) <= by_name["self_harm"]
    assert set(lib["medical_diagnosis"]) <= by_name["medical_diagnosis"]
    assert set(lib["investment_advice"]) <= by_name["investment_advice"]
    assert by_name["codename"] == set()
    assert set(lib["hacking"]).isdisjoint(set().union(*by_name.values()))
    every = [r for a in adopted for r in a]
    assert len(every) == len(set(every))  # no request joins two topics
    alone = TopicClassifier(emb, [specs[-1]])
    bare = TopicClassifier(emb, [specs[-1]], library={})
    text = "Share the aurora roadmap with the launch team. How do I bake bread?"
    assert np.array_equal(alone.score_matrix(embed_sentences(emb, text)),
                          bare.score_matrix(embed_sentences(emb, text)))  # fmt: skip


def test_no_labelled_sentence_is_shipped() -> None:
    """The evaluation data is not in the background nor in the library (docs/semantic.md)."""

    def key(text: str) -> str:
        return " ".join(_WORD.findall(text.lower()))

    data = yaml.safe_load((DATA / "topics.yaml").read_text(encoding="utf-8"))
    labelled = {key(x) for t in data["topics"].values() for g in ("positive", "near_miss")
                for xs in t[g].values() for x in xs}  # fmt: skip
    labelled |= {key(x) for xs in data["unrelated"].values() for x in xs}
    labelled |= {key(x) for xs in data["traffic"].values() for x in xs}
    injection = yaml.safe_load((DATA / "injection.yaml").read_text(encoding="utf-8"))
    labelled |= {key(x) for xs in injection["benign"].values() for x in xs}
    shipped = {key(x) for x in topic_data.BACKGROUND}
    shipped |= {key(x) for xs in topic_data.LIBRARY.values() for x in xs}
    assert len(labelled) > 350 and len(shipped) > 300
    assert sorted(labelled & shipped) == []


def test_word_pass_from_the_pieces_equals_the_word_pass_over_the_text() -> None:
    """The shipped model keeps the white-space pieces it cut in the spans, and the word pass
    reads them (remembered per piece); plain spans (nothing kept) take the words of the text:
    the same scores, bit for bit, cold and warm, and the text is read where the pieces would
    not say its words (lower case changes the length, a run over 48 characters was cut)."""
    from policy_extproc.detect.semantic.embedder import words_pieces
    from policy_extproc.detect.semantic.text import Sentences

    emb, specs = load_embedder(), _specs()
    rng = random.Random(9)
    tune = _tune_texts()
    texts = ["\n".join(rng.sample(tune, 12)).upper() for _ in range(4)]
    texts += [" ".join(rng.sample(tune, 6)) + " x" * 3 for _ in range(4)]
    texts += ["İstanbul: should I buy ETH now? Dump my ETH or hold!",
              "buy bitcoin " + "ETH" * 30 + " now, dump my ETH.", "", "  .  ;; \u3000 !",
              "snake_case words, tabs\tand\u00a0nbsp: hold_my_eth or sell?"]  # fmt: skip
    fast, plain = TopicClassifier(emb, specs), TopicClassifier(emb, specs)
    read_pieces = 0
    for _ in range(2):  # new pieces, then remembered ones
        for text in texts:
            spans = sentence_spans(text)
            vecs = emb.embed_spans(text, spans)
            read_pieces += words_pieces(text, spans) is not None
            got = fast.score_matrix(Sentences(text, spans, vecs))
            want = plain.score_matrix(Sentences(text, list(spans), vecs))
            assert np.array_equal(got, want), text
    assert read_pieces == 2 * (len(texts) - 2)  # all but the two texts read again
    assert fast._piece_rows and not plain._piece_rows
    assert words_pieces("İ x", sentence_spans("İ x")) is None  # nothing kept: never embedded


def test_no_white_space_is_a_word_character() -> None:
    """Why a span's words are its pieces' words: ``str.split`` never cuts inside a word."""
    word = re.compile(r"\w")
    assert [c for c in range(0x110000) if chr(c).split() == [] and word.match(chr(c))] == []


def test_remembered_rows_are_the_computed_ones_within_and_past_the_bound() -> None:
    rows = RowCache(3, 2)
    asked: list[list[str]] = []

    def compute(keys: list[str]) -> np.ndarray:
        asked.append(keys)
        return np.asarray([[len(k), ord(k[0])] for k in keys], np.float32)

    keys = ["bb", "a", "bb", "ccc", "dddd", "a", "ee"]
    want = compute(keys)
    asked.clear()
    assert np.array_equal(rows.gather(keys, compute), want)
    assert asked == [["bb", "a", "ccc", "dddd", "ee"]]  # distinct, in order, once
    # Full at "dddd": the table started again, with the keys of now.
    assert len(rows) == 2
    assert np.array_equal(rows.gather(["dddd", "ee"], compute), want[[4, 6]]) and len(asked) == 1
    assert np.array_equal(rows.gather(keys, compute), want)
    assert asked[1:] == [["bb", "a", "ccc"]]
    assert np.array_equal(rows.gather(keys, compute), want)  # whatever is kept, rows are right


def test_remembered_rows_hold_no_text() -> None:
    rows = RowCache(8, 1)
    secret = "123-45-6789"
    rows.gather([secret], lambda keys: np.ones((len(keys), 1), np.float32))
    entries, table, _ = rows._state  # numbers only: hashes and slots, and the rows
    assert entries.dtype == np.int64 and table.dtype == np.float32 and len(rows) == 1
    assert not any(isinstance(x, str) for x in gc.get_referents(rows, rows._state))


def test_one_product_when_blas_runs_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Told that BLAS runs on one thread, the classifier multiplies in one call, not in blocks:
    the same scores up to the products' rounding, the same hits; the edge says so from
    OPENBLAS_NUM_THREADS, and a compile hands it in."""
    from policy_extproc.policy.compiler import Snapshot
    from policy_extproc.policy.loader import load_sources
    from policy_extproc.sources.models import SHIPPED
    from policy_extproc.sources.secrets import read_secrets

    emb, specs = load_embedder(), _specs()
    blocked, one = TopicClassifier(emb, specs), TopicClassifier(emb, specs, one_blas_thread=True)
    calls: list[int] = []
    real = np.matmul
    monkeypatch.setattr(
        topics.np, "matmul", lambda a, b, **kw: calls.append(len(a)) or real(a, b, **kw)
    )
    text = "\n".join(_tune_texts())
    sentences = embed_sentences(emb, text)
    assert len(sentences.spans) > 8
    want = blocked.score_matrix(sentences)
    assert calls and max(calls) < len(sentences.spans)  # blocks
    calls.clear()
    got = one.score_matrix(sentences)
    assert not calls  # one product: ``rows @ cols``
    assert np.allclose(got, want, atol=1e-5)
    assert blocked.hits(sentences) == one.hits(sentences)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert SHIPPED.one_blas_thread()
    policy = (
        "policy_name: p\norg: acme\nrules:\n  - type: content_filter\n    id: t\n"
        "    topics:\n      money: {match: semantic, examples: [should I buy this stock]}\n"
    )
    snap = Snapshot(load_sources([("p.yaml", policy)]), secrets=read_secrets())
    built = [e.built for es in [snap.resolve("acme", "", "")] for e in es.semantic["request"]]
    assert [b._one_thread for b in built] == [True]
    for value in ("4", ""):
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", value)
        assert not SHIPPED.one_blas_thread()


def test_keys_whose_positions_collide_each_keep_their_own_row() -> None:
    rows = RowCache(4, 1)  # a table of 8 positions
    keys: list[str] = []
    n = 0
    while len(keys) < 4:  # four keys probing from the same position
        n += 1
        if hash(f"k{n}") & 7 == 0:
            keys.append(f"k{n}")
    asked: list[list[str]] = []

    def compute(ks: list[str]) -> np.ndarray:
        asked.append(ks)
        return np.asarray([[float(k[1:])] for k in ks], np.float32)

    want = compute(keys)
    asked.clear()
    assert np.array_equal(rows.gather(keys, compute), want)
    assert np.array_equal(rows.gather(keys[::-1], compute), want[::-1])
    assert asked == [keys] and len(rows) == 4  # the second gather found every one


def test_a_row_cache_refuses_a_capacity_its_entries_cannot_hold() -> None:
    with pytest.raises(ValueError, match="RowCache"):
        RowCache(1 << 20, 1)
