"""``pii`` with ``style: hash``: a keyed pseudonym, the key read by the edge when a set compiles
and handed in (``sources.secrets``): the core reads no environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy_extproc.errors import PolicyError
from policy_extproc.llm.request import parse_request
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.policy.decision import Decision
from policy_extproc.policy.evaluator import check_request, decide
from policy_extproc.policy.loader import load_sources
from policy_extproc.policy.privacy import KEY_ENV, KEY_FILE_ENV
from policy_extproc.sources.catalog import load_catalog
from policy_extproc.sources.files import compile_paths
from policy_extproc.sources.secrets import read_secrets

POLICY = """policy_name: p
org: acme
rules:
  - {type: pii, id: mail, entities: [EMAIL], style: hash}
"""


def _decide(snapshot: Snapshot, text: str) -> Decision:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    request = parse_request("/v1/chat/completions", json.dumps(body).encode())
    ctx = build_context({"x-org-id": "acme", "x-user-id": "u"}, request, catalog=load_catalog())
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    return decide(es, ctx, check_request(es, ctx))


def _masked(snapshot: Snapshot, text: str) -> str:
    (new,) = _decide(snapshot, text).new_texts.values()
    return new


def test_the_pseudonym_is_stable_and_keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(KEY_ENV, "k1")
    first = Snapshot(load_sources([("p.yaml", POLICY)]), secrets=read_secrets())
    a = _masked(first, "write to jane@example.org")
    assert "jane@example.org" not in a and a == _masked(first, "write to jane@example.org")
    # Read when the set compiled: a changed environment changes nothing until the next one.
    monkeypatch.setenv(KEY_ENV, "k2")
    assert _masked(first, "write to jane@example.org") == a
    second = Snapshot(load_sources([("p.yaml", POLICY)]), secrets=read_secrets())
    assert _masked(second, "write to jane@example.org") != a
    assert first.secrets.pii_hash_key == b"k1" and "k1" not in repr(first.secrets)


def test_the_key_file_wins_and_the_policy_files_edge_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"from-the-secret-volume\n")
    (tmp_path / "p.yaml").write_text(POLICY)
    monkeypatch.setenv(KEY_ENV, "from-the-environment")
    monkeypatch.setenv(KEY_FILE_ENV, str(key))
    assert read_secrets().pii_hash_key == b"from-the-secret-volume"
    snapshot = compile_paths([str(tmp_path / "p.yaml")])
    assert snapshot.secrets.pii_hash_key == b"from-the-secret-volume"
    assert "jane@example.org" not in _masked(snapshot, "write to jane@example.org")


def test_without_a_key_the_set_does_not_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    with pytest.raises(PolicyError, match="style 'hash' needs a key"):
        Snapshot(load_sources([("p.yaml", POLICY)]), secrets=read_secrets())
    # The core reads nothing itself: without keys handed in, there is none.
    monkeypatch.setenv(KEY_ENV, "set, but not handed in")
    with pytest.raises(PolicyError, match="style 'hash' needs a key"):
        Snapshot(load_sources([("p.yaml", POLICY)]))
