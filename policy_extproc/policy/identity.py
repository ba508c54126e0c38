"""Identity values as policies compare them: one spelling for ``ACME``, ``acme`` and `` acme ``.

Organisation, team, environment and role names are compared case-insensitively after trimming:
a client writing ``x-org-id: ACME`` or ``x-environment: Development`` must meet the ``acme`` and
``development`` policies, not slip past them. Both sides are canonicalised: the request's values
when its context is built, the policies' scope values and roles when they are compiled.
"""

from __future__ import annotations

import unicodedata


def canonical(value: str) -> str:
    """``value`` trimmed and case-folded, after NFKC (fullwidth letters are the plain ones)."""
    if value.isascii():
        return value.strip().lower()
    # Case folding can leave a string that is no longer NFKC (Unicode s3.13, NFKC_Casefold).
    folded = unicodedata.normalize("NFKC", value).casefold()
    return unicodedata.normalize("NFKC", folded).strip()
