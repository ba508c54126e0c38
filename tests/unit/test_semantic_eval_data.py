"""The shape of the labelled topic data (tests/data/semantic/): the promises benchmarks/semantic.py
and docs/semantic.md make about its splits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from policy_extproc.detect.semantic import topics

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "semantic"
SPLITS = ("tune", "heldout", "fresh", "fresh2")
_WORD = re.compile(r"\w+")


def _load(name: str) -> Any:
    return yaml.safe_load((DATA / name).read_text(encoding="utf-8"))


def _content(text: str) -> set[str]:
    return {
        w for w in map(str.lower, _WORD.findall(text)) if w not in topics._COMMON and len(w) > 2
    }


def test_every_topic_has_every_split() -> None:
    data = _load("topics.yaml")
    for name, topic in data["topics"].items():
        assert len(topic["examples"]) >= 6, name
        for group in ("positive", "near_miss"):
            assert set(topic[group]) == set(SPLITS), (name, group)
            assert all(topic[group][s] for s in SPLITS), (name, group)
        assert len(topic["positive"]["fresh2"]) >= 10 and len(topic["near_miss"]["fresh2"]) >= 10
        assert len(topic["positive"]["tune"]) >= 20, name  # choices rest on 93 positives
    assert set(data["unrelated"]) == set(SPLITS)
    assert set(data["traffic"]) == {"tune", "fresh2"}


def test_fresh2_positives_share_no_content_word_with_the_examples() -> None:
    for name, topic in _load("topics.yaml")["topics"].items():
        words = set().union(*map(_content, topic["examples"]))
        shared = {x: _content(x) & words for x in topic["positive"]["fresh2"]}
        assert not any(shared.values()), (name, {x: w for x, w in shared.items() if w})


def test_no_text_is_in_two_places() -> None:
    """A text in two splits (or two topics) would be tuned on and reported at once."""
    data = _load("topics.yaml")
    texts = [x for t in data["topics"].values() for g in ("positive", "near_miss")
             for xs in t[g].values() for x in xs]  # fmt: skip
    texts += [x for group in ("unrelated", "traffic") for xs in data[group].values() for x in xs]
    lang = _load("topics_languages.yaml")
    texts += (
        [x for xs in lang["positive"].values() for x in xs] + lang["near_miss"] + lang["benign"]
    )
    keys = [" ".join(_WORD.findall(x.lower())) for x in texts]
    assert len(keys) == len(set(keys)), sorted({k for k in keys if keys.count(k) > 1})


def test_the_languages_file_names_the_topics_of_topics_yaml() -> None:
    lang = _load("topics_languages.yaml")
    assert set(lang["positive"]) == set(_load("topics.yaml")["topics"])
    assert all(len(xs) >= 5 for xs in lang["positive"].values())
    assert len(lang["near_miss"]) >= 8 and len(lang["benign"]) >= 16
