"""What the semantic guards share: the models handed to the compiler, and how reasons say
where a sentence was.

The ``prompt_injection`` kind (``policy.rules.prompt_injection``) runs the semantic pass of a
request or an answer: each part's sentences are cut once and embedded once per model, and
given to the injection detector and to every semantic topic of ``content_filter`` rules
(``rules.content_filter``). The models come with the secrets (``model.Secrets.models``): the
edge (``sources.models``) reads them once per process, when a compile first asks (tokenlearn's
for prompt injection, wordllama's for topics, each only when a policy needs it); compile time
embeds every semantic topic's examples once per rule. Reasons name the signal or topic and its
score, never the text.

Both classifiers read the reading form of each part (``detect/reading``: NFKC, ignorables
removed, look-alikes folded in the words that could pass for ASCII), the request's text with
the tricks the content filters' canonical form undoes undone too, so an instruction spelt with
Cyrillic look-alikes or zero-width characters reads as the model reads it, while Russian, Greek
or Japanese stays as written (the models read it as such); a topic redaction is mapped back to
the original span.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..detect.semantic import EmbedderError
from ..errors import PolicyError, Problem
from .findings import TextPart
from .model import Models, Policy, Rule, Secrets


def models(policy: Policy, rule: Rule, secrets: Secrets) -> Models:
    """The models handed in with the secrets (``sources.models``), or the compile's error."""
    if secrets.models is None:
        raise PolicyError([Problem(policy.file, rule.line, "semantic guards: the models were not "
                                   "handed to the compiler", policy.name, rule.index,
                                   rule.type)])  # fmt: skip
    return secrets.models


def build_error(policy: Policy, rule: Rule, exc: EmbedderError) -> PolicyError:
    return PolicyError([Problem(policy.file, rule.line, f"semantic guards: {exc}", policy.name,
                                rule.index, rule.type)])  # fmt: skip


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
