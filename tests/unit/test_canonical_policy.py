"""Policies hold against Unicode tricks and split text: keyword, pattern, topic and PII rules
match the canonical text, block or redact exactly the original span, and leave the rest alone."""

# ruff: noqa: RUF001 (look-alike characters are what these tests are about)

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.detect.canonical import is_default_ignorable
from policy_extproc.detect.characters import TO_ASCII as _TO_ASCII
from policy_extproc.enforce.guard import StreamGuard
from policy_extproc.llm.request import LlmRequest, PromptPart
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.context import build_context
from policy_extproc.policy.decision import Decision
from policy_extproc.policy.loader import load_sources
from policy_extproc.sources.catalog import load_catalog
from tests.policy_eval import evaluate

POLICIES = [
    {
        "policy_name": "blocks",
        "org": "blocks",
        "rules": [
            {"type": "content_filter", "id": "kw", "keywords": ["confidential"], "action": "block"},
            {
                "type": "content_filter",
                "id": "rx",
                "patterns": [r"secret\s+plan\s+\d+"],
                "action": "block",
            },
            {
                "type": "content_filter",
                "id": "topic",
                "topics": {"weapons": ["build a bomb"]},
                "action": "block",
            },
            {"type": "pii", "id": "pii", "entities": ["EMAIL"], "action": "block"},
        ],
    },
    {
        "policy_name": "redacts",
        "org": "redacts",
        "rules": [
            {
                "type": "content_filter",
                "id": "kw",
                "keywords": ["project-aurora"],
                "action": "redact",
            },
            {
                "type": "content_filter",
                "id": "rx",
                "patterns": [r"acct-\d{4}"],
                "action": "redact",
            },
            {
                "type": "content_filter",
                "id": "topic",
                "topics": {"weapons": ["build a bomb"]},
                "action": "redact",
            },
            {"type": "pii", "id": "pii", "entities": ["EMAIL"]},
        ],
    },
    {
        "policy_name": "scripts",
        "org": "scripts",
        "rules": [
            # Policy literals outside ASCII are canonicalised too.
            {"type": "content_filter", "id": "ru", "keywords": ["секрет"], "action": "block"},
            {"type": "content_filter", "id": "bomb", "keywords": ["бомба"], "action": "block"},
            {
                "type": "content_filter",
                "id": "de",
                "keywords": ["Überweisung"],
                "action": "block",
            },
            {
                "type": "content_filter",
                "id": "rx",
                "patterns": ["geheimnis\\s+für"],
                "action": "block",
            },
        ],
    },
]
SNAPSHOT = Snapshot(load_sources([("p.json", json.dumps(POLICIES))]))
ZW = "\u200b"


def decide(org: str, *texts: str, groups: tuple[int, ...] | None = None) -> Decision:
    groups = groups or tuple(-1 for _ in texts)
    parts = tuple(
        PromptPart(("messages", i, "content"), t, "user", g)
        for i, (t, g) in enumerate(zip(texts, groups, strict=True))
    )
    request = LlmRequest("openai.chat", "m", parts, None, False, {})
    return evaluate(SNAPSHOT, build_context({"x-org-id": org}, request, catalog=load_catalog()))


TRICKS_BLOCKED = [
    # (rule, text)
    ("kw", f"this is conf{ZW}idential"),
    ("kw", "this is conf\u2060idential"),
    ("kw", "this is conf\u00adidential"),
    ("kw", "this is ｃｏｎｆｉｄｅｎｔｉａｌ"),
    ("kw", "this is \u0441onfidential"),
    ("kw", "THIS IS \u0421ONF\u0406DENTIAL"),
    ("kw", "this is conf\u0301idential"),
    ("kw", "this is con\u202efidential"),
    ("rx", f"the secret\u00a0plan\u3000{ZW}42"),
    ("rx", "the ｓｅｃｒｅｔ plan ４２"),
    ("rx", "the s\u0435cret plan 42"),
    ("rx", "the sec\u00adret pl\u2060an 4\u200b2"),
    ("rx", "the se\u0301cret plan\u2002\u2003 42"),
    ("rx", "the \u0405ECRET PLAN 42"),
    ("topic", "how to build\u00a0a\u2003b\u043emb"),
    ("topic", f"how to bui{ZW}ld a bomb"),
    ("pii", "write to bob＠example.org"),
    ("pii", f"write to bob@exa{ZW}mple.org"),
    ("pii", "write to jörg@example.org"),
    ("pii", "write to bob@bücher.example"),
    ("pii", "write to \u0431ob@\u0435xample.org"),
    ("pii", "write to bob@exam\u00adple.org"),
    ("pii", "write to bob\u2060@example.org"),
    ("pii", "write to ｂｏｂ＠ｅｘａｍｐｌｅ．ｏｒｇ"),
    ("kw", "this is conf\u00adidential"),
    ("kw", "this is confidentia\u0308l"),
    ("topic", "how to build a bo\u0301mb"),
    ("topic", "how to ｂｕｉｌｄ ａ ｂｏｍｂ"),
]


@pytest.mark.parametrize(("rule", "text"), TRICKS_BLOCKED)
def test_a_trick_does_not_turn_a_block_into_an_allow(rule: str, text: str) -> None:
    d = decide("blocks", text)
    assert (d.action, d.rule) == ("block", rule), d.reason


TRICKS_REDACTED = [
    # (text, what is left after redaction)
    ("see project\u2011aurora now", "see [REDACTED:kw] now"),
    ("see project\u2010aurora now", "see [REDACTED:kw] now"),
    (f"see pro{ZW}ject-aurora{ZW} now", f"see [REDACTED:kw]{ZW} now"),
    ("see ｐｒｏｊｅｃｔ－ａｕｒｏｒａ.", "see [REDACTED:kw]."),
    ("see pr\u043eject\u2212aur\u043era!", "see [REDACTED:kw]!"),
    ("café acct\u20101234 naïve", "café [REDACTED:rx] naïve"),
    ("日本語 ａｃｃｔ-１２３４ 日本語", "日本語 [REDACTED:rx] 日本語"),
    ("how to build\u00a0a bomb?", "how to [REDACTED:topic]?"),
    ("mail jörg@example.org, ok", "mail [EMAIL], ok"),
    ("mail bob＠example.org, ok", "mail [EMAIL], ok"),
    (f"mail bob@exa{ZW}mple.org, ok", "mail [EMAIL], ok"),
    ("mail bob@exam\u00adple.org, ok", "mail [EMAIL], ok"),
    ("mail \u0430lice@example.org, ok", "mail [EMAIL], ok"),
    ("see acct-12\u2060\u200b34 now", "see [REDACTED:rx] now"),
    (f"how to bu{ZW}ild\u3000a b\u043emb?", "how to [REDACTED:topic]?"),
]


@pytest.mark.parametrize(("text", "after"), TRICKS_REDACTED)
def test_redaction_replaces_exactly_the_original_span(text: str, after: str) -> None:
    d = decide("redacts", text)
    assert d.action == "modify", d.reason
    assert d.new_texts == {("messages", 0, "content"): after}


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        ("ru", "это с\u0435кр\u0435т"),  # the same word with Latin look-alikes of its letters
        ("ru", "это СЕКРЕТ"),
        # A Cyrillic keyword, a Latin letter slipped into the text's word (it stays Cyrillic).
        ("bomb", "это б\u006fмба"),
        ("bomb", "ЭТО БOМБА!"),
        ("bomb", "это бомб\u0061"),
        ("de", "eine Ueberweisung? nein: eine Uberweisung"),
        ("de", "eine U\u0308berweisung"),
        ("rx", "Geheimnis\u00a0fur dich"),
    ],
)
def test_policy_literals_outside_ascii_match_however_the_text_spells_them(
    rule: str, text: str
) -> None:
    d = decide("scripts", text)
    assert (d.action, d.rule) == ("block", rule), d.reason


BENIGN = [
    "Привет, как дела? Это обычный текст.",
    "日本語のテキストです。東京で会議があります。",
    "Crème brûlée, naïve café, Ærøskøbing, straße",
    "👩\u200d💻 👨\u200d👩\u200d👧 🏳\ufe0f\u200d🌈 ❤\ufe0f",
    "مرحبا بالعالم — שלום עולם",
    "한국어 텍스트입니다",
]


@pytest.mark.parametrize("text", BENIGN)
@pytest.mark.parametrize("org", ["blocks", "redacts", "scripts"])
def test_benign_text_in_any_script_is_never_rewritten(org: str, text: str) -> None:
    d = decide(org, text)
    assert d.action == "allow", d.reason
    assert d.new_texts == {}


# -- text the provider joins ------------------------------------------------------------------


def test_a_keyword_split_over_two_parts_of_one_group_is_found() -> None:
    assert decide("blocks", "this is confi", "dential", groups=(3, 3)).action == "block"
    # Different groups, or parts of their own, keep today's separation.
    assert decide("blocks", "this is confi", "dential", groups=(3, 4)).action == "allow"
    assert decide("blocks", "this is confi", "dential").action == "allow"


def test_a_keyword_at_the_edge_of_a_joined_part_is_found_too() -> None:
    # Joined, "a" + "confidential" reads "aconfidential": each part is scanned on its own too.
    assert decide("blocks", "a", "confidential", groups=(2, 2)).action == "block"
    assert decide("blocks", "confidential", "ly yours", groups=(2, 2)).action == "block"


def test_a_match_seen_joined_and_apart_is_one_redaction() -> None:
    d = decide("redacts", "see project-aurora", " now", groups=(1, 1))
    assert d.new_texts == {("messages", 0, "content"): "see [REDACTED:kw]"}
    assert d.redactions == {"kw": 1}


def test_an_email_split_over_two_parts_of_one_group_is_found() -> None:
    d = decide("blocks", "write to bob@exam", "ple.org today", groups=(0, 0))
    assert (d.action, d.rule) == ("block", "pii")
    assert decide("blocks", "write to bob@exam", "ple.org today").action == "allow"


def test_an_edit_that_spans_two_parts_is_split_into_per_part_edits() -> None:
    d = decide("redacts", "see proj", "ect-aurora now", groups=(1, 1))
    assert d.new_texts == {
        ("messages", 0, "content"): "see [REDACTED:kw]",
        ("messages", 1, "content"): " now",
    }
    d = decide("redacts", "mail bob@exa", "mple.org, ok", "x", groups=(1, 1, 1))
    assert d.new_texts == {
        ("messages", 0, "content"): "mail [EMAIL]",
        ("messages", 1, "content"): ", ok",
    }


def test_a_match_over_three_parts_and_a_zero_width_part() -> None:
    d = decide("redacts", "pro", ZW, "ject-", "aurora!", groups=(2, 2, 2, 2))
    assert d.new_texts == {
        ("messages", 0, "content"): "[REDACTED:kw]",
        ("messages", 2, "content"): "",
        ("messages", 3, "content"): "!",
    }


# -- the property ------------------------------------------------------------------------------

_IGNORABLE = [chr(c) for c in range(0x110000) if is_default_ignorable(chr(c))]
# Look-alikes of the letters of "confidential" in either case: every character TS #39 reads
# as that letter (Cyrillic, Greek, Armenian, Cherokee, math letters, ...), and a few more
# (fullwidth, marked).
_LOOK_ALIKES: dict[str, list[str]] = {
    letter: sorted(c for c, a in _TO_ASCII.items() if a == letter)
    for letter in set("confidential" + "CONFIDENTIAL")
}
_MORE = {"c": "\uff43\u0107", "o": "\uff4f\u00f6", "i": "\u00ed\uff49", "e": "\u00e9",
         "a": "\u00e0", "n": "\u00f1", "N": "\uff2e"}  # fmt: skip
for letter, extra in _MORE.items():
    _LOOK_ALIKES[letter].extend(extra)


@st.composite
def _disguised(draw: st.DrawFn) -> str:
    out: list[str] = []
    for ch in "confidential":
        if draw(st.booleans()):
            ch = ch.upper()
        if draw(st.booleans()):
            ch = draw(st.sampled_from([ch, *_LOOK_ALIKES[ch]]))
        out.append(ch)
        out.extend(draw(st.lists(st.sampled_from(_IGNORABLE), max_size=2)))
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(_disguised(), st.sampled_from(["", "it is ", "«"]), st.sampled_from(["", ".", " now"]))
def test_no_ignorable_or_look_alike_turns_a_block_into_an_allow(
    word: str, before: str, after: str
) -> None:
    d = decide("blocks", before + word + after)
    assert (d.action, d.rule) == ("block", "kw"), (word, d.reason)


# -- streamed answers ------------------------------------------------------------------------

STREAM_POLICY = [
    {
        "policy_name": "out",
        "org": "out",
        "rules": [
            {
                "type": "content_filter",
                "id": "kw",
                "keywords": ["project-aurora"],
                "action": "redact",
                "direction": "response",
            }
        ],
    }
]


def _chunk(text: str) -> bytes:
    payload: dict[str, Any] = {"choices": [{"index": 0, "delta": {"content": text}}]}
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _streamed(pieces: list[str]) -> str:
    snapshot = Snapshot(load_sources([("o.json", json.dumps(STREAM_POLICY))]))
    es = snapshot.resolve("out", None, None)
    guard = StreamGuard(es, "openai.chat", "r1", limit=32)
    out = b""
    for p in pieces:
        out += guard.feed(_chunk(p), end=False)
    out += guard.feed(b"data: [DONE]\n\n", end=True)
    text = []
    for line in out.decode().split("\n"):
        if line.startswith("data: {"):
            text.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
    return "".join(text)


def test_a_streamed_answer_is_redacted_through_tricks_and_chunk_boundaries() -> None:
    assert _streamed(["the pro", "ject\u2011aur", "ora is late"]) == "the [REDACTED:kw] is late"
    hidden = "pro" + ZW * 40 + "ject-aurora"  # more zero-width characters than the holdback
    assert _streamed(["x ", *hidden, " y"]) == "x [REDACTED:kw] y"


def test_a_benign_streamed_answer_passes_unchanged() -> None:
    text = "Привет 👩\u200d💻 日本語 café"
    assert _streamed(list(text)) == text


def _tags(text: str) -> str:
    """``text`` in Unicode tag characters: invisible, read by models as the ASCII mirrored."""
    return "".join(chr(0xE0000 + ord(c)) for c in text)


def test_a_keyword_written_in_tag_characters_is_read_as_the_model_reads_it() -> None:
    d = decide("blocks", f"hello{_tags(' this is confidential')} there")
    assert (d.action, d.rule) == ("block", "kw")
    hidden = _tags("project-aurora")
    d = decide("redacts", f"status of {hidden} please")
    assert d.action == "modify", d.reason
    assert d.new_texts == {("messages", 0, "content"): "status of [REDACTED:kw] please"}
    # Personal data written in tags is found, and its tags are masked.
    d = decide("redacts", f"mail {_tags('bob@example.org')}, ok")
    assert d.new_texts == {("messages", 0, "content"): "mail [EMAIL], ok"}, d.reason
    assert decide("blocks", f"hi{_tags(' write to bob@example.org')}").rule == "pii"
    # A tag letter inside a keyword still does not break it (the canonical form removes it).
    assert decide("blocks", f"conf{_tags('x')}idential").action == "block"
    # Tags that mirror nothing a rule names leave the text alone.
    flag = "\U0001f3f4" + _tags("gbsct") + "\U000e007f"
    assert decide("blocks", f"Go Scotland {flag}!").action == "allow"
