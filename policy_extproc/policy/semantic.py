"""What the semantic guards share: the injection detector (one per process) and how reasons
say where a sentence was.

The ``prompt_injection`` kind (``policy.rules.prompt_injection``) runs the semantic pass of a
request or an answer: each part's sentences are embedded once and given to the injection
detector and to every semantic topic of ``content_filter`` rules (``rules.content_filter``).
Compile time loads the shipped models once per process (tokenlearn's for prompt injection,
wordllama's for topics, each only when a policy needs it) and embeds every semantic topic's
examples once per rule. Reasons name the signal or topic and its score, never the text.

Both classifiers read the canonical form of each part (``detect/canonical``: NFKC, ignorables
removed, confusables folded), the same text the other content filters match, so an instruction
spelt with Cyrillic look-alikes or zero-width characters reads as the model reads it; a topic
redaction is mapped back to the original span.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..detect.semantic import InjectionDetector, load_embedder
from ..detect.semantic.injection import MODEL as INJECTION_MODEL
from .findings import TextPart

_DETECTOR: InjectionDetector | None = None
_DETECTOR_LOCK = threading.Lock()


def detector() -> InjectionDetector:
    """One detector per process: the exemplar library does not depend on the policy."""
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None:
            _DETECTOR = InjectionDetector(load_embedder(INJECTION_MODEL))
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
