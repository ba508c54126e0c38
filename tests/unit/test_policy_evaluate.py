"""Evaluation of request-only rules (model_access, content_filter), table-driven from YAML.

Each file of ``tests/data/policy/cases/`` holds policies (inline texts, or files of
``tests/data/policy/``) and requests with the decision expected for them; see ``run_case`` for
the keys an expectation may hold. The inheritance group runs in test_policy_inheritance.py.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.detect.canonical import canonical_text
from policy_extproc.llm.request import dotted, parse_request, rewrite_request
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.policy.decision import Decision, Fired, combine
from policy_extproc.policy.evaluator import check_request, decide
from policy_extproc.policy.explain import explain
from policy_extproc.policy.loader import load_sources
from policy_extproc.sources.catalog import load_catalog
from tests.policy_eval import evaluate

DATA = Path(__file__).resolve().parents[1] / "data" / "policy"
CASES = DATA / "cases"
CHAT = "/v1/chat/completions"


# -- the case runner (also used by test_policy_inheritance) --------------------------------------


def read_group(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CASES / f"{name}.yaml").read_text(encoding="utf-8"))
    return data


@cache
def group_snapshot(name: str) -> Snapshot:
    """The compiled policies of a case group: inline ``policies`` and ``policy_files``."""
    group = read_group(name)
    sources = [(file, text) for file, text in (group.get("policies") or {}).items()]
    for rel in group.get("policy_files", ()):
        sources.append((rel, (DATA / rel).read_text(encoding="utf-8")))
    return Snapshot(load_sources(sources))


def group_cases(*names: str) -> list[Any]:
    """pytest params (group, case) for every request case of the named groups."""
    return [
        pytest.param(name, case, id=f"{name}: {case['name']}")
        for name in names
        for case in read_group(name)["cases"]
    ]


def fired_line(f: Fired) -> str:
    return f"{f.policy}/{f.rule}: {f.action}" + (" (log)" if f.mode == "log" else "")


def run_case(group: str, case: Mapping[str, Any]) -> tuple[Decision, list[str]]:
    """Evaluate one case and check every expectation it names; returns decision and explanation.

    ``expect`` may hold: decision, policy, rule, reason (a substring), fired (``policy/rule:
    action``, `` (log)`` for shadow firings, in order), new_texts (dotted path -> text; ``{}``
    for none), redactions, would_decide, mode, compliance, applied (policy names, least to most
    specific), effective (``policy/rule`` in force, in order), explain (exact lines).
    """
    snapshot = group_snapshot(group)
    body = case.get("body")
    request = None
    if body is not None:
        raw = json.dumps(body).encode()
        request = parse_request(case.get("path", CHAT), raw)
    ctx = build_context(
        {k.lower(): str(v) for k, v in (case.get("headers") or {}).items()},
        request,
        catalog=load_catalog(),
    )
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    decision = decide(es, ctx, check_request(es, ctx))
    lines = explain(es, ctx, decision)
    want = case["expect"]
    got: dict[str, Any] = {
        "decision": decision.action,
        "policy": decision.policy,
        "rule": decision.rule,
        "fired": [fired_line(f) for f in decision.fired],
        "new_texts": {dotted(k): v for k, v in decision.new_texts.items()},
        "redactions": dict(decision.redactions),
        "would_decide": decision.would_decide,
        "mode": decision.mode,
        "compliance": list(decision.compliance),
        "applied": [cp.policy.name for cp in es.policies],
        "effective": [f"{e.policy_name}/{e.rule.id}" for e in es.rules],
        "explain": lines,
    }
    for key, expected in want.items():
        if key == "reason":
            assert expected in decision.reason, (key, decision.reason)
        else:
            assert got[key] == expected, (key, got[key])
    if decision.new_texts and request is not None:
        # The rewrite reaches the body: every new text lands at its path, nothing else changes.
        again = parse_request(case.get("path", CHAT), rewrite_request(request, decision.new_texts))
        assert again.model == request.model
        assert [(p.path, p.text) for p in again.parts] == [
            (p.path, decision.new_texts.get(p.path, p.text)) for p in request.parts
        ]
    return decision, lines


@pytest.mark.parametrize(
    ("group", "case"), group_cases("seed", "model_access", "content", "severity", "shadow")
)
def test_case(group: str, case: Mapping[str, Any]) -> None:
    run_case(group, case)


# -- combine: the severity order, on firings alone --------------------------------------------


def _fired(text: str) -> Fired:
    """``policy/rule: action`` with an optional `` (log)``, as in the fixtures."""
    head, _, action = text.partition(": ")
    mode = "enforce"
    if action.endswith(" (log)"):
        action, mode = action[: -len(" (log)")], "log"
    policy, _, rule = head.partition("/")
    return Fired(policy, rule, "test", action, f"{rule} says {action}", mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", read_group("combine")["combine"], ids=lambda c: str(c["name"]))
def test_combine(case: Mapping[str, Any]) -> None:
    decision = combine([_fired(f) for f in case["fired"]])
    want = case["expect"]
    got = {
        "decision": decision.action,
        "rule": decision.rule,
        "would_decide": decision.would_decide,
        "mode": decision.mode,
        "code": decision.code,
        "http_status": decision.http_status,
    }
    for key, expected in want.items():
        assert got[key] == expected, (key, got[key])


# -- redaction: a property ------------------------------------------------------------------

_LETTERS = "abéABÉ"
_word = st.text(alphabet=_LETTERS, min_size=1, max_size=4)
_separator = st.sampled_from(
    [" ", "  ", "\n", "\u00a0", "-", ".", "«", "»", "_", "1", "x", "日", "\u0301"]
)
_case = st.sampled_from([str.upper, str.lower, str.title, str.swapcase, str])


@st.composite
def _text(draw: st.DrawFn, keywords: list[str]) -> str:
    """Words, separators and keywords in any case, run together."""
    piece = st.one_of(
        _word,
        _separator,
        st.sampled_from(keywords).map(str),
        st.builds(lambda kw, case: case(kw), st.sampled_from(keywords), _case),
    )
    return "".join(draw(st.lists(piece, max_size=20)))


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")


def _whole_word_hits(keyword: str, text: str) -> list[int]:
    """Reference: case-insensitive occurrences not next to a letter, digit, mark or '_', in the
    canonical text (marks stripped, so "A" + U+0301 is the keyword "a")."""
    found = []
    text = canonical_text(text)
    low, kw = text.lower(), canonical_text(keyword).lower()
    start = low.find(kw)
    while start >= 0:
        end = start + len(kw)
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        if not _is_word(before) and not _is_word(after):
            found.append(start)
        start = low.find(kw, start + 1)
    return found


@settings(max_examples=200, deadline=None)
@given(data=st.data(), keywords=st.lists(_word, min_size=1, max_size=3, unique_by=str.lower))
def test_redaction_leaves_no_keyword(data: st.DataObject, keywords: list[str]) -> None:
    """After redaction no keyword of a redact rule is left as a whole word in any prompt part."""
    texts = data.draw(st.lists(_text(keywords), min_size=1, max_size=3))
    system = data.draw(_text(keywords))
    policy = {
        "policy_name": "p",
        "rules": [{"type": "content_filter", "id": "r1", "keywords": keywords, "action": "redact"}],
    }
    snapshot = Snapshot(load_sources([("p.yaml", json.dumps(policy))]))
    body = {
        "model": "claude-3-haiku",
        "system": [{"type": "text", "text": system}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": t}]} for t in texts],
    }
    request = parse_request("/v1/messages", json.dumps(body).encode())
    decision = evaluate(snapshot, build_context({}, request, catalog=load_catalog()))
    for part in request.parts:
        after = decision.new_texts.get(part.path, part.text)
        for kw in keywords:
            assert not _whole_word_hits(kw, after), (kw, part.text, after)
        if part.path not in decision.new_texts:
            assert not any(_whole_word_hits(kw, part.text) for kw in keywords)
    expected = sum(
        1 for part in request.parts if any(_whole_word_hits(kw, part.text) for kw in keywords)
    )
    assert (decision.action == "modify") == (expected > 0)
