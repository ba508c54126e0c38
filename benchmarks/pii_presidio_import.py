"""Turn Presidio's recognizer test cases into data: ``tests/data/pii/presidio_cases.yaml``.

Run by hand when Presidio's tests change:
``.venv/bin/python benchmarks/pii_presidio_import.py GIT_DIR [--out FILE]``, where GIT_DIR is a
clone of https://github.com/microsoft/presidio (MIT licence). It reads the parametrized cases
of ``presidio-analyzer/tests/test_<type>_recognizer.py`` for the types that map to ours,
evaluates them as literals (never imports or runs Presidio's code), and writes one YAML entry
a case. The notes of an existing output file (``ours`` and ``why``: where we disagree on
purpose) are kept, matched by file and text.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "pii" / "presidio_cases.yaml"
# Presidio's test file -> our type. Left out: dates (Presidio's DATE_TIME is any date, ours a
# birth date) and US bank account numbers (no type of ours).
FILES = {
    "test_email_recognizer.py": "EMAIL",
    "test_phone_recognizer.py": "PHONE",
    "test_credit_card_recognizer.py": "CREDIT_CARD",
    "test_us_ssn_recognizer.py": "US_SSN",
    "test_iban_recognizer.py": "IBAN",
    "test_ip_recognizer.py": "IP_ADDRESS",
    "test_us_passport_recognizer.py": "US_PASSPORT",
    "test_us_driver_license_recognizer.py": "US_DRIVER_LICENSE",
    "test_aba_routing_recognizer.py": "US_BANK_ROUTING",
    "test_us_itin_recognizer.py": "US_ITIN",
    "test_uk_nhs_recognizer.py": "UK_NHS",
    "test_crypto_recognizer.py": "CRYPTO_WALLET",
}
# A span Presidio expects with a score of at most this is one its tests call a very weak
# match (odd groupings, passport shapes without context): we may find it or not.
WEAK = 0.3
_IBAN_LETTERS = {ord(c): str(i) for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10)}


def _update_iban_checksum(iban: str) -> str:
    # The helper of Presidio's IBAN test, which some cases call: the same arithmetic.
    compact = iban.replace(" ", "")
    digits = (compact[4:] + compact[:2] + "00").upper().translate(_IBAN_LETTERS)
    return iban[:2] + f"{98 - int(digits) % 97:0>2}" + iban[4:]


def _value(node: ast.expr) -> Any:
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "update_iban_checksum":
        return _update_iban_checksum(_value(node.args[0]))
    return ast.literal_eval(node)


def _cases(source: str) -> list[dict[str, Any]]:
    """Every literal case of every ``pytest.mark.parametrize`` in a test module."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize"):
                continue
            names = [n.strip() for n in ast.literal_eval(deco.args[0]).split(",")]
            rows = deco.args[1]
            assert isinstance(rows, (ast.List, ast.Tuple))
            for row in rows.elts:
                try:
                    values = [_value(e) for e in row.elts]  # type: ignore[attr-defined]
                except (ValueError, TypeError, AttributeError):
                    continue  # not a literal: skipped
                out.append({"test": node.name, **dict(zip(names, values, strict=False))})
    return out


def _scores(case: dict[str, Any], count: int) -> list[float | None]:
    """The highest score Presidio expects for each span (None: not stated)."""
    for key in ("expected_score_ranges", "expected_scores"):
        ranges = case.get(key)
        if ranges:
            return [
                1.0 if r == "max" or (isinstance(r, tuple) and r[1] == "max") else
                (float(r[1]) if isinstance(r, tuple) else float(r))
                for r in ranges
            ]  # fmt: skip
    for key in ("expected_score", "score"):
        if isinstance(case.get(key), int | float) and case[key] >= 0:
            return [float(case[key])] * count
    return [None] * count


def convert(git_dir: str) -> dict[str, Any]:
    """The YAML document for the Presidio checkout at git_dir."""
    commit = subprocess.run(
        ["git", "--git-dir", git_dir, "rev-parse", "HEAD"], check=True, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    cases = []
    for name, entity in FILES.items():
        source = subprocess.run(
            ["git", "--git-dir", git_dir, "show", f"HEAD:presidio-analyzer/tests/{name}"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        for case in _cases(source):
            text = case.get("text", case.get("iban"))
            if not isinstance(text, str) or case.get("leniency", 1) != 1:
                continue  # only Presidio's default leniency
            count = int(case["expected_len"])
            spans = case.get("expected_positions", case.get("expected_res")) or ()
            scores = _scores(case, len(spans))
            entry: dict[str, Any] = {"file": name, "test": case["test"], "entity": entity,
                                     "text": text, "count": count}  # fmt: skip
            entry["spans"] = [
                [int(a), int(b)] for (a, b), s in zip(spans, scores, strict=False)
                if s is None or s > WEAK
            ]  # fmt: skip
            weak = [
                [int(a), int(b)]
                for (a, b), s in zip(spans, scores, strict=False)
                if s is not None and s <= WEAK
            ]
            if weak:
                entry["weak"] = weak
            cases.append(entry)
    return {"commit": commit, "cases": cases}


HEADER = """\
# Presidio's recognizer test cases, as data: a conformance suite for our PII detector.
# Origin: https://github.com/microsoft/presidio, presidio-analyzer/tests/test_*_recognizer.py
# at commit {commit}; Presidio is MIT licensed
# (Copyright (c) Presidio Contributors; https://github.com/microsoft/presidio/blob/main/LICENSE).
# Made by benchmarks/pii_presidio_import.py; tests/unit/test_pii_presidio.py runs it.
#
# Each case: Presidio's text, the type it maps to, the number of results Presidio expects
# (count) and their spans; "weak" spans are ones Presidio scores at most {weak} (we may find
# them or not). Where we disagree on purpose, "ours" is what we find instead and "why" says why.
"""


def main() -> None:
    """Write the YAML file, keeping the notes of the existing one."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("git_dir")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    doc = convert(args.git_dir)
    out = Path(args.out)
    if out.exists():
        old = yaml.safe_load(out.read_text()) or {}
        notes = {(c["file"], c["text"]): c for c in old.get("cases", []) if "why" in c}
        for case in doc["cases"]:
            note = notes.get((case["file"], case["text"]))
            if note is not None:
                case["ours"], case["why"] = note["ours"], note["why"]
    body = yaml.safe_dump(
        doc, allow_unicode=True, sort_keys=False, width=100, default_flow_style=None
    )
    out.write_text(HEADER.format(commit=doc["commit"], weak=WEAK) + body)
    print(f"{len(doc['cases'])} cases -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
