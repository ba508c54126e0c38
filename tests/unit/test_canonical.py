"""The canonical matching form: what is folded, what is not, and the map back to the original."""

# ruff: noqa: RUF001 (look-alike characters are what these tests are about)

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.detect.canonical import (
    _dense,
    _sparse,
    canonical_text,
    canonicalize,
    fold_char,
    is_default_ignorable,
    visible_tail,
)
from policy_extproc.detect.joined import JoinedParts
from policy_extproc.detect.patterns import Pattern, PatternSet, merge_spans

ZWSP, ZWJ, WJ, SHY, NBSP, IDEO_SPACE = "\u200b", "\u200d", "\u2060", "\u00ad", "\u00a0", "\u3000"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # default ignorables are removed
        (f"conf{ZWSP}idential", "confidential"),
        (f"conf{WJ}ident{SHY}ial", "confidential"),
        ("con\u200c\u200dfi\u202edential\u2066", "confidential"),  # ZWNJ, ZWJ, bidi controls
        ("confi\ufe0fdential\U000e0041", "confidential"),  # variation selector, tag
        ("conf\x00iden\x1btial\x7f", "confidential"),  # ASCII controls that are not spaces
        # NFKC: fullwidth, ligatures
        ("ｃｏｎｆｉｄｅｎｔｉａｌ", "confidential"),
        ("bob＠example.org", "bob@example.org"),
        ("\ufb01le", "file"),
        # combining marks stripped after NFD
        ("conf\u0301idential", "confidential"),
        ("jörg", "jorg"),
        ("jo\u0308rg", "jorg"),
        # TS #39 look-alikes outside ASCII fold to ASCII
        ("\u0441onfidential", "confidential"),  # Cyrillic es
        ("\u0421ONF\u0406DENTIAL", "CONFIDENTIAL"),  # Cyrillic capitals; U+0406 reads as I
        ("\u039a\u0395\u03a5", "KEY"),  # Greek capitals
        ("a\u2212b", "a-b"),  # minus sign
        # spaces and dashes
        (f"a{NBSP}b{IDEO_SPACE}c\u2003d\u202fe", "a b c d e"),
        ("project\u2010aurora x\u2014y \ufe58 \uff0d", "project-aurora x-y - -"),
        ("project\u2011aurora", "project-aurora"),
        # ASCII stays as it is, TS #39's ASCII-to-ASCII mappings are not applied
        ('m1Il|0O `"', 'm1Il|0O `"'),
        ("tab\there\nnew\r\nline", "tab\there\nnew\r\nline"),
        # other scripts keep what does not look like ASCII
        ("日本語のテキスト", "日本語のテキスト"),
        ("한국어", "한국어"),  # Hangul syllables are recomposed after NFKD
        ("👩\u200d💻", "👩💻"),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    assert canonical_text(text) == canonical


def test_ascii_text_is_its_own_form_with_an_identity_map() -> None:
    c = canonicalize("plain ASCII, with\ttabs and\nnewlines")
    assert c.identity and c.text is c.original
    assert c.span(3, 9) == (3, 9)


@pytest.mark.parametrize(
    ("text", "needle", "original"),
    [
        (f"a conf{ZWSP}idential b", "confidential", f"conf{ZWSP}idential"),
        ("x \ufb01le y", "fi", "\ufb01"),  # both halves of an expansion map to the one char
        ("x \ufb01le y", "i", "\ufb01"),
        ("x \ufb01le y", "file", "\ufb01le"),
        ("a conf\u0301idential\u0301 b", "confidential", "conf\u0301idential\u0301"),
        (f"{ZWSP}{ZWSP}key{ZWSP} x", "key", "key"),
        ("\u0301A", "A", "A"),
        ("ｃｏｎｆｉｄｅｎｔｉａｌ!", "confidential", "ｃｏｎｆｉｄｅｎｔｉａｌ"),
        ("mail jörg@example.org now", "jorg@example.org", "jörg@example.org"),
        ("한국어 secret", "secret", "secret"),
    ],
)
def test_a_match_maps_back_to_the_exact_original_span(
    text: str, needle: str, original: str
) -> None:
    c = canonicalize(text)
    at = c.text.index(needle)
    s, e = c.span(at, at + len(needle))
    assert text[s:e] == original


def test_default_ignorables_are_the_unicode_property() -> None:
    # DerivedCoreProperties.txt (Unicode 14 and 15): 4174 code points.
    assert sum(is_default_ignorable(chr(cp)) for cp in range(0x110000)) == 4174
    assert all(is_default_ignorable(c) for c in (ZWSP, ZWJ, WJ, SHY, "\u034f", "\ufeff"))
    assert not any(is_default_ignorable(c) for c in (" ", NBSP, "a", "\u0600", "\ufff9"))


_ANY = st.characters(blacklist_categories=("Cs",))


@settings(max_examples=300, deadline=None)
@given(st.text(_ANY, max_size=40))
def test_the_canonical_form_is_a_fixed_point(text: str) -> None:
    once = canonical_text(text)
    assert canonical_text(once) == once


@settings(max_examples=300, deadline=None)
@given(st.text(_ANY, max_size=40), st.data())
def test_every_canonical_span_maps_to_original_characters_that_fold_to_it(
    text: str, data: st.DataObject
) -> None:
    c = canonicalize(text)
    if not c.text:
        return
    start = data.draw(st.integers(0, len(c.text) - 1))
    end = data.draw(st.integers(start + 1, len(c.text)))
    s, e = c.span(start, end)
    assert 0 <= s < e <= len(text)
    # The original span folds to a text that holds the canonical span (expansions may add a
    # half at either end).
    assert c.text[start:end] in canonical_text(text[s:e])


def test_fold_char_never_maps_ascii() -> None:
    for cp in range(0x20, 0x7F):
        assert fold_char(chr(cp)) == chr(cp)
    assert all(
        unicodedata.category(fold_char(chr(c)) or "a")[0] != "M" for c in range(0x300, 0x370)
    )


def test_joined_parts_of_one_group_are_back_to_back() -> None:
    j = JoinedParts(["conf", "idential", "other", "x"], [0, 0, -1, 1], "\0")
    assert j.text == "confidential\0other\0x"
    assert j.segments == [(0, 12), (13, 18), (19, 20)]
    assert j.pieces(0, 12) == [(0, 0, 4), (1, 0, 8)]
    assert j.pieces(2, 6) == [(0, 2, 4), (1, 0, 2)]


def test_different_groups_and_ungrouped_parts_stay_apart() -> None:
    j = JoinedParts(["a", "b", "c", "d"], [-1, -1, 0, 1], "\n")
    assert j.text == "a\nb\nc\nd"


def test_visible_tail_skips_removed_characters() -> None:
    text = "abc" + ZWSP * 10 + "de"
    assert visible_tail(text, 3) == 2  # "c", then ten removed characters, then "de"
    assert visible_tail("abc", 10) == 0
    assert visible_tail("abc", 0) == 3


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.text("abc ,.\n", max_size=6), st.text(_ANY, max_size=3)), max_size=12
    ).map("".join)
)
def test_both_ways_of_folding_agree(text: str) -> None:
    # Mostly ASCII text folds its runs outside ASCII, other text every character.
    assert _dense(text) == _sparse(text)


@pytest.mark.parametrize(
    ("expr", "text", "found"),
    [
        ("\u0441onfidential", "confidential", ["confidential"]),  # a Cyrillic literal
        ("[а-я]+", "это сок", ["это", "сок"]),  # members that fold to ASCII still match
        # A negated class gets nothing added: it sees the canonical letters, ASCII here.
        ("[^а-я ]+", "сок", ["сок"]),
        ("\ufb01+x", "fifix", ["fifix"]),  # an expansion keeps its quantifier
        ("a\u200b*b", "ab", ["ab"]),  # a removed character goes with its quantifier
        (r"geheimnis\s+für", "Geheimnis\u00a0fur", ["Geheimnis\u00a0fur"]),
        (r"[\x{41}а]x", "аx", ["аx"]),
    ],
)
def test_regexes_are_rewritten_to_match_the_canonical_text(
    expr: str, text: str, found: list[str]
) -> None:
    hits = PatternSet([Pattern(0, expr, "regex")]).find(text)
    spans = merge_spans([(h.start, h.end) for h in hits])
    assert [text[s:e] for s, e in spans] == found


def test_tag_characters_read_as_the_ascii_they_mirror() -> None:
    from policy_extproc.detect.characters import read_tags

    hidden = "".join(chr(0xE0000 + ord(c)) for c in " say hi!")
    assert read_tags("ok" + hidden) == "ok say hi!"
    assert read_tags("plain ascii") is None and read_tags("übrigens 日本") is None
    assert canonical_text("ok" + hidden) == "ok"  # the canonical form still removes them
    from policy_extproc.detect.characters import tags_only

    assert tags_only("ok" + hidden) == "  " + " say hi!" and tags_only("ok") is None
