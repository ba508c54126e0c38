"""The PII candidate table: one pattern per shape people write, with its check and scores.

Data only; ``pii.py`` compiles it into one Hyperscan database and ``pii_context.py`` weighs the
words around each candidate. Patterns are Hyperscan syntax over ASCII (non-ASCII code points
reach the scan as "?"); ``pii_email.py`` covers the addresses written in other scripts.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from policy_extproc.detect import pii_phones as ph
from policy_extproc.detect import pii_validators as v
from policy_extproc.detect import pii_wallets as w

# National numbers (no "+") are tried in these regions, in this order, unless a rule says
# otherwise (``regions:``): North America, the British Isles, the largest European, Asian and
# Pacific numbering plans. Each region makes more digit strings "valid", so the list is short.
DEFAULT_REGIONS: tuple[str, ...] = (
    "US", "CA", "GB", "IE", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "IL", "JP", "CN",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rule:
    """One candidate pattern of one type, with the check and scores that make it a match."""

    entity: str
    pattern: str  # Hyperscan syntax, ASCII only
    check: Callable[..., bool]  # (value) -> bool, or (value, regions) -> bool when regional
    base: float  # score of a valid value with no context word before it
    context: float  # score with one
    max_len: int  # longer candidates are rejected, so max_match_len is a true bound
    guarded: bool = True  # demoted when a negative word ("order", "version") is nearer
    joiners: str = "-./"  # glue the match to a neighbour when an alphanumeric follows them
    caseless: bool = False
    # Characters the start extends left over after the scan. The mail pattern starts at "@":
    # a leading unbounded class would make Hyperscan track a start at every letter.
    left: str = ""
    # A weaker check that is enough once a context word of the type is the nearest word: a
    # dialable but unassigned number after "phone", a Luhn-valid number after "card".
    loose: Callable[..., bool] | None = None
    regional: bool = False  # check and loose take the detector's phone regions too
    dated: bool = False  # check takes the latest year a birth date may lie in (latest_year)
    # A digit group right before or after (one space, dash or dot away) makes the candidate
    # a piece of a longer number ("1939 3606 0524 7493" holds no phone number "0524 7493").
    digit_run: bool = False


# fmt: off
# Context words, as regular-expression fragments matched as whole words in lower case.
CONTEXT: dict[str, tuple[str, ...]] = {
    "EMAIL": ("e-?mail", "mail", "contact"),
    "PHONE": (r"phone", "tel", "telephone", "mobile", "cell", "call", "text me", "sms", "fax",
              "whatsapp", "contact", "reach", r"ph\.?", r"mob\.?", "dial", "landline",
              r"tel\.", "ring", "call me at", "phone number", "ext", "voicemail",
              "leave a message( at| on)?", "message me( at| on)?",
              # "my number is", "my US number", "my Israeli number", "Japanese mobile number"
              "my number", "my (?:us|uk|gb|eu|cn|in|de|fr|es|it|nl|jp|il|au|ca|ie|br|mx) number",
              "[a-z]+(?:ese|ian|ish|li|an|ch) (?:phone |mobile |cell )?number"),
    "CREDIT_CARD": ("cards?", "credit", "debit", "visa", "master ?card", "amex",
                    "american express", "discover", "cc", "pan", "pay", "paid", "payment",
                    "charge", "maestro", "jcb", "uatp", "dankort"),
    "US_SSN": ("ssn", "ss#", "social security( number| no\\.?)?"),
    "IBAN": ("iban", "account", "bank", "transfer", "wire"),
    "IP_ADDRESS": ("ip", "ipv4", "ipv6", "address", "host", "server", "client"),
    "US_PASSPORT": ("passport( number| no\\.?| #)?",),
    # A licence alone (software, MIT) is no driver's licence: the word must say driving.
    "US_DRIVER_LICENSE": ("driver'?s?'? licen[cs]e( number| no\\.?| #)?", "driving licen[cs]e",
                          "dl", "dl#", "dln", "driver'?s?'? lic\\.?( ?no\\.?| ?#)?"),
    "DATE_OF_BIRTH": ("dob", r"d\.o\.b\.?", "date of birth", "birth ?date", "born( on| in)?",
                      "birthday", "b-?day"),
    "US_BANK_ROUTING": ("routing", "aba", "rtn", "transit", "routing (number|no\\.?|#)"),
    "US_ITIN": ("itin", "taxpayer", "tax id", "tin", "individual taxpayer identification"),
    "UK_NHS": ("nhs", "national health service", "nhs (number|no\\.?|#)"),
    "CRYPTO_WALLET": ("bitcoin", "btc", "wallet", "ethereum", "eth", "address", "crypto",
                      "send", "usdt", "usdc"),
    "API_SECRET": ("key", "token", "secret", "api", "bearer", "password", "credential"),
}
# Words that name something else when they stand just before a number.
NEGATIVE = ("order", "orders", "invoice", "inv", "ref", "reference", "tracking", "ticket",
            "transaction", "txn", "sku", "po", "receipt", "confirmation", "booking", "case",
            "build", "version", "ver", "v", "release", "firmware", "patch", "section",
            "chapter", "step", "serial", "model", "part", "isbn", "item", "product",
            "catalog", "catalogue", "cat", "upgrad(e|ed|es|ing)", "downgrad(e|ed|es|ing)",
            "fedex", "ups", "usps", "dhl", "commit", "checkout", "sha", "hash", "rev", "revision")

_LOCAL_PART = string.ascii_letters + string.digits + "._%+-"
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_B58 = "[1-9A-HJ-NP-Za-km-z]"
# An extension after a number: "x123", " ext. 12", " extension 4" (libphonenumber reads them).
_EXT = r"(?: ?(?:x|ext\.?|extn\.?|extension) ?\d{1,6})?"
_GROUPS = r"(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}"
# fmt: on


def _key(mixed_case: bool) -> Callable[[str], bool]:
    return partial(v.is_random_token, mixed_case=mixed_case)


def _secret(pattern: str, check: Callable[[str], bool], base: float, max_len: int) -> Rule:
    # A provider key says what it is: no context needed, none of the "order" demotion.
    return Rule("API_SECRET", pattern, check, base, 0.99, max_len, guarded=False, joiners="-_.")


def _always(_value: str) -> bool:
    return True


def _with_plus(value: str) -> bool:
    return ph.is_phone("+" + value, None)


def _phone(pattern: str, base: float, context: float, max_len: int, **kw: object) -> Rule:
    kw.setdefault("check", ph.is_national_phone)
    kw.setdefault("regional", True)
    kw.setdefault("loose", ph.is_possible_phone)
    kw.setdefault("digit_run", True)
    return Rule("PHONE", pattern, base=base, context=context, max_len=max_len, caseless=True,
                **kw)  # type: ignore[arg-type]  # fmt: skip


_r = Rule


def _date(pattern: str, max_len: int, caseless: bool = False) -> Rule:
    return Rule("DATE_OF_BIRTH", pattern, v.is_birth_date, 0.0, 0.85, max_len, caseless=caseless,
                dated=True)  # fmt: skip


def _licence(pattern: str, max_len: int) -> Rule:
    return Rule("US_DRIVER_LICENSE", pattern, v.is_driver_license, 0.0, 0.8, max_len, dated=True)


_PHONE_INTL = partial(ph.is_phone, region=None)
# fmt: off
RULES: tuple[Rule, ...] = (
    _r("EMAIL", r"@(?:[A-Za-z0-9-]+\.)+(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9-]+)\b", v.is_email,
       0.95, 0.95, 254, guarded=False, joiners="-", left=_LOCAL_PART),
    # International: "+" and a country code, or an exit prefix ("00", "011") instead of "+".
    _phone(rf"\+\d{{1,3}}{_GROUPS}{_EXT}\b", 0.8, 0.95, 48, check=_PHONE_INTL,
           regional=False),
    _phone(rf"\b(?:00|011)[ .-]?[1-9]\d{{0,2}}{_GROUPS}{_EXT}\b", 0.7, 0.95, 50,
           check=ph.is_dialled_phone, regional=False),
    # A country code without "+" ("91-415-555-0132"): four groups, valid once "+" is added.
    _phone(r"\b[1-9]\d{0,2}[ .-]\d{2,4}[ .-]\d{3,4}[ .-]\d{4}\b", 0.5, 0.9, 18,
           check=_with_plus, regional=False),
    # North American 3-3-4, and national formats with a trunk "0" (UK, DE, FR, IL, JP, ...).
    _phone(rf"(?:\b1[ .-]?)?(?:\(\d{{3}}\)[ .-]?|\b\d{{3}}[ .-])\d{{3}}[ .-]\d{{4}}{_EXT}\b",
           0.7, 0.95, 36, check=ph.is_nanp_phone),
    _phone(rf"(?:\(0\d{{1,4}}\)|\b0\d{{1,4}}[ .-])(?:[ .-]?\d{{2,8}}){{1,4}}{_EXT}\b", 0.6, 0.95,
           40),
    # Written without separators, a national number is whole: ten or eleven digits.
    _phone(r"\b0\d{9,10}\b", 0.5, 0.95, 11),
    _phone(r"\b\d{10,11}\b", 0.3, 0.85, 11),
    _r("CREDIT_CARD", r"\b(?:\d[ -]?){11,18}\d\b", v.is_credit_card, 0.9, 0.98, 23,
       loose=v.is_card_shaped),
    _r("US_SSN", r"\b\d{3}-\d{2}-\d{4}\b", v.is_us_ssn, 0.85, 0.95, 11),
    # 3-2-4 is the SSN's own grouping: above a national phone number that happens to fit it.
    _r("US_SSN", r"\b\d{3}[ .]\d{2}[ .]\d{4}\b", v.is_us_ssn, 0.65, 0.95, 11),
    _r("US_SSN", r"\b\d{9}\b", v.is_us_ssn, 0.3, 0.85, 9),
    _r("US_ITIN", r"\b\d{3}-\d{2}-\d{4}\b", v.is_us_itin, 0.85, 0.95, 11),
    _r("US_ITIN", r"\b\d{3}[ .]\d{2}[ .]\d{4}\b", v.is_us_itin, 0.6, 0.95, 11),
    _r("US_ITIN", r"\b\d{9}\b", v.is_us_itin, 0.3, 0.85, 9),
    _r("IBAN", r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,3})?\b", v.is_iban,
       0.95, 0.98, 42, guarded=False),
    # Addresses, with a CIDR length ("/24") or an IPv6 zone ("%eth0") when one follows.
    _r("IP_ADDRESS", r"\b(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?\b", v.is_ipv4, 0.85, 0.95, 18,
       joiners="."),
    _r("IP_ADDRESS", r"(?:[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}"
       r"(?:%[A-Za-z0-9]{1,15}|/\d{1,3})?", v.is_ipv6, 0.85, 0.95, 62, joiners="."),
    _r("IP_ADDRESS", r"::(?:\d{1,3}\.){3}\d{1,3}\b", v.is_ipv6, 0.85, 0.95, 17, joiners="."),
    _r("US_PASSPORT", r"\b(?:[A-Za-z]\d{8}|\d{9})\b", v.is_us_passport, 0.0, 0.85, 9),
    # State formats are too many to tell apart without context: shapes that cover them.
    _licence(r"\b[A-Za-z]{0,2}\d{5,14}\b", 16),
    _licence(r"\b[A-Za-z]-?\d{3}(?:-\d{1,4}){2,4}\b", 20),
    _licence(r"\b\d{2,3} \d{3} \d{3}\b", 11),
    _licence(r"\b\d{2}[A-Za-z]{3}\d{5}\b", 10),
    _date(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b", 10),
    _date(r"\b\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})\b", 10),
    # ISO 8601 date-times and month-year dates: birth dates only next to a birth word.
    _date(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?",
          35),
    _date(r"\b(?:\d{1,2}[/.-]\d{4}|\d{4}-\d{2})\b", 7),
    _date(rf"\b{_MONTH}\.?,? \d{{4}}\b", 16, caseless=True),
    _date(rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", 24, caseless=True),
    _date(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}\b", 27,
          caseless=True),
    _date(rf"\b\d{{1,2}}-{_MONTH}-\d{{4}}\b", 17, caseless=True),
    _r("US_BANK_ROUTING", r"\b\d{9}\b", v.is_aba_routing, 0.2, 0.9, 9),
    # The 4-4-1 grouping is a routing number's own (cheques, forms): no context needed.
    _r("US_BANK_ROUTING", r"\b\d{4}[ -]\d{4}[ -]\d\b", v.is_aba_routing, 0.6, 0.9, 11),
    _r("UK_NHS", r"\b\d{3} \d{3} \d{4}\b", v.is_uk_nhs, 0.6, 0.95, 12),
    _r("UK_NHS", r"\b\d{3}-\d{3}-\d{4}\b", v.is_uk_nhs, 0.3, 0.9, 12),
    _r("UK_NHS", r"\b\d{10}\b", v.is_uk_nhs, 0.2, 0.9, 10),
    _r("CRYPTO_WALLET", rf"\b[13]{_B58}{{25,34}}\b", w.is_btc_base58, 0.95, 0.98, 35,
       guarded=False),
    _r("CRYPTO_WALLET", r"\b(?:bc1|BC1)[02-9ac-hj-np-zAC-HJ-NP-Z]{6,87}\b", w.is_btc_bech32,
       0.95, 0.98, 90, guarded=False),
    _r("CRYPTO_WALLET", r"\b0x[0-9a-fA-F]{40}\b", w.is_eth_address, 0.9, 0.98, 42,
       guarded=False),
    _secret(r"\bsk-[A-Za-z0-9]{48}\b", _key(True), 0.95, 51),
    _secret(r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}\b", _key(True), 0.95, 300),
    _secret(r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{40,}\b", _key(True), 0.95, 300),
    _secret(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", _always, 0.95, 20),
    _secret(r"\bgh[pousr]_[A-Za-z0-9]{36}\b", _key(True), 0.95, 40),
    _secret(r"\bgithub_pat_[A-Za-z0-9_]{50,}\b", _key(True), 0.95, 120),
    _secret(r"\bxox[bpars]-[A-Za-z0-9-]{10,}\b", _key(False), 0.9, 200),
    _secret(r"\b[sr]k_live_[A-Za-z0-9]{20,}\b", _key(True), 0.95, 120),
    _secret(r"\bAIza[A-Za-z0-9_-]{35}", _key(True), 0.95, 39),
    _secret(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\b", v.is_jwt, 0.9, 8192),
    # The body may hold single dashes (PEM headers) but never the "-----" of an END line.
    _secret(r"-----BEGIN[A-Z ]{0,20}PRIVATE KEY-----(?:[^-]|-[^-])+"
            r"-----END[A-Z ]{0,20}PRIVATE KEY-----", _always, 0.99, 8192),
)
# fmt: on
