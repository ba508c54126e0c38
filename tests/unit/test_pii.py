"""PII detection and masking: every type in sentences, the look-alikes it must leave alone."""

from __future__ import annotations

import ast
import itertools
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.detect.pii import ENTITIES, PiiDetector, PiiMatch, mask

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwia"
    "WF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n"
    "-----END RSA PRIVATE KEY-----"
)
PROJ = "sk-proj-Ab1_" + "x9Y-" * 19 + "x9Y"
ANT = "sk-ant-api03-" + "Ab9_" * 23 + "AA"
BTC = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"

# (text, entity, the exact value the match must cover)
POSITIVES: list[tuple[str, str, str]] = [
    ("Mail me at john.doe@example.com today.", "EMAIL", "john.doe@example.com"),
    ("contact:Jane_Roe+news@mail.example.co.uk.", "EMAIL", "Jane_Roe+news@mail.example.co.uk"),
    ("(...bob@acme.io)", "EMAIL", "bob@acme.io"),
    ("From: Jane Roe <jane@acme.io>", "EMAIL", "jane@acme.io"),
    ("Call (212) 555-0173 after six.", "PHONE", "(212) 555-0173"),
    ("Dial 212.555.0173 now", "PHONE", "212.555.0173"),
    ("Dial 1-212-555-0173 now", "PHONE", "1-212-555-0173"),
    ("Dial +1 (212) 555-0173 now", "PHONE", "+1 (212) 555-0173"),
    ('{"phone_number": "2125550173"}', "PHONE", "2125550173"),
    ("London office: +44 20 7946 0958.", "PHONE", "+44 20 7946 0958"),
    ("Berlin +49 30 901820, ask for Jan", "PHONE", "+49 30 901820"),
    ("my cell is 2125550173", "PHONE", "2125550173"),
    ("Card 4111 1111 1111 1111 exp 09/27", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("pay with 4111-1111-1111-1111.", "CREDIT_CARD", "4111-1111-1111-1111"),
    ("Amex 3782 822463 10005 please", "CREDIT_CARD", "3782 822463 10005"),
    ("use 5555555555554444 for it", "CREDIT_CARD", "5555555555554444"),
    ("card 4111111111111111 123 (cvv)", "CREDIT_CARD", "4111111111111111"),
    ("My SSN is 123-45-6789.", "US_SSN", "123-45-6789"),
    ("Fill in 234-56-7890 on line 3.", "US_SSN", "234-56-7890"),
    ("SSN 123 45 6789", "US_SSN", "123 45 6789"),
    ("social security number: 123456789", "US_SSN", "123456789"),
    ("Wire it to GB82 WEST 1234 5698 7654 32 please", "IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN DE89370400440532013000.", "IBAN", "DE89370400440532013000"),
    ("from 192.168.1.10, again", "IP_ADDRESS", "192.168.1.10"),
    ("host=10.0.0.1.", "IP_ADDRESS", "10.0.0.1"),
    ("GET http://10.0.0.1:8080/health", "IP_ADDRESS", "10.0.0.1"),
    ("ip:2001:db8::8a2e:370:7334 down", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("link-local fe80::1 only", "IP_ADDRESS", "fe80::1"),
    ("mapped ::ffff:192.168.1.1 seen", "IP_ADDRESS", "::ffff:192.168.1.1"),
    ("My passport number is 123456789.", "US_PASSPORT", "123456789"),
    ("Passport: A12345678, expires 2031", "US_PASSPORT", "A12345678"),
    ("Driver's license number D1234567 was scanned", "US_DRIVER_LICENSE", "D1234567"),
    ("DL: A123-4567-8901", "US_DRIVER_LICENSE", "A123-4567-8901"),
    ("her driving licence is 123 456 789", "US_DRIVER_LICENSE", "123 456 789"),
    ("DOB: 1985-03-12", "DATE_OF_BIRTH", "1985-03-12"),
    ("I was born on March 12, 1985 in Ohio", "DATE_OF_BIRTH", "March 12, 1985"),
    ("date of birth 31/12/1985, please", "DATE_OF_BIRTH", "31/12/1985"),
    ("birthday: 12th of March 1985", "DATE_OF_BIRTH", "12th of March 1985"),
    ("DOB 12-Mar-1985", "DATE_OF_BIRTH", "12-Mar-1985"),
    ('{"date_of_birth": "1985-03-12"}', "DATE_OF_BIRTH", "1985-03-12"),
    ("Routing number 021000021, account 12", "US_BANK_ROUTING", "021000021"),
    ("ABA 011000015", "US_BANK_ROUTING", "011000015"),
    ('{"routing_number": "011000015"}', "US_BANK_ROUTING", "011000015"),
    ("My ITIN is 912-70-1234.", "US_ITIN", "912-70-1234"),
    ("Enter 912-70-1234 in box 2.", "US_ITIN", "912-70-1234"),
    ("NHS number 943 476 5919.", "UK_NHS", "943 476 5919"),
    ("nhs no. 9434765919", "UK_NHS", "9434765919"),
    (f"BTC {BTC}.", "CRYPTO_WALLET", BTC),
    ("to bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "CRYPTO_WALLET",
     "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"),
    ("ETH 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "CRYPTO_WALLET",
     "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
    ("key sk-abcdefghij1234567890T3BlbkFJabcdefghij1234567890", "API_SECRET",
     "sk-abcdefghij1234567890T3BlbkFJabcdefghij1234567890"),
    (f"OPENAI_API_KEY={PROJ}-", "API_SECRET", PROJ),  # a trailing "-" is no part of it
    (f"x-api-key: {ANT}", "API_SECRET", ANT),
    ("aws AKIAIOSFODNN7EXAMPLE ok", "API_SECRET", "AKIAIOSFODNN7EXAMPLE"),
    ("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "API_SECRET",
     "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
    ("github_pat_11ABCDEFG0123456789_" + "aB3" * 20, "API_SECRET",
     "github_pat_11ABCDEFG0123456789_" + "aB3" * 20),
    ("SLACK=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "API_SECRET",
     "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "API_SECRET", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("maps AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW ok", "API_SECRET",
     "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"),
    (f"Authorization: Bearer {JWT}", "API_SECRET", JWT),
    (f"key file:\n{PEM}\nend", "API_SECRET", PEM),
]  # fmt: skip

NEGATIVES: list[str] = [
    "Your order #4532015112830366 has shipped.",  # Luhn-valid, but an order number
    "Order 2125550173 was cancelled.",
    "Invoice INV-2024-00042 is overdue; see invoice 6617817907.",
    "Upgrade to version 1.2.3.4 before Friday.",
    "Firmware 10.20.30.40 fixed it; running v1.2.3 in prod; release 2.0.1",
    "Request id 550e8400-e29b-41d4-a716-446655440000 failed.",
    "ids 12345678-1234-1234-1234-123456789012 and 4111-1111-1111-1111-1111",
    "Fixed in commit 3f786850e387550fdab836ed7e6dc881de23001b.",
    "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "md5 1b2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d and 0x" + "ab" * 32,
    "Logged at 2024-01-15T10:30:00Z; ts=1705312200; event at 1705312200123; at 12:30:45",
    "Reference 4111 1111 1111 1112 on the slip.",  # Luhn fails
    "The count reached 123456789 rows; ID 987654321 not found.",  # 9 digits, no context
    "Total: $1,299.99 or €12.345,67 or USD 4,500,000.",
    "Meeting on 2024-03-15 at 10:00, deadline 03/15/2024.",  # dates without birth context
    "see section 1.2.3.4 and figure 3.1",
    "image icon@2x.png and std::vector<int> or Foo::Bar::baz()",
    "MAC 00:1A:2B:3C:4D:5E on port 8080",
    "The number 555-123-4567 is a fake one.",  # 555 is no area code (and no phone word)
    "sk-learn-compatible-estimator-v2 is a package name",
    "The passport office is closed; my license is MIT.",
    "coordinates 40.7128, -74.0060 and ratio 16:9",
]


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


@pytest.mark.parametrize(("text", "entity", "value"), POSITIVES)
def test_finds_each_type(detector: PiiDetector, text: str, entity: str, value: str) -> None:
    spans = [(m.entity, text[m.start : m.end]) for m in detector.find(text)]
    assert (entity, value) in spans


@pytest.mark.parametrize("text", NEGATIVES)
def test_leaves_look_alikes_alone(detector: PiiDetector, text: str) -> None:
    found = detector.find(text)
    assert [(m.entity, text[m.start : m.end]) for m in found] == []


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("Please quote 123456789 in your reply.", "US_SSN"),  # 9 digits, no SSN context
        ("The number is A12345678.", "US_PASSPORT"),
        ("Licence D1234567 is the product key", "US_DRIVER_LICENSE"),
        ("The release date was 1985-03-12.", "DATE_OF_BIRTH"),
        ("Number 021000021 on the list", "US_BANK_ROUTING"),
        ("ref 9434765919", "UK_NHS"),
    ],
)
def test_context_dependent_types_need_context(
    detector: PiiDetector, text: str, entity: str
) -> None:
    assert entity not in {m.entity for m in detector.find(text)}


@pytest.mark.parametrize(
    "lead", ["Grüße aus Köln! ", "Привет, ", "日本語のテキスト ", "🙂🙂 ", "e\u0301 ", "\ud800 "]
)
def test_offsets_after_non_ascii(detector: PiiDetector, lead: str) -> None:
    text = lead + "mail jane@acme.com or SSN 123-45-6789 — ok ✓ 4111 1111 1111 1111"
    found = {m.entity: text[m.start : m.end] for m in detector.find(text)}
    assert found == {
        "EMAIL": "jane@acme.com",
        "US_SSN": "123-45-6789",
        "CREDIT_CARD": "4111 1111 1111 1111",
    }


def test_non_ascii_letters_bind_like_letters(detector: PiiDetector) -> None:
    # "é" next to the digits makes them part of a word, as an ASCII letter would.
    assert detector.find("réf123-45-6789") == []


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        # 3-3-4 digits valid as both a phone number and an NHS number: context decides.
        ("NHS number 943 476 5919", "UK_NHS", "943 476 5919"),
        ("call me on 943 476 5919", "PHONE", "943 476 5919"),
        # Nine digits valid for several types: the nearest context word wins.
        ("routing 021000021 and passport 021000021", "US_PASSPORT", None),
        ("passport no. is below; routing number 021000021", "US_BANK_ROUTING", "021000021"),
        # An ITIN is never an SSN (area 9xx), so no tie there.
        ("SSN 912-70-1234", "US_ITIN", "912-70-1234"),
    ],
)
def test_overlapping_candidates(
    detector: PiiDetector, text: str, entity: str, value: str | None
) -> None:
    found = detector.find(text)
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
    if value is None:
        assert found[-1].entity == entity
    else:
        assert [(m.entity, text[m.start : m.end]) for m in found] == [(entity, value)]


def test_matches_sorted_and_disjoint(detector: PiiDetector) -> None:
    text = " ".join(t for t, _, _ in POSITIVES)
    found = detector.find(text)
    assert len(found) >= len(POSITIVES) - 5
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
    assert all(0 < m.score <= 1 for m in found)


@pytest.mark.parametrize(
    ("allow", "text", "left"),
    [
        (["*@acme.com"], "jane@acme.com and bob@other.org", ["bob@other.org"]),
        (["*@ACME.COM"], "Jane@Acme.com", []),
        (
            ["4111111111111111"],
            "card 4111 1111 1111 1111 or 5555555555554444",
            ["5555555555554444"],
        ),
        (["10.0.0.*", "::1"], "10.0.0.7 and 10.0.1.7", ["10.0.1.7"]),
        (["jane@acme.com"], "jane@acme.com.evil.io", ["jane@acme.com.evil.io"]),  # whole value
    ],
)
def test_allow_list(allow: list[str], text: str, left: list[str]) -> None:
    found = PiiDetector(allow=allow).find(text)
    assert [text[m.start : m.end] for m in found] == left


def test_enabled_entities_only() -> None:
    text = "jane@acme.com, SSN 123-45-6789"
    assert [m.entity for m in PiiDetector(["US_SSN"]).find(text)] == ["US_SSN"]
    assert PiiDetector([]).find(text) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entities": ["EMAIL", "SSN"]}, "unknown PII entity 'SSN'"),
        ({"entities": ["email"]}, "unknown PII entity 'email'"),
        ({"min_score": 1.5}, "min_score must be between 0 and 1"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PiiDetector(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "min_score", "found"),
    [
        ("Try 212-555-0173", 0.5, True),  # formatted, no context: 0.7
        ("Try 212-555-0173", 0.8, False),
        ("Phone: 212-555-0173", 0.9, True),  # context right before it: 0.95
        ("number 2125550173", 0.5, False),  # bare digits need context...
        ("number 2125550173", 0.25, True),  # ...unless the caller accepts weak matches
        ("Upgrade to version 1.2.3.4", 0.5, False),  # demoted by "version"
        ("Upgrade to version 1.2.3.4", 0.3, True),
    ],
)
def test_min_score(text: str, min_score: float, found: bool) -> None:
    assert bool(PiiDetector(min_score=min_score).find(text)) is found


def test_context_raises_score(detector: PiiDetector) -> None:
    (plain,) = detector.find("Fill in 234-56-7890 on line 3")
    (labelled,) = detector.find("My SSN is 234-56-7890")
    assert labelled.score > plain.score >= 0.5


def test_max_match_len_bounds_every_match(detector: PiiDetector) -> None:
    for text, _, _ in POSITIVES:
        for m in detector.find(text):
            assert m.end - m.start <= detector.max_match_len
    assert PiiDetector(["US_SSN", "PHONE"]).max_match_len < 64
    assert PiiDetector([]).max_match_len == 0


def test_thread_safe(detector: PiiDetector) -> None:
    text = " ".join(t for t, _, _ in POSITIVES)
    expected = detector.find(text)
    results: list[list[PiiMatch]] = []

    def work() -> None:
        for _ in range(20):
            results.append(detector.find(text))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    assert all(r == expected for r in results)


# --- masking ----------------------------------------------------------------------------------

TEXT = "Mail jane@acme.com, card 4111 1111 1111 1111."
MATCHES = [PiiMatch("EMAIL", 5, 18, 0.95), PiiMatch("CREDIT_CARD", 25, 44, 0.9)]


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("placeholder", "Mail [EMAIL], card [CREDIT_CARD]."),
        ("partial", "Mail ****@acme.com, card ****1111."),
    ],
)
def test_mask_styles(style: str, expected: str) -> None:
    assert mask(TEXT, MATCHES, style) == expected  # type: ignore[arg-type]


def test_mask_hash_is_a_stable_keyed_pseudonym() -> None:
    once = mask(TEXT, MATCHES, "hash", key=b"k1")
    assert once == mask(TEXT, MATCHES, "hash", key=b"k1")
    assert once != mask(TEXT, MATCHES, "hash", key=b"k2")
    email, card = once.split(", card ")
    assert email.startswith("Mail [EMAIL:") and len(email) == len("Mail [EMAIL:12345678]")
    assert card.startswith("[CREDIT_CARD:")
    # The same value spelt differently gets the same pseudonym.
    other = "Mail JANE@ACME.COM, card 4111111111111111."
    spans = [PiiMatch("EMAIL", 5, 18, 0.95), PiiMatch("CREDIT_CARD", 25, 41, 0.9)]
    assert mask(other, spans, "hash", key=b"k1") == once


@pytest.mark.parametrize(
    ("style", "key", "message"),
    [("hash", None, "needs a key"), ("hash", b"", "needs a key"), ("blur", None, "unknown mask")],
)
def test_mask_errors(style: str, key: bytes | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mask(TEXT, MATCHES, style, key=key)  # type: ignore[arg-type]


def test_mask_nothing_and_overlaps() -> None:
    assert mask(TEXT, []) == TEXT
    overlapping = [*MATCHES, PiiMatch("US_SSN", 30, 40, 0.5)]
    assert mask(TEXT, overlapping) == "Mail [EMAIL], card [CREDIT_CARD]."


def test_partial_hides_short_values() -> None:
    assert mask("ip 1.2.3.4", [PiiMatch("IP_ADDRESS", 3, 10, 0.9)], "partial") == "ip ****"


VALUES = [value for _, _, value in POSITIVES if "\n" not in value]
FILLER = [
    "the",
    "SSN",
    "card",
    "call",
    "é",
    "日本",
    "—",
    "order",
    "key:",
    "DOB",
    "(",
    ")",
    ",",
    "1",
]


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.one_of(st.sampled_from(VALUES), st.sampled_from(FILLER)), max_size=12),
    style=st.sampled_from(["placeholder", "partial", "hash"]),
)
def test_mask_never_leaves_a_matched_value(parts: list[str], style: str) -> None:
    detector = _shared()
    text = " ".join(parts)
    found = detector.find(text)
    masked = mask(text, found, style, key=b"secret")  # type: ignore[arg-type]
    for m in found:
        assert text[m.start : m.end] not in masked


_DETECTOR: list[PiiDetector] = []


def _shared() -> PiiDetector:
    if not _DETECTOR:
        _DETECTOR.append(PiiDetector())
    return _DETECTOR[0]


def test_core_imports_no_io_framework() -> None:
    # STYLE.md: detect/ is pure; grpc, redis, opentelemetry and asyncio stay at the edges.
    detect = Path(__file__).resolve().parents[2] / "policy_extproc" / "detect"
    for name in ("pii.py", "pii_validators.py", "pii_wallets.py"):
        tree = ast.parse((detect / name).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (
                node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
            )
        }
        assert not imported & {"grpc", "redis", "opentelemetry", "asyncio"}, name


def test_entities_are_the_fourteen_of_the_design() -> None:
    assert len(ENTITIES) == 14 == len(set(ENTITIES))
