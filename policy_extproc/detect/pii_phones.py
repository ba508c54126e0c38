"""Phone numbers: libphonenumber's plans, read internationally or in the rule's regions.

``is_phone`` is the assignable-number test; the others read the shapes people write (an exit
prefix instead of "+", a national number in one of several regions, a North American 3-3-4)
and, for numbers a phone word names, the weaker "possible" test.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

import phonenumbers


@lru_cache(maxsize=4096)
def is_phone(value: str, region: str | None) -> bool:
    """A number the ITU plan (via libphonenumber metadata) says is assignable, not just dialable.

    The slowest validator (~25 us a number) and a pure function: cached, because a chat resends
    its whole history every turn, so the same numbers come back request after request.
    """
    number = _parse_phone(value, region)
    return number is not None and phonenumbers.is_valid_number(number)


def _parse_phone(value: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None


_EXIT_PREFIX = re.compile(r"\(?(?:00|011)\)?[ .-]?")


def dialled(value: str) -> str:
    """The number with an international exit prefix ("00", or "011" from North America) as "+"."""
    m = _EXIT_PREFIX.match(value)
    return "+" + value[m.end() :] if m else value


def is_dialled_phone(value: str) -> bool:
    """An international number written with an exit prefix: "001-202-555-0143", "0044 20 ..."."""
    plus = dialled(value)
    return plus != value and is_phone(plus, None)


@lru_cache(maxsize=4096)
def is_national_phone(value: str, regions: tuple[str, ...]) -> bool:
    """A number in national format (no "+") that is valid in one of ``regions``."""
    digits = _national_digits(value)
    return any(_may_be_national(digits, r) and is_phone(value, r) for r in regions)


_EXTENSION = re.compile(r"\s*(?:x|ext|extn|extension)\b.*$|\s*x\d+$", re.IGNORECASE)


_NON_DIGITS = re.compile(r"\D+")


def _national_digits(value: str) -> str:
    return _NON_DIGITS.sub("", _EXTENSION.sub("", value))


_NUMBER_TYPES = (
    "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
    "voip", "pager", "uan", "voicemail",
)  # fmt: skip


@cache
def _plan(region: str) -> tuple[str, re.Pattern[str]] | None:
    """A region's trunk prefix, and one pattern for every type of number its plan assigns."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None:
        return None
    patterns = []
    for kind in _NUMBER_TYPES:
        desc = getattr(meta, kind, None)
        if desc is not None and desc.national_number_pattern:
            patterns.append(f"(?:{desc.national_number_pattern})")
    return meta.national_prefix or "", re.compile("|".join(patterns) or "(?!)")


def _may_be_national(digits: str, region: str) -> bool:
    """A cheap necessary test before libphonenumber's full parse (ten times dearer): once
    the trunk prefix is off, the number fits one of the plan's assigned ranges.

    Tried region by region, the parse was half the detector's time on numbers that fit none;
    libphonenumber still decides every number that passes.
    """
    plan = _plan(region)
    if plan is None:
        return True  # no metadata to go by: let the parse decide
    prefix, pattern = plan
    if pattern.fullmatch(digits):
        return True
    return (
        bool(prefix)
        and digits.startswith(prefix)
        and pattern.fullmatch(digits[len(prefix) :]) is not None
    )


@lru_cache(maxsize=64)
def _nanp(regions: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(r for r in regions if phonenumbers.country_code_for_region(r) == 1) or regions


def is_nanp_phone(value: str, regions: tuple[str, ...]) -> bool:
    """A 3-3-4 number ("(212) 555-0173"): North American when a NANP region is configured.

    The shape is the North American plan's; read in other plans, many such digit strings are
    valid too (555-123-4567 is in Germany's), which is no reason to call them phone numbers.
    """
    return is_national_phone(value, _nanp(regions))


@lru_cache(maxsize=4096)
def is_possible_phone(value: str, regions: tuple[str, ...]) -> bool:
    """Dialable in one of ``regions`` (or internationally): a number once a phone word names it.

    libphonenumber calls a number possible when its length fits the plan, valid only when the
    range is assigned; someone's "phone: 01632 960123" is personal data either way.
    """
    plus = dialled(value)
    tried = (None,) if plus.startswith("+") else regions
    for region in tried:
        number = _parse_phone(plus, region)
        if number is not None and phonenumbers.is_possible_number(number):
            return True
    return False
