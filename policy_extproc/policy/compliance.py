"""Compliance packs: what a ``compliance`` rule with ``framework: X`` turns on.

Each pack is a fixed bundle documented in README ("Compliance packs"), honest about its reach:
it enforces data handling at the gateway, it does not make a deployment compliant by itself.

- PCI: card numbers (Luhn-valid) masked in requests and responses.
- HIPAA: identifiers of the HIPAA Safe Harbor list that we detect (e-mail, phone, SSN, ITIN,
  date of birth, passport, driver licence, IP address, bank routing, card numbers) masked in
  requests and responses; every decision audited (always so here).
- GDPR: personal data we detect (e-mail, phone, IBAN, IP address, date of birth, card numbers,
  crypto wallets) masked in requests and responses, and requests only to providers the catalog
  marks ``eu_resident``; any other provider is refused.
- SOC2: no rule of its own: every decision is audited with the policy version, which this
  sidecar always does; the tag marks the decisions for the auditors.

``mode: log`` on the rule makes the pack observe only: its firings are audited as would-be.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pack:
    entities: tuple[str, ...]
    eu_only: bool = False


PACKS: Mapping[str, Pack] = {
    "PCI": Pack(("CREDIT_CARD",)),
    "HIPAA": Pack(
        (
            "EMAIL",
            "PHONE",
            "US_SSN",
            "US_ITIN",
            "DATE_OF_BIRTH",
            "US_PASSPORT",
            "US_DRIVER_LICENSE",
            "IP_ADDRESS",
            "US_BANK_ROUTING",
            "CREDIT_CARD",
        )
    ),
    "GDPR": Pack(
        ("EMAIL", "PHONE", "IBAN", "IP_ADDRESS", "DATE_OF_BIRTH", "CREDIT_CARD", "CRYPTO_WALLET"),
        eu_only=True,
    ),
    "SOC2": Pack(()),
}
