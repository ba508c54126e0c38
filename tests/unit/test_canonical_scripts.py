"""The reading form (detect/reading.py, per word: detect/words.py), which the semantic
classifiers read: look-alike evasions still fold to ASCII, text written in other scripts stays
readable; and policies in any script match the canonical form however the text is spelt."""

# ruff: noqa: RUF001 (look-alike characters are what these tests are about)

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.detect.canonical import canonicalize as canonicalize_skeleton
from policy_extproc.detect.patterns import Pattern, PatternSet, merge_spans
from policy_extproc.detect.reading import _sparse, latin_only
from policy_extproc.detect.reading import readable as canonicalize
from policy_extproc.detect.reading import reading_text as canonical_text
from policy_extproc.detect.words import fold_words as _dense
from policy_extproc.detect.words import pieces, settle


def canonicalize_reading_full(text: str) -> str:
    """The reading form by the word-by-word fold itself (no shortcut for Latin-only text)."""
    return settle(text, _dense(text))


ZW = "\u200b"

EVASIONS = [
    # (text, canonical): Cyrillic and Greek look-alikes in Latin words
    ("b\u043emb", "bomb"),
    ("the b\u043emb plan", "the bomb plan"),
    ("\u0441\u043enf\u0456d\u0435n\u0442\u0456\u0430l", "confidential"),  # 7 Cyrillic, 5 Latin
    ("CONF\u0399DENT\u0399AL", "CONFIDENTIAL"),  # Greek capital iota
    # whole-script confusables: every letter, in its case, looks like ASCII
    ("\u0455\u0435\u0445", "sex"),
    ("\u0440\u0430\u0443 now", "pay now"),
    ("\u0422\u0410\u041a\u0415", "TAKE"),  # Cyrillic capitals
    ("\u039a\u0395\u03a5", "KEY"),  # Greek capitals
    # marks on Latin letters, zero-width characters inside words, fullwidth forms
    ("conf\u0301idential", "confidential"),
    ("b\u00f6mb B\u00f6rse", "bomb Borse"),
    (f"b{ZW}\u043e{ZW}mb", "bomb"),
    (f"con{ZW}fi\u2060dential", "confidential"),
    ("\uff42\uff4f\uff4d\uff42", "bomb"),
    ("\uff42\u043e\uff4d\uff42", "bomb"),
]


@pytest.mark.parametrize(("text", "canonical"), EVASIONS)
def test_look_alike_evasions_still_fold_to_ascii(text: str, canonical: str) -> None:
    assert canonical_text(text) == canonical


READABLE = {
    "ru": "Это обычный русский язык: погода в городе хорошая, как сделать бомбу? Нет.",
    "uk": "Привіт! Ґанок біля їхнього будинку; щоденник обʼєкта.",
    "el": "Καλημέρα, πώς είσαι σήμερα; Μιλάμε ελληνικά, η γλώσσα μου είναι ωραία.",
    "ja": "日本語のテキストです。東京で会議があります。ガイドラインをご覧ください。",
    "ko": "한국어 텍스트입니다. 서울에서 회의가 있습니다.",
    "hi": "नमस्ते दुनिया, आप कैसे हैं? हिंदी में लिखा गया पाठ।",
    "th": "สวัสดีครับ วันนี้อากาศดีมาก",
    "ar": "مرحبا بالعالم، كيف حالك اليوم؟",
    "he": "שלום עולם, מה שלומך היום?",
    "zh": "这是一个测试。我们明天见面。",
}


@pytest.mark.parametrize("lang", sorted(READABLE))
def test_text_in_other_scripts_stays_readable(lang: str) -> None:
    text = READABLE[lang]
    assert canonical_text(text) == unicodedata.normalize("NFC", text)
    # Zero-width characters inside its words are still removed, and nothing else changes.
    hidden = "".join(ch + ZW if ch.isalpha() and i % 3 == 0 else ch for i, ch in enumerate(text))
    assert canonical_text(hidden) == unicodedata.normalize("NFC", text)
    # Its canonical form is the text itself: the map back is the identity.
    assert canonicalize(text).identity


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("\u3066\u3099", "\u3067"),  # te + combining dakuten: composed, not stripped
        ("\uff83\uff9e\uff7d\uff84", "デスト"),  # half-width katakana, voiced: NFKC
        ("日本語\uff08テスト\uff09", "日本語(テスト)"),  # NFKC: fullwidth parentheses
        ("น้ำ", unicodedata.normalize("NFKC", "น้ำ")),  # NFKC unfolds Thai sara am (U+0E33)
        ("中文，测试", "中文,测试"),  # fullwidth comma
        ("\u0418\u0306", "\u0419"),  # decomposed Cyrillic short i: composed
        ("бо\u0301мба", "бомба"),  # a cased letter sheds the marks it does not compose with
        ("\u0435\u0308\u0436", "\u0451\u0436"),  # ... and keeps those it does (ё)
        ("κα\u0301λος", "κάλος"),
    ],
)
def test_kept_words_are_nfkc(text: str, canonical: str) -> None:
    assert canonical_text(text) == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # The dominant script decides: a Cyrillic word with Latin letters slipped in is read
        # as Cyrillic, a Latin one with Cyrillic letters as ASCII; a tie goes to Latin.
        ("б\u006fмб\u0061", "бомба"),
        ("БOМБА", "БОМБА"),
        ("λ\u006fγος", "λογος"),  # Greek, with a Latin o: Greek omicron
        ("b\u043em\u0431", "bom6"),  # 3 Latin, 1 Cyrillic: as before (Cyrillic be reads as 6)
        ("日本語のAI", "日本語のAI"),  # cased letters never become uncased look-alikes
        ("user_бомба", "user_бомба"),  # "_" separates words
    ],
)
def test_a_mixed_word_folds_to_its_dominant_script(text: str, canonical: str) -> None:
    assert canonical_text(text) == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # Real words that are whole-script confusables fold like the evasions they resemble.
        ("\u0441\u043e\u0440", "cop"),
        ("\u041a\u0410\u041a", "KAK"),  # in capitals (in small letters, как stays)
        ("\u0397", "H"),  # Greek capital eta
    ],
)
def test_real_words_that_look_like_ascii_still_fold(text: str, canonical: str) -> None:
    assert canonical_text(text) == canonical


def _found(p: Pattern, text: str) -> list[str]:
    hits = PatternSet([p]).find(text)
    return [text[s:e] for s, e in merge_spans([(h.start, h.end) for h in hits])]


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        (Pattern(0, "бомба", whole_word=True), "это бoмба, БОМБА", ["бoмба", "БОМБА"]),
        (Pattern(0, "бомба", whole_word=True), f"это б{ZW}омбa", [f"б{ZW}омбa"]),
        (Pattern(0, "бомба", whole_word=True), "это бо\u0301мба", ["бо\u0301мба"]),
        (
            Pattern(0, "секрет", whole_word=True),
            "секрет СЕКРЕТ Секрет",
            ["секрет", "СЕКРЕТ", "Секрет"],
        ),
        (Pattern(0, "как", whole_word=True), "КАК как Как", ["КАК", "как", "Как"]),
        (Pattern(0, "είναι", whole_word=True), "ΕΙΝΑΙ είναι", ["ΕΙΝΑΙ", "είναι"]),
        # Not whole words: "ток" alone folds to "tok", inside "поток" it stays Cyrillic.
        (Pattern(0, "ток"), "поток и ток", ["ток", "ток"]),
        (Pattern(0, "секрет", "regex"), "секрет СЕКРЕТ", ["секрет", "СЕКРЕТ"]),
        (Pattern(0, "бомб[аы]", "regex"), "бoмба бомбы", ["бoмба", "бомбы"]),
        # A caseless regex meets the fold of either case (Cyrillic small be reads as "6").
        (Pattern(0, "бомб[аы]", "regex"), "БОМБА Бомбы бомбА", ["БОМБА", "Бомбы", "бомбА"]),
        (Pattern(0, "είναι", "regex"), "ΕΙΝΑΙ", ["ΕΙΝΑΙ"]),
        (Pattern(0, "бомба", "regex", case_sensitive=True), "БОМБА бомба", ["бомба"]),
        (Pattern(0, "で", "regex"), "\u3066\u3099す", ["\u3066\u3099"]),
    ],
)
def test_policies_in_any_script_match_however_the_text_spells_them(
    pattern: Pattern, text: str, found: list[str]
) -> None:
    assert _found(pattern, text) == found


# -- properties over many scripts --------------------------------------------------------------

_LETTERS = (
    "abcdefoxyzKMT" "бомбаесрухкнтвѕіїґБОМБАЕСРУХКНТВ" "ΚΕΥκόσμελογπΛΟΓ" "日本語のでﾃﾞｶﾞ한국어"
    "नमस्ते" "สวัสดีน้ำ" "مرحبا" "שלוםי" "ｃｏ¼×™ʼǃ℅¨"
)  # fmt: skip
_JOINERS = "\u200b\u00ad\u0301\u0308\u3099"
_BETWEEN = " -—.,'’_\n1２"
_TEXT = st.text(st.sampled_from(_LETTERS + _JOINERS + _BETWEEN), max_size=40) | st.text(
    st.characters(blacklist_categories=("Cs",)), max_size=20
)


@settings(max_examples=500, deadline=None)
@given(_TEXT)
def test_the_per_word_fold_is_a_fixed_point_with_an_exact_map(text: str) -> None:
    c = canonicalize(text)
    assert canonical_text(c.text) == c.text
    assert _dense(text) == _sparse(text)
    p = pieces(text)
    assert len(p) == len(text) and "".join(p) == c.text


_WORDS = st.text(st.sampled_from("бомбаесрухкнтвѕіїґэяжΚΕΥκόσμελογπ"), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(_WORDS, st.data())
def test_a_caseless_keyword_matches_its_word_in_any_casing(word: str, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    cased = "".join(c.upper() if f else c for c, f in zip(word, flips, strict=True))
    assert _found(Pattern(0, word, whole_word=True), f"- {cased}.") == [cased]


_LATIN_ONLY = st.characters(
    codec="utf-8",
    categories=("L", "M", "N", "P", "S", "Z", "Cf"),
    max_codepoint=0x2BFF,
).filter(lambda c: latin_only(c))


@settings(max_examples=2000, deadline=None)
@given(st.text(st.one_of(_LATIN_ONLY, st.sampled_from("abc XYZ.-'\u200b")), max_size=30))
def test_a_text_of_latin_only_reads_as_its_canonical_form(text: str) -> None:
    """The semantic pass then shares the content filters' forms (detect/joined.py)."""
    assert latin_only(text)
    assert canonicalize_reading_full(text) == canonicalize_skeleton(text).text
