"""Token estimates for prompts before the provider counts them: fast, offline, a little high.

Estimates feed rate limits, budgets and approval thresholds before a request is sent; the
provider's reported usage replaces them afterwards. Erring high is the safe side there.

How the heuristic was chosen: OpenAI's guidance ("What are tokens and how to count them") is
about 4 characters per token for English, which holds for cl100k/o200k on prose and code. For
text outside ASCII, tokens per character grow with how many UTF-8 bytes a character needs,
because byte-level BPE vocabularies hold fewer merges for it: CJK (3 bytes) is close to one
token per character, Cyrillic/Greek/Hebrew (2 bytes) roughly one per two characters, emoji
(4 bytes) more than one. ``(3 * utf8_bytes - chars) / 8`` gives exactly chars/4 for ASCII,
1.0 per CJK character, 0.625 per 2-byte and 1.375 per 4-byte character: one formula, two C-level
length computations, no per-character Python loop.
"""

from __future__ import annotations

from policy_extproc.llm.apis import BY_API
from policy_extproc.llm.request import LlmRequest

# OpenAI cookbook, "How to count tokens with tiktoken": every chat message costs 3 tokens of
# framing (role and separators) and every reply is primed with 3 more. Anthropic's framing is
# similar in size.
_PER_MESSAGE = 3
_PER_REPLY = 3


def estimate_tokens(text: str) -> int:
    """Estimated tokens in text: about 4 ASCII characters per token, more for other scripts."""
    n = len(text)
    if text.isascii():  # O(1) for compact ASCII strings in CPython
        return (n + 3) // 4
    # surrogatepass: a lone surrogate (legal in a JSON string) must not raise here.
    utf8 = len(text.encode("utf-8", "surrogatepass"))
    return (3 * utf8 - n + 7) // 8


def token_weight(text: str) -> int:
    """Eight times the estimated tokens of ``text``, unrounded (``3 * utf8_bytes - chars``):
    the weights of pieces add up to the weight of the whole, so an answer streamed in pieces
    is counted as its text joined (``tokens_of_weight``)."""
    n = len(text)
    if text.isascii():
        return 2 * n
    return 3 * len(text.encode("utf-8", "surrogatepass")) - n


def tokens_of_weight(weight: int) -> int:
    """The estimated tokens of text of this total ``token_weight``: ``estimate_tokens`` of it."""
    return (weight + 7) // 8


def _messages(req: LlmRequest) -> int:
    """How many chat messages the request frames (0 for completions and embeddings)."""
    return BY_API[req.api].messages(req.body)


def estimate_request_tokens(req: LlmRequest) -> int:
    """Estimated prompt tokens of a request: its text plus per-message framing."""
    tokens = estimate_tokens(req.prompt_text)
    messages = _messages(req)
    if messages:
        tokens += _PER_MESSAGE * messages + _PER_REPLY
    return tokens
