"""PII validators: checksums, number plans and calendars, value by value."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn as stdnum_luhn

from policy_extproc.detect import pii_validators as v
from policy_extproc.detect import pii_wallets as w

# The calendar checks are told the current year (the detector's latest_birth_year).
_born = partial(v.is_birth_date, latest_year=2026)
_licence = partial(v.is_driver_license, latest_year=2026)

CASES: list[tuple[Callable[[str], bool], str, bool]] = [
    # Payment cards: grouping, issuer range for the length, Luhn.
    (v.is_credit_card, "4111 1111 1111 1111", True),
    (v.is_credit_card, "4111-1111-1111-1111", True),
    (v.is_credit_card, "4111111111111111", True),
    (v.is_credit_card, "378282246310005", True),  # Amex, 15
    (v.is_credit_card, "3782 822463 10005", True),  # Amex 4-6-5
    (v.is_credit_card, "5555555555554444", True),  # Mastercard
    (v.is_credit_card, "2223003122003222", True),  # Mastercard 2-series
    (v.is_credit_card, "6011111111111117", True),  # Discover
    (v.is_credit_card, "3530111333300000", True),  # JCB
    (v.is_credit_card, "30569309025904", True),  # Diners, 14
    (v.is_credit_card, "4222222222222", True),  # Visa, 13
    (v.is_credit_card, "4111111111111112", False),  # Luhn fails
    (v.is_credit_card, "1234567812345670", False),  # Luhn passes, no issuer starts with 1
    (v.is_credit_card, "4111 1111 1111 111 1", False),  # no card is grouped 4-4-4-3-1
    (v.is_credit_card, "4111-1111 1111-1111", False),  # mixed separators
    (v.is_credit_card, "378282246310005 ", False),
    (v.is_credit_card, "3782822463100050", False),  # Amex prefix, wrong length
    # SSN: SSA area/group/serial rules.
    (v.is_us_ssn, "123-45-6789", True),
    (v.is_us_ssn, "123 45 6789", True),
    (v.is_us_ssn, "123456789", True),
    (v.is_us_ssn, "000-12-3456", False),
    (v.is_us_ssn, "666-12-3456", False),
    (v.is_us_ssn, "900-12-3456", False),
    (v.is_us_ssn, "123-00-4567", False),
    (v.is_us_ssn, "123-45-0000", False),
    (v.is_us_ssn, "078-05-1120", False),  # the Woolworth wallet card
    (v.is_us_ssn, "123-45 6789", False),
    # ITIN: 9xx, group in the IRS ranges.
    (v.is_us_itin, "912-70-1234", True),
    (v.is_us_itin, "999-99-9999", True),
    (v.is_us_itin, "900 50 1234", True),
    (v.is_us_itin, "912-93-1234", False),
    (v.is_us_itin, "912-49-1234", False),
    (v.is_us_itin, "912-89-1234", False),
    (v.is_us_itin, "812-70-1234", False),
    # IBAN: registry length and mod 97.
    (v.is_iban, "GB82 WEST 1234 5698 7654 32", True),
    (v.is_iban, "GB82WEST12345698765432", True),
    (v.is_iban, "DE89370400440532013000", True),
    (v.is_iban, "FR1420041010050500013M02606", True),
    (v.is_iban, "NO9386011117947", True),
    (v.is_iban, "GB82 WEST 1234 5698 7654 33", False),  # mod 97 fails
    (v.is_iban, "XX82WEST12345698765432", False),  # no such country
    (v.is_iban, "DE8937040044053201300", False),  # one short for Germany
    # ABA routing: Federal Reserve prefix and 3-7-1 checksum.
    (v.is_aba_routing, "021000021", True),
    (v.is_aba_routing, "011000015", True),
    (v.is_aba_routing, "121000358", True),
    (v.is_aba_routing, "322271627", True),
    (v.is_aba_routing, "021000022", False),
    (v.is_aba_routing, "131000024", False),  # prefix 13 is unassigned
    (v.is_aba_routing, "000000000", False),
    # NHS: mod 11.
    (v.is_uk_nhs, "943 476 5919", True),
    (v.is_uk_nhs, "9434765919", True),
    (v.is_uk_nhs, "943-476-5919", True),
    (v.is_uk_nhs, "9434765918", False),
    (v.is_uk_nhs, "0000000000", False),
    # Mail.
    (v.is_email, "john.doe@example.com", True),
    (v.is_email, "a+tag@sub.example.co.uk", True),
    (v.is_email, "icon@2x.png", False),
    (v.is_email, "john..doe@example.com", False),
    (v.is_email, "john@-example.com", False),
    (v.is_email, "x" * 65 + "@example.com", False),
    # IP addresses.
    (v.is_ipv4, "192.168.0.1", True),
    (v.is_ipv4, "0.0.0.0", True),
    (v.is_ipv4, "256.1.1.1", False),
    (v.is_ipv4, "01.2.3.4", False),
    (v.is_ipv6, "2001:db8::1", True),
    (v.is_ipv6, "fe80::1", True),
    (v.is_ipv6, "2001:0db8:85a3:0000:0000:8a2e:0370:7334", True),
    (v.is_ipv6, "::ffff:192.168.1.1", True),
    (v.is_ipv6, "12:30:45", False),  # a clock
    (v.is_ipv6, "dead::beef", False),  # more likely code than an address
    (v.is_ipv6, "a::b::c", False),
    # Birth dates: real, past (up to the year it is), 1900 on.
    (_born, "1985-03-12", True),
    (_born, "03/12/1985", True),
    (_born, "31/12/1985", True),  # day first
    (_born, "12.03.1985", True),
    (_born, "3/5/85", True),
    (_born, "March 12, 1985", True),
    (_born, "Sept. 3 1999", True),
    (_born, "12th of March 1985", True),
    (_born, "12-Mar-1985", True),
    (_born, "31-Feb-1985", False),
    (_born, "1985-02-30", False),
    (_born, "13/13/1985", False),
    (_born, "2999-01-01", False),
    (_born, "2026-12-31", True),  # this year
    (_born, "2027-01-01", False),  # next year: not born yet
    (_born, "3/5/26", True),
    (_born, "3/5/27", False),  # two digits: 2027
    (_born, "1850-01-01", False),
    (_born, "1985-03/12", False),  # mixed separators
    (_born, "Smarch 12, 1985", False),
    # Licences and passports (shape only: the context makes them).
    (_licence, "D1234567", True),
    (_licence, "A123-4567-8901", True),
    (_licence, "1985-03-12", False),  # a date, not a licence
    (_licence, "AB1234", False),
    (_licence, "00000000", False),
    (v.is_us_passport, "123456789", True),
    (v.is_us_passport, "A12345678", True),
    (v.is_us_passport, "000000000", False),
    # Secrets.
    (v.is_jwt, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", True),
    (v.is_jwt, "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2ln", False),  # header without "alg"
    (v.is_jwt, "eyJub3QganNvbg.eyJzdWIiOiIxIn0.c2ln", False),  # header is not JSON
    (v.is_random_token, "sk_live_4eC39HqLyjWDarjtT1zdp7dc", True),
    (v.is_random_token, "sk_live_averyreadableslugwithoutdigits", False),
    # Wallets.
    (w.is_btc_base58, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", True),  # P2PKH
    (w.is_btc_base58, "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", True),  # P2SH
    (w.is_btc_base58, "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", True),  # genesis block
    (w.is_btc_base58, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", False),  # checksum
    (w.is_btc_base58, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN0", False),  # 0 is not base58
    (w.is_btc_bech32, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", True),
    (w.is_btc_bech32, "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", True),  # BIP-173 vector
    (w.is_btc_bech32, "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297", True),
    (w.is_btc_bech32, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdr", False),  # checksum
    (w.is_btc_bech32, "bc1Qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", False),  # mixed case
    # v0 program in bech32m (BIP-350 says invalid)
    (w.is_btc_bech32, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh", False),
    (w.is_eth_address, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", True),  # EIP-55 vectors
    (w.is_eth_address, "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", True),
    (w.is_eth_address, "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", True),
    (w.is_eth_address, "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb", True),
    (w.is_eth_address, "0x52908400098527886e0f7030069857d2e4169ee7", True),  # no checksum
    (w.is_eth_address, "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed", False),  # one case flipped
    (w.is_eth_address, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe", False),
]


@pytest.mark.parametrize(("check", "value", "expected"), CASES)
def test_validator(check: Callable[[str], bool], value: str, expected: bool) -> None:
    assert check(value) is expected


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("+44 20 7946 0958", None, True),
        ("+49 30 901820", None, True),
        ("+81 3-1234-5678", None, True),
        ("(212) 555-0173", "US", True),
        ("555-123-4567", "US", False),  # 555 is no area code
        ("+1 123 456 7890", None, False),
        ("+12", None, False),
    ],
)
def test_phone(value: str, region: str | None, expected: bool) -> None:
    assert v.is_phone(value, region) is expected


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
    ],
)
def test_keccak256(data: bytes, digest: str) -> None:
    # Keccak-256 as Ethereum uses it, which is not hashlib's FIPS 202 sha3_256.
    assert w.keccak256(data).hex() == digest


def test_luhn() -> None:
    assert v.luhn_ok("79927398713")
    assert not v.luhn_ok("79927398710")


@given(st.text(alphabet="0123456789", min_size=1, max_size=24))
def test_luhn_agrees_with_stdnum(digits: str) -> None:
    # Ours is written out for speed (see luhn_ok); stdnum is the reference.
    assert v.luhn_ok(digits) == stdnum_luhn.is_valid(digits)
