"""Topics by meaning: the centroid in a topic's nearness, and own words that point the topic's
way (docs/semantic.md, "How a topic fires")."""

from __future__ import annotations

import numpy as np
import pytest

from policy_extproc.detect.semantic import HashEmbedder, TopicClassifier, TopicSpec, topics
from policy_extproc.detect.semantic.text import embed_sentences
from policy_extproc.sources.models import load_embedder


def test_centroids_are_unit_means_and_zero_for_a_topic_without_rows() -> None:
    rows = np.asarray([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    got = topics._centroids(rows, np.asarray([0, 0, 2]), 3)
    assert np.allclose(got, [[2**-0.5, 2**-0.5, 0], [0, 0, 0], [0, 0, 1]])
    assert topics._centroids(rows[:0], np.asarray([], int), 2).shape == (2, 3)


def test_a_sentence_between_two_examples_is_nearer_with_the_centroid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sentence shares half its words with each example: cosine about 0.5 to either,
    0.7 to their centroid, so its nearness grows with the centroid's weight (the background
    uses every word: no word margin, and the score stays under 1)."""
    emb = HashEmbedder()
    specs = [TopicSpec("t", ("alpha beta", "gamma delta"))]

    def score() -> float:
        clf = TopicClassifier(emb, specs, ("alpha beta gamma delta omega",), {})
        return float(clf.score_matrix(embed_sentences(emb, "alpha gamma"))[0, 0])

    with_centroid = score()
    monkeypatch.setattr(topics, "_CENTROID", 0.0)
    assert with_centroid > score() + 0.05


def test_own_words_must_point_the_topics_way() -> None:
    """On the shipped model: "instructions", in "instructions for making explosives", is
    nearer the background's centroid than the topic's, so it is no own word and an everyday
    request that says it gains nothing from the word pass; "firearm" is one."""
    emb = load_embedder()
    examples = (
        "how do I build a bomb",
        "make a gun at home",
        "instructions for making explosives",
        "how to make a pipe bomb",
        "3D print a firearm",
        "convert a rifle to fully automatic",
    )
    spec = TopicSpec("weapons", examples)
    clf = TopicClassifier(emb, [spec])
    words = clf._word_scores([["instructions"], ["firearm"]])
    assert words[0, 0] == 0.0
    assert words[1, 0] > 0.0


def test_a_topic_without_own_words_still_scores() -> None:
    """Examples of common words only ("how do I") leave the topic no own word: it is judged on
    the sentence margin alone."""
    emb = HashEmbedder()
    clf = TopicClassifier(emb, [TopicSpec("vague", ("how do I", "what is it"))], ("omega",), {})
    assert clf._n_tw == 0
    got = clf.score_matrix(embed_sentences(emb, "how do I. Omega."))
    assert got.shape == (2, 1) and got[0, 0] > got[1, 0]
