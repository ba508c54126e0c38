"""What the rules found in one request or response, as the checks of the rule kinds add it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from .decision import Fired, JsonPath

if TYPE_CHECKING:
    from .compiler import EffectiveRule


class TextPart(Protocol):
    """A piece of prompt or output text and where it sits in the body (llm.request.PromptPart)."""

    @property
    def path(self) -> JsonPath: ...

    @property
    def text(self) -> str: ...


@dataclass(slots=True)
class Findings:
    """What the rules found in one request or response, accumulated during evaluation."""

    fired: list[Fired] = field(default_factory=list)
    # per part index: (start, end, replacement) in str offsets
    edits: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    redactions: dict[str, int] = field(default_factory=dict)

    def fire(
        self,
        e: EffectiveRule,
        action: str,
        reason: str,
        mode: Literal["enforce", "log"] | None = None,
    ) -> None:
        """Record a firing; its mode is the policy's unless the rule says (compliance log)."""
        m = mode or e.policy.policy.mode
        self.fired.append(Fired(e.policy_name, e.rule.id, e.rule.type, action, reason, m))

    def new_texts(self, parts: Sequence[TextPart]) -> dict[JsonPath, str]:
        """The rewritten text of every part that has edits (overlaps resolved, first wins)."""
        out: dict[JsonPath, str] = {}
        for i, edits in self.edits.items():
            text = parts[i].text
            pieces, pos = [], 0
            for start, end, repl in sorted(edits):
                if start < pos:  # overlaps one already replaced
                    if end > pos:
                        pos = end
                    continue
                pieces.append(text[pos:start])
                pieces.append(repl)
                pos = end
            pieces.append(text[pos:])
            out[parts[i].path] = "".join(pieces)
        return out
