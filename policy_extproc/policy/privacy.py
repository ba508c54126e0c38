"""What ``pii`` rules share with the edges: the pseudonym key's variables (read by
``sources.secrets``, handed in as ``model.Secrets``), and the text the detectors read.

The rule kind itself (detectors built per rule, the scan, masks) is ``policy.rules.pii``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..detect.joined import JoinedParts
from .findings import TextPart

KEY_ENV = "POLICY_EXTPROC_PII_HASH_KEY"
KEY_FILE_ENV = "POLICY_EXTPROC_PII_HASH_KEY_FILE"


class JoinedText(JoinedParts):
    """The parts' canonical text for the detectors: a join group back to back (the provider
    concatenates it), other parts apart by a newline; matches map back to the original parts."""

    def __init__(self, parts: Sequence[TextPart], texts: Sequence[str] | None = None) -> None:
        """``texts``: what to read of each part instead of its text (same offsets)."""
        texts = [p.text for p in parts] if texts is None else texts
        super().__init__(texts, [getattr(p, "group", -1) for p in parts], "\n")
