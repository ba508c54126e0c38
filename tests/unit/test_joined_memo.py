"""detect/joined.py remembers the parts' canonical forms for one check only (``Remembering``,
opened by policy/evaluator.py): the rules of one request share them, computed once, and once
the request is checked nothing of its text is kept (it used to stay until the next request)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from policy_extproc.detect import joined
from policy_extproc.detect.canonical import Canonical
from policy_extproc.detect.joined import JoinedParts, Remembering
from policy_extproc.llm.request import JsonPath, parse_request
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.policy.evaluator import check_request, check_response, decide
from policy_extproc.policy.loader import load_sources
from policy_extproc.sources.catalog import load_catalog

POLICY = """policy_name: p
org: acme
rules:
  - {type: content_filter, id: words, keywords: [project zebra], action: redact, direction: both}
  - {type: pii, id: mail, entities: [EMAIL], action: mask, direction: both}
"""
# Not ASCII, so each part is canonicalised (the ASCII case is one check, nothing to count).
TEXTS = ("Tell Jörg about pr\u043eject zebra", "and write to jörg@example.org")


@dataclass(frozen=True)
class Part:
    path: JsonPath
    text: str


@pytest.fixture
def canonicalised(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts detect/joined canonicalises, in order."""
    seen: list[str] = []
    real: Callable[[str], Canonical] = joined.canonicalize

    def counting(text: str) -> Canonical:
        seen.append(text)
        return real(text)

    monkeypatch.setattr(joined, "canonicalize", counting)
    return seen


def snapshot() -> Snapshot:
    return Snapshot(load_sources([("p.yaml", POLICY)]))


def test_a_request_is_canonicalised_once_for_all_its_rules_then_forgotten(
    canonicalised: list[str],
) -> None:
    messages = [{"role": "user", "content": t} for t in TEXTS]
    body = {"model": "gpt-4o-mini", "messages": messages}
    request = parse_request("/v1/chat/completions", json.dumps(body).encode())
    ctx = build_context({"x-org-id": "acme", "x-user-id": "u"}, request, catalog=load_catalog())
    es = snapshot().resolve(ctx.org, ctx.team, ctx.environment)

    decision = decide(es, ctx, check_request(es, ctx))

    assert {f.rule for f in decision.fired} == {"words", "mail"}  # both rules read the parts
    assert canonicalised == list(TEXTS)  # once each, for the filter and the PII rule alike
    assert joined._last_forms.get() is None  # nothing of the request is kept


def test_a_response_is_canonicalised_once_then_forgotten(canonicalised: list[str]) -> None:
    es = snapshot().resolve("acme", None, None)
    parts = [Part(("choices", i, "message", "content"), t) for i, t in enumerate(TEXTS)]

    found = check_response(es, parts)

    assert {f.rule for f in found.fired} == {"words", "mail"}
    assert canonicalised == list(TEXTS)
    assert joined._last_forms.get() is None


def test_the_next_request_computes_its_own_forms(canonicalised: list[str]) -> None:
    es = snapshot().resolve("acme", None, None)
    for _ in range(2):
        check_response(es, [Part(("text",), TEXTS[0])])
    assert canonicalised == [TEXTS[0], TEXTS[0]]  # not remembered across checks


def test_outside_a_scope_nothing_is_remembered(canonicalised: list[str]) -> None:
    texts = list(TEXTS)
    JoinedParts(texts, (), "\n")
    JoinedParts(texts, (), "\n")
    assert canonicalised == texts * 2
    assert joined._last_forms.get() is None


def test_inside_a_scope_the_same_parts_are_computed_once(canonicalised: list[str]) -> None:
    texts = list(TEXTS)
    with Remembering():
        a = JoinedParts(texts, (), "\n")
        b = JoinedParts(texts, [-1, -1], "\0")
        assert joined._last_forms.get() is not None
    assert canonicalised == texts
    assert a.forms == b.forms == ["Tell Jorg about project zebra", "and write to jorg@example.org"]
    assert joined._last_forms.get() is None


def test_a_scope_ended_by_an_error_forgets_too() -> None:
    with pytest.raises(RuntimeError), Remembering():
        JoinedParts(list(TEXTS), (), "\n")
        raise RuntimeError("a check failed")
    assert joined._last_forms.get() is None


def test_threads_do_not_share_or_clear_each_others_forms(canonicalised: list[str]) -> None:
    # One thread's scope ending while another's is open leaves the other's forms alone.
    inside, done = threading.Event(), threading.Event()
    other: list[object] = []

    def second() -> None:
        with Remembering():
            JoinedParts([TEXTS[1]], (), "\n")
            inside.set()
            done.wait(timeout=30)
            other.append(joined._last_forms.get())

    t = threading.Thread(target=second)
    t.start()
    assert inside.wait(timeout=30)
    with Remembering():
        JoinedParts([TEXTS[0]], (), "\n")
        assert joined._last_forms.get() is not None
    assert joined._last_forms.get() is None
    done.set()
    t.join(timeout=30)
    (entry,) = other
    assert entry is not None and entry[0] == (TEXTS[1],)  # type: ignore[index]
