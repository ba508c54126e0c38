"""Checks that turn a pattern candidate into a PII value: checksums, number plans, calendars.

Each check takes the candidate exactly as it stands in the text and answers yes or no; none of
them looks at context (the detector does that). Blockchain checksums live in ``pii_wallets``,
mail and IP addresses in ``pii_network``, phone numbers in ``pii_phones``. Standard check
digits (Luhn, IBAN mod 97, ABA, NHS mod 11, SSA rules) come from python-stdnum; what stays here
is what it does not know: issuer ranges and card groupings, the IRS's current ITIN groups, the
shapes people write.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import date

from stdnum.gb import nhs as _nhs
from stdnum.iso7064 import mod_97_10 as _mod_97_10
from stdnum.us import rtn as _rtn
from stdnum.us import ssn as _ssn

# Mail and IP addresses live in pii_network, phone numbers in pii_phones; their checks stay
# importable from here, where the rule table (pii_rules) finds every validator.
from policy_extproc.detect.pii_network import is_email as is_email
from policy_extproc.detect.pii_network import is_ipv4 as is_ipv4
from policy_extproc.detect.pii_network import is_ipv6 as is_ipv6
from policy_extproc.detect.pii_phones import is_phone as is_phone

_SEPARATORS = str.maketrans("", "", " -.")
# Types whose values people write in groups: allow-globs and pseudonyms see them compacted.
GROUPED = frozenset(
    {"PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "US_BANK_ROUTING", "US_ITIN", "UK_NHS"}
)


def compact(value: str) -> str:
    """The value without the spaces, dashes and dots people group digits with."""
    return value.translate(_SEPARATORS)


def _all_same(digits: str) -> bool:
    return digits == digits[0] * len(digits)


# --- payment cards ---------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """The Luhn mod-10 check (ISO/IEC 7812-1 annex B) over a string of digits.

    Written out rather than stdnum's ``luhn.is_valid``: it runs on every card-shaped
    candidate, and stdnum's general alphabet handling costs four times as much (measured
    with ``benchmarks/pii.py``); ``tests/unit/test_pii_validators.py`` checks both agree.
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_MAESTRO = frozenset(range(12, 20))
# Issuer identification number ranges (ISO/IEC 7812) with the lengths each network issues.
_IIN: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),  # Visa
    (51, 55, frozenset({16})),  # Mastercard
    (2221, 2720, frozenset({16})),  # Mastercard 2-series
    (34, 34, frozenset({15})),  # American Express
    (37, 37, frozenset({15})),
    (300, 305, frozenset({14, 16, 17, 18, 19})),  # Diners Club
    (36, 36, frozenset({14, 16, 17, 18, 19})),
    (38, 39, frozenset({14, 16, 17, 18, 19})),
    (6011, 6011, frozenset({16, 17, 18, 19})),  # Discover
    (644, 649, frozenset({16, 17, 18, 19})),
    (65, 65, frozenset({16, 17, 18, 19})),
    (3528, 3589, frozenset({16, 17, 18, 19})),  # JCB
    (62, 62, frozenset({16, 17, 18, 19})),  # UnionPay
    (2200, 2204, frozenset({16, 17, 18, 19})),  # Mir
    (1800, 1800, frozenset({15})),  # JCB's original 15-digit ranges
    (2131, 2131, frozenset({15})),
    (5019, 5019, frozenset({16})),  # Dankort
    (5018, 5018, _MAESTRO),  # Maestro issues 12 to 19 digits
    (5020, 5020, _MAESTRO),
    (5038, 5038, _MAESTRO),
    (5893, 5893, _MAESTRO),
    (6304, 6304, _MAESTRO),
    (6759, 6763, _MAESTRO),
)

# Digit groupings printed on cards and in forms: 4-4-4-4 (most), 4-6-5 (Amex), 4-6-4 (Diners),
# and the 4-4-4-4-x forms of 17-19 digit cards.
_GROUPINGS = frozenset(
    {(4, 4, 4), (4, 4, 4, 1), (4, 6, 5), (4, 6, 4), (4, 4, 4, 2), (4, 4, 4, 3), (4, 4, 4, 4)}
    | {(4, 4, 4, 4, n) for n in (1, 2, 3)}
    | {(4, 4, 5), (4, 4, 4, 4, 3)}
)


def _card_digits(value: str) -> str | None:
    """12-19 digits, not all one digit, in a usual grouping when grouped, passing Luhn."""
    seps = {ch for ch in value if not ch.isdigit()}
    if len(seps) > 1:
        return None
    digits = compact(value)
    if not 12 <= len(digits) <= 19 or _all_same(digits):
        return None
    if seps:
        groups = tuple(len(g) for g in value.split(seps.pop()))
        if groups not in _GROUPINGS:
            return None
    return digits if luhn_ok(digits) else None


def is_credit_card(value: str) -> bool:
    """12-19 digits in a usual grouping, a known issuer range for that length, and Luhn."""
    digits = _card_digits(value)
    return digits is not None and any(
        lo <= int(digits[: len(str(lo))]) <= hi and len(digits) in lengths
        for lo, hi, lengths in _IIN
    )


def is_card_shaped(value: str) -> bool:
    """Luhn-valid 12-19 digits in a card grouping: a card number once a card word names it.

    This is also how UATP airline cards (15 digits starting with 1) are found: one in ten
    15-digit numbers starting with 1 passes Luhn (FedEx tracking numbers do), so without a
    card word ("UATP", "card") such a number is left alone.
    """
    return _card_digits(value) is not None


# --- US taxpayer numbers ---------------------------------------------------------------------

# SSA: these two were printed in advertisements and wallets and were never valid for a person.
_SSN_VOID = frozenset({"078051120", "219099999"})


def _nine_digits(value: str) -> str | None:
    # One separator kind throughout: "078-05-1123", "078.05.1123", "078 05 1123", never mixed.
    seps = {ch for ch in value if not ch.isdigit()}
    digits = compact(value)
    if len(digits) != 9 or len(seps) > 1:
        return None
    return digits


def is_us_ssn(value: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    d = _nine_digits(value)
    return d is not None and d not in _SSN_VOID and _ssn.is_valid(d)


def is_us_itin(value: str) -> bool:
    # Not stdnum's: it predates the IRS's 2011 groups 50-65.
    """IRS: 9xx, then a group in 50-65, 70-88, 90-92 or 94-99, then four digits."""
    d = _nine_digits(value)
    if d is None or d[0] != "9":
        return False
    g = int(d[3:5])
    return 50 <= g <= 65 or 70 <= g <= 88 or 90 <= g <= 92 or 94 <= g <= 99


# --- bank numbers -----------------------------------------------------------------------------

# ISO 13616 IBAN registry (SWIFT, release 2024): total length per country code.
_IBAN_REGISTRY = (
    "AD:24 AE:23 AL:28 AT:20 AZ:28 BA:20 BE:16 BG:22 BH:22 BI:27 BR:29 BY:28 CH:21 CR:22 "
    "CY:28 CZ:24 DE:22 DJ:27 DK:18 DO:28 EE:20 EG:29 ES:24 FI:18 FK:18 FO:18 FR:27 GB:22 "
    "GE:22 GI:23 GL:18 GR:27 GT:28 HR:21 HU:28 IE:22 IL:23 IQ:23 IS:26 IT:27 JO:30 KW:30 "
    "KZ:20 LB:28 LC:32 LI:21 LT:20 LU:20 LV:21 LY:25 MC:27 MD:24 ME:22 MK:19 MN:20 MR:27 "
    "MT:31 MU:30 NI:28 NL:18 NO:15 OM:23 PK:24 PL:28 PS:29 PT:25 QA:29 RO:24 RS:22 RU:33 "
    "SA:24 SC:31 SD:18 SE:24 SI:19 SK:24 SM:27 SO:23 ST:25 SV:28 TL:23 TN:24 TR:26 UA:29 "
    "VA:22 VG:24 XK:20 YE:30"
)
_IBAN_LENGTH = {c: int(n) for c, n in (item.split(":") for item in _IBAN_REGISTRY.split())}


def is_iban(value: str) -> bool:
    """ISO 13616: registered country, its length and BBAN format, and mod 97 (ISO 7064)."""
    seps = {ch for ch in value if not ch.isalnum()}
    if len(seps) > 1 or not seps <= {" ", "-"}:
        return False
    iban = value.replace(" ", "").replace("-", "")
    # The registry length first: a cheap no for most candidates before stdnum's full check.
    if _IBAN_LENGTH.get(iban[:2]) != len(iban):
        return False
    # stdnum's ISO 7064 mod 97-10 over the rearranged number. Not its full ``iban.validate``:
    # its BBAN registry lookup costs six times the rest, and its national checks refuse banks
    # it does not list (Belgian codes, ...); the mod 97 already catches the typos.
    return iban.isalnum() and _mod_97_10.is_valid(iban[4:] + iban[:4])


_ABA_GROUPED = re.compile(r"\d{4}([- ])\d{4}\1\d")


def is_aba_routing(value: str) -> bool:
    """ABA routing number: a valid Federal Reserve prefix and the 3-7-1 weighted checksum."""
    # Written bare or in the 4-4-1 form of cheques and forms ("3222-7162-7").
    if not value.isdigit() and not _ABA_GROUPED.fullmatch(value):
        return False
    d = compact(value)
    if len(d) != 9 or not d.isdigit() or _all_same(d):
        return False
    prefix = int(d[:2])
    # 00 government, 01-12 Federal Reserve districts, 21-32 thrifts, 61-72 electronic, 80 travellers
    if not (prefix <= 12 or 21 <= prefix <= 32 or 61 <= prefix <= 72 or prefix == 80):
        return False
    return _rtn.is_valid(d)


def is_uk_nhs(value: str) -> bool:
    """NHS number: ten digits whose tenth is the mod-11 check of the first nine (weights 10..2)."""
    d = compact(value)
    return len(d) == 10 and d.isdigit() and not _all_same(d) and _nhs.is_valid(d)


# --- identity documents -----------------------------------------------------------------------

_MONTHS = {
    m: i
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for m in names
}
_NUMERIC_DATE = re.compile(r"(\d{1,4})([-/.])(\d{1,2})\2(\d{1,4})")
_WORDY_DATE = re.compile(
    r"(?:(?P<d1>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m1>[a-z]+)\.?,?\s+"
    r"|(?P<m2>[a-z]+)\.?\s+(?P<d2>\d{1,2})(?:st|nd|rd|th)?,?\s+"
    r"|(?P<d3>\d{1,2})-(?P<m3>[a-z]+)-)(?P<y>\d{4})",
    re.IGNORECASE,
)


# The latest year a birth date may lie in when the detector was not told the current year:
# none is later, so a date is never let through for being "in the future" (it is masked).
ANY_YEAR = 9999


def _real_date(year: int, month: int, day: int, latest_year: int) -> bool:
    if year < 100:  # two-digit years in birth dates: 30-99 are the 1900s
        year += 1900 if year >= 30 else 2000
    if not 1900 <= year <= latest_year:
        return False
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


# ISO 8601 date-times ("1985-03-12T00:00:00Z"): the date part is what is born on.
_ISO_TIME = re.compile(r"[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?")
# Partial dates: month and year ("03/1985", "1985-03", "March 1985").
_MONTH_YEAR = re.compile(r"(?:(\d{1,2})[/.-](\d{4})|(\d{4})-(\d{2})|([a-z]+)\.?,? +(\d{4}))", re.I)


def is_birth_date(value: str, latest_year: int = ANY_YEAR) -> bool:
    """A real calendar date from 1900 to ``latest_year`` (the current year: a birth date is not
    in the future) in ISO, US, European or spelled-out order.

    Also an ISO 8601 date-time (its date) and a month with its year: the detector only calls
    them birth dates next to a birth word. The year is handed in (``PiiDetector``'s
    ``latest_birth_year``, from the edge that compiles): the core reads no clock.
    """
    t = _ISO_TIME.search(value)
    if t is not None and t.end() == len(value) and t.start() == 10:
        value = value[:10]
    p = _MONTH_YEAR.fullmatch(value)
    if p is not None:
        if p.group(5):
            month = _MONTHS.get(p.group(5).lower())
            return month is not None and _real_date(int(p.group(6)), month, 1, latest_year)
        month_s, year_s = (p.group(1), p.group(2)) if p.group(1) else (p.group(4), p.group(3))
        return _real_date(int(year_s), int(month_s), 1, latest_year)
    m = _NUMERIC_DATE.fullmatch(value)
    if m:
        a, b, c = m.group(1), m.group(3), m.group(4)
        if len(a) == 4:
            return _real_date(int(a), int(b), int(c), latest_year)
        if len(a) > 2 or len(c) not in (2, 4):
            return False
        # Month-first (US) or day-first (most elsewhere): either reading will do.
        y = int(c)
        return _real_date(y, int(a), int(b), latest_year) or _real_date(
            y, int(b), int(a), latest_year
        )
    w = _WORDY_DATE.fullmatch(value)
    if w is None:
        return False
    month = _MONTHS.get((w.group("m1") or w.group("m2") or w.group("m3")).lower())
    day = int(w.group("d1") or w.group("d2") or w.group("d3"))
    return month is not None and _real_date(int(w.group("y")), month, day, latest_year)


def is_driver_license(value: str, latest_year: int = ANY_YEAR) -> bool:
    """Shaped like a state licence number (5+ digits) and not a date that happens to fit."""
    digits = sum(c.isdigit() for c in value)
    return digits >= 5 and not _all_same(compact(value)) and not is_birth_date(value, latest_year)


def is_us_passport(value: str) -> bool:
    """State Department books: nine digits, or since 2021 a letter and eight digits."""
    return not _all_same(value[-8:])


# --- secrets ----------------------------------------------------------------------------------


def _b64url_json(part: str) -> object:
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def is_jwt(value: str) -> bool:
    """RFC 7519: base64url header that decodes to a JSON object naming its "alg"."""
    header, _, rest = value.partition(".")
    decoded = _b64url_json(header)
    return isinstance(decoded, dict) and "alg" in decoded and "." in rest


_KEY_PREFIX = re.compile(r"(?:[a-z]+[-_])+")


def is_random_token(value: str, *, mixed_case: bool = True) -> bool:
    """The random part of a provider key: two of upper, lower and digits (base62), or digits."""
    prefix = _KEY_PREFIX.match(value)
    tail = value[prefix.end() :] if prefix else value
    has_digit = any(c.isdigit() for c in tail)
    if not mixed_case:
        return has_digit
    return has_digit + any(c.isupper() for c in tail) + any(c.islower() for c in tail) >= 2
