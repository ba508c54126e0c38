"""Model names as policies compare them: one canonical spelling, and the other names of a model.

Providers and gateways read ``O1-PREVIEW``, `` o1-preview`` and ``openai/o1-preview`` as the
model ``o1-preview``, so a deny list ``o1*`` must see all three as that model:

- ``canonical``: NFKC, trimmed, case-folded, and a provider prefix as gateways write it
  (``openai/``, ``anthropic/``, ``azure/``, ``bedrock/``, ``vertex_ai/``, ``gemini/``, and the
  Gemini API's ``models/``) removed. Allow lists and deny lists (compiled the same way) match it.
- ``spellings``: the names a deny list checks besides the canonical one, so that no way of
  writing a model escapes it: the last path segment (any other gateway's ``vendor/model``) and a
  Bedrock model id without its region profile and vendor (``us.anthropic.claude-3-opus-...``).
  An allow list checks the canonical name only: a name it does not know exactly stays refused.
"""

from __future__ import annotations

import re
import unicodedata

PROVIDER_PREFIXES = (
    "openai/",
    "anthropic/",
    "azure/",
    "bedrock/",
    "vertex_ai/",
    "gemini/",
    "models/",
)
# Bedrock ids: an optional cross-region inference profile prefix, then the vendor.
BEDROCK_PREFIX = re.compile(
    r"(?:(?:us|eu|apac|jp|au|ca|global|us-gov)\.)?"
    r"(?P<vendor>anthropic|openai|mistral|meta|amazon|cohere)\."
)


def canonical(name: str) -> str:
    """The spelling of ``name`` that policies compare: see the module docstring."""
    if name.isascii():
        key = name.strip().lower()
    else:
        key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
        key = key.strip()
    stripped = "/" in key
    while stripped:  # "openai/azure/gpt-4o" is still gpt-4o
        stripped = False
        for prefix in PROVIDER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :].strip()
                stripped = True
    return key


def spellings(key: str) -> tuple[str, ...]:
    """``key`` (canonical) and the other names a deny list must see it by, without repeats."""
    out = [key]
    tail = key.rpartition("/")[2]
    if tail != key:
        out.append(tail)
    m = BEDROCK_PREFIX.match(tail)
    if m is not None and m.end() < len(tail):
        out.append(tail[m.end() :])
    return tuple(out)
