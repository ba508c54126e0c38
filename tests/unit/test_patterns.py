"""The multi-pattern engine: literals, phrases and regexes on Hyperscan, offsets in UTF-8 bytes."""

from __future__ import annotations

import re
import threading

import hyperscan
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.detect.canonical import canonicalize
from policy_extproc.detect.patterns import Hit, Pattern, PatternError, PatternSet, merge_spans
from policy_extproc.detect.scratch import ScratchPool
from policy_extproc.policy.compiler import compile_read
from policy_extproc.policy.loader import read_sources


def spans(patterns: list[Pattern], text: str) -> list[tuple[int, str]]:
    """(tag, matched original text) of every hit on the canonical form, in text order."""
    hits = sorted(PatternSet(patterns).find(text), key=lambda h: (h.start, h.end, h.tag))
    return [(h.tag, text[h.start : h.end]) for h in hits]


def lit(expr: str, *, cs: bool = False, ww: bool = True, tag: int = 0) -> Pattern:
    return Pattern(tag, expr, "literal", case_sensitive=cs, whole_word=ww)


def rx(expr: str, *, cs: bool = False, ww: bool = False, tag: int = 0) -> Pattern:
    return Pattern(tag, expr, "regex", case_sensitive=cs, whole_word=ww)


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        # case
        (lit("secret"), "Secret SECRET secret", ["Secret", "SECRET", "secret"]),
        (lit("Secret", cs=True), "Secret SECRET secret", ["Secret"]),
        # whole words: ASCII
        (lit("key"), "key keys monkey key_x key1 (key) key.", ["key", "key", "key"]),
        (lit("key", ww=False), "keys monkey", ["key", "key"]),
        # whole words: outside ASCII, letters and marks join, punctuation and spaces separate
        # (matched on the canonical form: a mark on a keyword's letter is stripped, so "key" +
        # U+0301 is the keyword, its mark redacted with it; "keyé" is "keye", one word)
        (lit("key"), "keyé ékey key\u0301 日key", ["key\u0301"]),
        (lit("key"), "«key» \u00a0key\u3000 —key— key。", ["key", "key", "key", "key"]),
        # letters outside ASCII, any case
        (lit("straße"), "STRAßE Straße straße", ["STRAßE", "Straße", "straße"]),
        (lit("ÉTÉ"), "été Été ÉTÉ étés", ["été", "Été", "ÉTÉ"]),
        (lit("ÉTÉ", cs=True), "été ÉTÉ", ["ÉTÉ"]),
        # more spellings than are worth compiling: a regex, same results
        (lit("ÄÖÜÄÖ zu"), "äöüäö\u00a0ZU ÄÖÜÄÖ  zu", ["äöüäö\u00a0ZU", "ÄÖÜÄÖ  zu"]),
        # phrases: any run of white space between the words
        (
            lit("build a bomb"),
            "Build  a\n\tbomb; build\u00a0a\u2003bomb",
            ["Build  a\n\tbomb", "build\u00a0a\u2003bomb"],
        ),
        (lit("build a bomb"), "rebuild a bomb, build a bombs", []),
        (lit("  api   key "), "API KEY", ["API KEY"]),
        # regexes: start of match, case, no whole words unless asked
        (rx(r"\d{3}-\d{2}-\d{4}"), "ssn: 123-45-6789.", ["123-45-6789"]),
        (rx(r"api[_-]?key"), "API_KEY apikey", ["API_KEY", "apikey"]),
        (rx(r"api[_-]?key", cs=True), "API_KEY apikey", ["apikey"]),
        (rx(r"key", ww=True), "keys key", ["key"]),
        (rx(r"a.b"), "a\nb", ["a\nb"]),  # DOTALL: a newline is a character like any other
        (rx(r"\p{Lu}{3}"), "abc ÉTÉ", ["ÉTÉ"]),  # UTF-8 mode
    ],
)
def test_matching(pattern: Pattern, text: str, found: list[str]) -> None:
    assert [s for _, s in spans([pattern], text)] == found


def test_regex_reports_every_end_from_the_leftmost_start() -> None:
    assert PatternSet([rx(r"\d+")]).scan(b"x 123") == [Hit(0, 2, 3), Hit(0, 2, 4), Hit(0, 2, 5)]


def test_offsets_are_utf8_bytes() -> None:
    text = "日本語 🎉 secret"
    (hit,) = PatternSet([lit("secret", tag=7)]).scan(text.encode())
    assert hit == Hit(7, len("日本語 🎉 ".encode()), len(text.encode()))


def test_phrase_offsets_map_back_through_squeezed_white_space() -> None:
    text = "a  \t b\u00a0\u00a0c build \n\n a\u3000\u3000 bomb end  x"
    data = text.encode()
    (hit,) = PatternSet([lit("build a bomb")]).scan(data)
    assert data[hit.start : hit.end].decode() == "build \n\n a\u3000\u3000 bomb"


def test_tags_come_back_and_literals_and_regexes_mix() -> None:
    patterns = [lit("alpha", tag=3), rx(r"be+ta", tag=5), lit("gamma delta", tag=9)]
    assert spans(patterns, "alpha beeta gamma  delta") == [
        (3, "alpha"),
        (5, "beeta"),
        (9, "gamma  delta"),
    ]
    assert PatternSet(patterns).size == 3


def test_nothing_to_scan() -> None:
    assert PatternSet([lit("x"), rx("y")]).scan(b"") == []
    assert PatternSet([]).scan(b"anything") == []


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        (r"(\w+)\s+\1", "Back-references are unsupported."),
        (r"password(?=:)", "Zero-width assertions are not supported."),
        (r"(?<!no )secret", "Zero-width assertions are not supported."),
        (r"a*", "Pattern matches empty buffer; use HS_FLAG_ALLOWEMPTY to enable support."),
        (r"x{1,100000}", "Bounded repeat is too large."),
    ],
)
def test_the_engine_refuses(expr: str, why: str) -> None:
    with pytest.raises(PatternError) as info:
        PatternSet([rx(expr)])
    assert [(p.expr, w) for p, w in info.value.failures] == [(expr, why)]


def test_every_refused_pattern_is_named_at_once() -> None:
    patterns = [rx("ok", tag=0), rx(r"(a)\1", tag=1), lit("fine", tag=2), rx(r"(?=x)y", tag=3)]
    with pytest.raises(PatternError) as info:
        PatternSet(patterns)
    assert [p.tag for p, _ in info.value.failures] == [1, 3]
    assert str(info.value).startswith("pattern '(a)\\\\1' cannot be compiled: Back-references")


@pytest.mark.parametrize(
    ("given", "merged"),
    [
        ([], []),
        ([(5, 9), (0, 2)], [(0, 2), (5, 9)]),
        ([(0, 3), (0, 1), (0, 2)], [(0, 3)]),
        ([(0, 4), (2, 6), (6, 8), (9, 10)], [(0, 8), (9, 10)]),
        ([(1, 10), (2, 3)], [(1, 10)]),
    ],
)
def test_merge_spans(given: list[tuple[int, int]], merged: list[tuple[int, int]]) -> None:
    assert merge_spans(given) == merged


_SPACES_AND_LETTERS = ["a", "B", "b", "A", "c", "é", ".", " ", "\t", "\n", "\u00a0", "\u2003",
                       "\u3000", "\x1f", "\x00"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_SPACES_AND_LETTERS), max_size=40).map("".join))
def test_phrase_spans_match_a_reference_regex(text: str) -> None:
    """A phrase is its words with any white space between them, as whole words, any case, in
    the canonical text (a removed control character joins what is around it)."""
    canon = canonicalize(text)
    reference = []
    for m in re.finditer(r"(?<!\w)a\s+b(?!\w)", canon.text, re.IGNORECASE):
        s, e = canon.span(m.start(), m.end())
        reference.append((len(text[:s].encode()), len(text[:e].encode())))
    hits = PatternSet([lit("a b")]).scan(text.encode())
    assert sorted((h.start, h.end) for h in hits) == reference


_SHARED = """
policy_name: shared
scope: {org: acme}
rules:
  - type: content_filter
    id: words
    keywords: [forbidden, build a bomb]
    patterns: ['sk-[a-z0-9]{8,}']
    action: block
"""


def test_one_snapshot_scanned_from_several_threads_at_once() -> None:
    """The admin dry run scans the live snapshot in a worker thread while the event loop scans
    it too: Hyperscan refuses a scratch that another scan holds (``ScratchInUseError``), so a
    set must not share one between scans. Both databases (literals, regexes) are exercised."""
    snapshot = compile_read(*read_sources([("shared.yaml", _SHARED)]))
    (compiled,) = snapshot.policies
    patterns = compiled.request_patterns
    assert patterns is not None
    # Long enough that each scan spans many thread switches; phrases with white-space runs
    # take the squeezed path, the regex the other database.
    data = ("x forbidden sk-abcdef123 build  a\tbomb " * 20_000).encode()
    expected = sorted((h.tag, h.start, h.end) for h in patterns.scan(data))
    assert len(expected) >= 60_000
    threads, rounds = 6, 4
    start = threading.Barrier(threads)
    errors: list[BaseException] = []
    results: list[list[tuple[int, int, int]]] = []

    def work() -> None:
        start.wait()
        try:
            for _ in range(rounds):
                results.append(sorted((h.tag, h.start, h.end) for h in patterns.scan(data)))
        except BaseException as exc:  # reported below, with the thread's error
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert len(results) == threads * rounds
    assert all(r == expected for r in results)


def test_a_scan_from_inside_a_scan() -> None:
    """Without threads: a scan that starts while another holds its scratch (here, from the
    match callback of the first) gets a scratch of its own, and gives it back."""
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[b"sk-[a-z0-9]{8}"], ids=[0], flags=[hyperscan.HS_FLAG_SOM_LEFTMOST])
    pool = ScratchPool(db)
    inner: list[tuple[int, int]] = []

    def on_inner(_id: int, start: int, end: int, _flags: int, _ctx: object) -> None:
        inner.append((start, end))

    def on_outer(_id: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
        pool.scan(b".. sk-abcdef12", on_inner)

    pool.scan(b"sk-abcdef12", on_outer)
    assert inner == [(3, 14)]
    assert pool.size == 2  # the outer scan's scratch and the one cloned for the inner scan
    with pytest.raises(hyperscan.ScratchInUseError):  # what the database's own scratch does
        db.scan(b"sk-abcdef12", match_event_handler=lambda *_: db.scan(b"sk-abcdef12"))
