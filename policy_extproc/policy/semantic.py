"""What the semantic guards share: the injection detector (one per process) and how reasons
say where a sentence was.

The ``prompt_injection`` kind (``policy.rules.prompt_injection``) runs the semantic pass of a
request or an answer: each part's sentences are embedded once and given to the injection
detector and to every semantic topic of ``content_filter`` rules (``rules.content_filter``).
Compile time loads the shipped model once per process and embeds every semantic topic's
examples once per rule. Reasons name the signal or topic and its score, never the text.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..detect.semantic import InjectionDetector, load_embedder
from .findings import TextPart

_DETECTOR: InjectionDetector | None = None
_DETECTOR_LOCK = threading.Lock()


def detector() -> InjectionDetector:
    """One detector per process: the exemplar library does not depend on the policy."""
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None:
            _DETECTOR = InjectionDetector(load_embedder())
        return _DETECTOR


def where(part: TextPart, direction: str) -> str:
    if direction == "response":
        return "the response"
    role = getattr(part, "role", "")
    return "a tool result" if role == "tool" else f"a {role} message" if role else "the prompt"


def groups(parts: Sequence[TextPart]) -> list[tuple[int, int]]:
    """(first, end) index ranges of parts: runs of one ``group`` (llm.request.PromptPart: the
    text blocks of one message), others alone."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(parts):
        group = getattr(parts[i], "group", -1)
        j = i + 1
        while group != -1 and j < len(parts) and getattr(parts[j], "group", -1) == group:
            j += 1
        out.append((i, j))
        i = j
    return out
