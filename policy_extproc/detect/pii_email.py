"""Mail addresses written in any script (RFC 6531): ``jörg@example.org``, ``иван@пример.рф``.

The Hyperscan pass sees non-ASCII code points as "?", so it finds only ASCII addresses. This
pass looks at the neighbourhood of each "@" that holds a non-ASCII character, and only there,
with Python's Unicode-aware ``re``; every "@" costs a bounded window, so it stays linear.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_LOCAL_MAX = 64
_DOMAIN_MAX = 253
_LOCAL_EXTRA = frozenset("._%+-'")
# Labels of letters, digits and inner hyphens in any script; a TLD of letters, or punycode.
_DOMAIN = re.compile(
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|[Xx][Nn]--[^\W_][\w-]{0,58})(?!\w)"
)


def candidates(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each address-shaped span around an "@" with non-ASCII near it."""
    at = text.find("@")
    while at != -1:
        lo, hi = max(0, at - _LOCAL_MAX), min(len(text), at + 1 + _DOMAIN_MAX)
        if not text[lo:hi].isascii():
            start = at
            while start > lo and (text[start - 1].isalnum() or text[start - 1] in _LOCAL_EXTRA):
                start -= 1
            while start < at and text[start] == ".":  # a local part never starts with a dot
                start += 1
            m = _DOMAIN.match(text, at + 1, hi)
            if start < at and m is not None:
                yield start, m.end()
        at = text.find("@", at + 1)
