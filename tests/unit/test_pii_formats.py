"""PII as people write it (issue 12): one table per group of formats, and the look-alikes.

Each case names the exact value that must be found (or None: nothing of that type may be).
"""

from __future__ import annotations

import pytest

from policy_extproc.detect.pii import DEFAULT_REGIONS, PiiDetector
from policy_extproc.errors import PolicyError
from policy_extproc.policy.loader import load_sources
from policy_extproc.policy.model import NO_SECRETS
from policy_extproc.policy.rules.pii import PiiRule


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


def _found(detector: PiiDetector, text: str) -> list[tuple[str, str]]:
    return [(m.entity, text[m.start : m.end]) for m in detector.find(text)]


# (text, entity, value): the value must be found as that type, whole.
FORMATS: list[tuple[str, str, str]] = [
    # PHONE: extensions, as Faker and people write them.
    ("Call 212-555-0173 x123 today", "PHONE", "212-555-0173 x123"),
    ("Call 212-555-0173x1234 today", "PHONE", "212-555-0173x1234"),
    ("office (212)555-0173 ext. 12, ask for Ana", "PHONE", "(212)555-0173 ext. 12"),
    ("Dial +1-212-555-0173 extension 4 now", "PHONE", "+1-212-555-0173 extension 4"),
    # PHONE: international exit prefixes instead of "+".
    ("Reach me at 001-202-555-0143.", "PHONE", "001-202-555-0143"),
    ("From the US dial 011 44 20 7946 0958.", "PHONE", "011 44 20 7946 0958"),
    ("London 0044 20 7946 0958 is the office", "PHONE", "0044 20 7946 0958"),
    # PHONE: national formats of the default regions.
    ("Glasgow office: 0141 496 0404.", "PHONE", "0141 496 0404"),
    ("Bristol (0117) 4960887 until five", "PHONE", "(0117) 4960887"),
    ("Newcastle 01914960069, ask for Jo", "PHONE", "01914960069"),
    ("The Herzliya desk is 09-7625400.", "PHONE", "09-7625400"),
    ("Her mobile is 090-1234-5678.", "PHONE", "090-1234-5678"),
    ("My cell is 13812345678.", "PHONE", "13812345678"),
    ("Call 91-415-555-0132 please", "PHONE", "91-415-555-0132"),
    # PHONE: possible but not valid, named by a phone word.
    ("phone: 01632 960123", "PHONE", "01632 960123"),
    ("call me at 555-201-3344", "PHONE", "555-201-3344"),
    # CREDIT_CARD: Maestro 12, JCB 15 (1800/2131), UATP, Dankort.
    ("Maestro 5018 0000 0009", "CREDIT_CARD", "5018 0000 0009"),
    ("pay with 501800000009 now", "CREDIT_CARD", "501800000009"),
    ("JCB 180000000000002 on file", "CREDIT_CARD", "180000000000002"),
    ("use 213100000000001 for it", "CREDIT_CARD", "213100000000001"),
    ("UATP 1100 0000 0000 007", "CREDIT_CARD", "1100 0000 0000 007"),
    ("Dankort 5019 7170 1010 3742", "CREDIT_CARD", "5019 7170 1010 3742"),
    # CREDIT_CARD: Luhn-valid outside the issuer table, named by a card word.
    ("my card number is 7992 7398 7138", "CREDIT_CARD", "7992 7398 7138"),
    # Separators and spellings.
    ("SSN 078.05.1123 on the form", "US_SSN", "078.05.1123"),
    ("ITIN 912.70.1234 on the form", "US_ITIN", "912.70.1234"),
    ("IBAN AL47-2121-1009-0000-0002-3569-8741.", "IBAN", "AL47-2121-1009-0000-0002-3569-8741"),
    ("routing number 3222-7162-7 for the deposit", "US_BANK_ROUTING", "3222-7162-7"),
    ("DOB: 1985-03-12T00:00:00Z", "DATE_OF_BIRTH", "1985-03-12T00:00:00Z"),
    ("born in March 1985 in Leeds", "DATE_OF_BIRTH", "March 1985"),
    ("date of birth 03/1985", "DATE_OF_BIRTH", "03/1985"),
    # E-mail: punycode and internationalised addresses.
    ("write to a@xn--d1acufc.xn--p1ai now", "EMAIL", "a@xn--d1acufc.xn--p1ai"),
    ("user@xn--80ak6aa92e.com today", "EMAIL", "user@xn--80ak6aa92e.com"),
    ("Grüße, jörg@example.org!", "EMAIL", "jörg@example.org"),
    ("order from bob@bücher.example please", "EMAIL", "bob@bücher.example"),
    ("пишите: иван.петров@пример.рф", "EMAIL", "иван.петров@пример.рф"),
    ("連絡先は 山田@例え.テスト です", "EMAIL", "山田@例え.テスト"),
    ("Δείτε ηλεκτρονικό: δοκιμή@παράδειγμα.δοκιμή.", "EMAIL", "δοκιμή@παράδειγμα.δοκιμή"),
    # Context: the nearer word wins.
    ("SSN: 066-15-3745 Order #634880087", "US_SSN", "066-15-3745"),
]


@pytest.mark.parametrize(("text", "entity", "value"), FORMATS)
def test_formats_people_write(detector: PiiDetector, text: str, entity: str, value: str) -> None:
    assert (entity, value) in _found(detector, text)


# Each must come back with nothing (of any type).
LEFT_ALONE: list[str] = [
    "Order #634880087 shipped on Monday",
    "Upgrading from 26.24.25.0 to 11.20.24.19 fixed the leak",
    "Catalog no. 840 391 2728 is out of print",
    "The software license no. 51698616 covers ten seats",
    "Logged at 2024-01-15T10:30:00Z by the cron job",  # a timestamp with no birth word
    "The number 555-201-3344 is fictional",  # possible, not valid, and no phone word
    "The total of 7992 7398 7138 was reconciled",  # Luhn-valid, no issuer, no card word
    "Ticket 501800000009 was closed",  # Maestro-shaped, but a ticket number
    "ISBN 978-0-306-40615-7 and DOI 10.1000/182",
    "import numpy as np; x = np.zeros((1024, 768)); print(x.shape)",
    "2024-05-01 12:00:01,123 INFO [worker-3] job 4f3a9c1e done in 0.52s",
    "SELECT id, total FROM orders WHERE id IN (1234567890, 9876543210) LIMIT 20;",
    "Tracking: 1Z999AA10123456784 via UPS; FedEx 449044304137821",
    "pip install requests==2.31.0 urllib3==1.26.18 && node v18.17.1",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 (HEAD -> main)",
    "id=550e8400-e29b-41d4-a716-446655440000 base64=dGhpcyBpcyBub3QgcGlp==",
    "Price: $1,299.99, was €1.499,00; order total 12,345.67 USD",
]


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_leaves_realistic_text_alone(detector: PiiDetector, text: str) -> None:
    assert _found(detector, text) == []


def test_nearer_negative_word_beats_farther_context(detector: PiiDetector) -> None:
    text = "SSN: 066-15-3745 Order #634880087"
    assert _found(detector, text) == [("US_SSN", "066-15-3745")]


def test_context_window_stops_at_a_sentence_end(detector: PiiDetector) -> None:
    # The same nine digits: named by "SSN" in its own sentence, not across a sentence end.
    assert _found(detector, "My SSN is 234567890") == [("US_SSN", "234567890")]
    assert _found(detector, "I lost my SSN card. The count was 234567890") == []
    # Initials and abbreviations end no sentence.
    assert _found(detector, "NHS no. 943 476 5919") == [("UK_NHS", "943 476 5919")]
    assert ("US_SSN", "234567890") in _found(detector, "SSN of J. Smith: 234567890")


def test_regions_decide_national_formats() -> None:
    gb_only = PiiDetector(["PHONE"], regions=["gb"])
    us_only = PiiDetector(["PHONE"], regions=["US"])
    text = "Glasgow office: 0141 496 0404."
    assert _found(gb_only, text) == [("PHONE", "0141 496 0404")]
    assert _found(us_only, text) == []
    assert gb_only.regions == ("GB",)
    assert PiiDetector().regions == DEFAULT_REGIONS
    # An international number needs no region.
    assert _found(us_only, "London +44 20 7946 0958") == [("PHONE", "+44 20 7946 0958")]


@pytest.mark.parametrize(
    ("regions", "message"),
    [(["XX"], "unknown phone region 'XX'"), ([], "at least one region")],
)
def test_bad_regions(regions: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PiiDetector(regions=regions)


def test_policy_regions_reach_the_detector() -> None:
    (policy,) = load_sources(
        [("p.yaml", "policy_name: p\nrules:\n  - type: pii\n    regions: [gb, DE]\n")]
    )
    (rule,) = policy.rules
    assert isinstance(rule, PiiRule) and rule.regions == ("GB", "DE")
    assert rule.build(policy, NO_SECRETS).detector.regions == ("GB", "DE")
    (default,) = load_sources([("q.yaml", "policy_name: q\nrules:\n  - type: pii\n")])
    (plain,) = default.rules
    assert isinstance(plain, PiiRule)
    assert plain.build(default, NO_SECRETS).detector.regions == DEFAULT_REGIONS


def test_policy_refuses_an_unknown_region() -> None:
    with pytest.raises(PolicyError, match=r"p.yaml:4: .*'regions' item 2: 'XX' is no region"):
        load_sources([("p.yaml", "policy_name: p\nrules:\n  - type: pii\n    regions: [GB, XX]\n")])


@pytest.mark.parametrize("count", [3, 30])  # few values: str.find; many: the scan's candidates
def test_a_value_found_once_is_masked_everywhere(detector: PiiDetector, count: int) -> None:
    numbers = [f"(212) 555-{173 + i:04d}" for i in range(count)]
    named = " ".join(f"Call {n}." for n in numbers)
    # Demoted where they stand ("order" is nearer), found because they were found above; and
    # a leftmost start before the value ("1 " ahead of the area code) hides no copy.
    again = " ".join(f"Order 1 {n} shipped." for n in numbers)
    text = f"{named}\n\n{again}"
    found = [text[m.start : m.end] for m in detector.find(text)]
    for n in numbers:
        assert found.count(n) == 2, n


def test_unicode_mail_pass_is_bounded_per_at_sign(detector: PiiDetector) -> None:
    # Many "@" with non-ASCII around them: each costs a bounded window, none is a mail address.
    text = "ü@" * 5000 + " jörg@example.org"
    assert _found(detector, text) == [("EMAIL", "jörg@example.org")]
