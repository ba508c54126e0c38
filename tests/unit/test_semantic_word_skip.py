"""The topic pass reads a sentence's words only when the sentence could reach the lowest
threshold with them (``topics._WORD_BOUND``): the hits are those of the full pass, bit for bit,
and sentences are skipped for real."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from policy_extproc.detect.semantic import TopicClassifier, TopicSpec, topics
from policy_extproc.detect.semantic.text import Sentences, sentence_spans
from policy_extproc.sources.models import load_embedder

DATA = Path(__file__).resolve().parents[1] / "data" / "semantic"


def _data() -> tuple[list[TopicSpec], list[str]]:
    data = yaml.safe_load((DATA / "topics.yaml").read_text(encoding="utf-8"))
    specs = [TopicSpec(n, tuple(t["examples"])) for n, t in data["topics"].items()]
    texts = [x for t in data["topics"].values() for g in ("positive", "near_miss")
             for xs in t[g].values() for x in xs]  # fmt: skip
    texts += [x for xs in data["unrelated"].values() for x in xs]
    texts += [x for xs in data["traffic"].values() for x in xs]
    return specs, texts


def test_the_bound_is_the_largest_word_margin() -> None:
    assert topics._WORD_BOUND >= topics._WORD_WEIGHT * (1.0 - topics._WORD_FLOOR)


@pytest.mark.parametrize("threshold", [None, 0.6, 0.9])
@pytest.mark.parametrize("plain", [False, True])  # the pieces kept in the spans, or the text
def test_hits_equal_the_full_pass_and_sentences_are_skipped(
    threshold: float | None, plain: bool, monkeypatch: Any
) -> None:
    emb = load_embedder()
    specs, texts = _data()
    specs = [TopicSpec(s.name, s.examples, threshold if k % 2 else None)
             for k, s in enumerate(specs)]  # fmt: skip
    rng = random.Random(5)
    parts = texts + [" ".join(rng.sample(texts, 20)) for _ in range(20)]
    parts += ["", "İstanbul: should I buy ETH now? Dump my ETH or hold!", "x" * 60 + " eth."]
    clf = TopicClassifier(emb, specs)
    thr = np.asarray(clf.thresholds, np.float32)
    skipped = []
    real = TopicClassifier._sentence_words

    def spy(self: TopicClassifier, s: Sentences, low: str, need: Any = None) -> Any:
        if need is not None:
            skipped.append(int((~need).sum()))
        return real(self, s, low, need)

    monkeypatch.setattr(TopicClassifier, "_sentence_words", spy)
    for text in parts:
        spans = sentence_spans(text)
        cut = list(spans) if plain else spans
        vecs = emb.embed_spans(text, spans)
        full = clf.score_matrix(Sentences(text, cut, vecs))  # floor 0: every word read
        want = [(int(k), round(float(full[i, k]), 3), cut[i])
                for i, k in zip(*np.nonzero(full >= thr), strict=True)]  # fmt: skip
        assert clf.hits(Sentences(text, cut, vecs)) == want, text
    assert sum(skipped) > 0  # the skip happened
