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

    def __init__(self, parts: Sequence[TextPart]) -> None:
        super().__init__([p.text for p in parts], [getattr(p, "group", -1) for p in parts], "\n")
