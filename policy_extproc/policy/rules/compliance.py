"""``compliance``: a framework pack (``policy.compliance``) turned on for a scope.

A pack with data types masks them in both directions, as a placeholder ``pii`` rule would (the
``pii`` kind's scan runs it); GDPR's residency is checked by ``enforce.stateful``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...detect.pii import PiiDetector
from .. import fields as f
from ..compliance import PACKS
from ..model import FRAMEWORKS, Policy, Rule, Secrets
from .kind import Field, RuleKind


@dataclass(frozen=True, slots=True)
class ComplianceRule(Rule):
    framework: str = "SOC2"
    mode: Literal["enforce", "log"] = "enforce"

    type = "compliance"

    def build(self, policy: Policy, secrets: Secrets) -> PiiDetector | None:
        entities = PACKS[self.framework].entities
        return PiiDetector(entities, latest_birth_year=secrets.year) if entities else None

    @property
    def reads_response(self) -> bool:
        return True

    @property
    def compliance_tags(self) -> tuple[str, ...]:
        return (self.framework,)


KIND = RuleKind(
    ComplianceRule,
    {
        "framework": Field(f.one_of(*FRAMEWORKS), required=True),
        "mode": Field(f.one_of("enforce", "log")),
    },
    state=("residency",),
)
