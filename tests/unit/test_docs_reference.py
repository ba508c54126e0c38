"""docs/policies.md names everything the code accepts and answers: it cannot drift unnoticed.

Every rule type and each of its fields, every policy field, every error code a client can get
and every field of the audit record must appear in the page's section for it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import policy_extproc
from policy_extproc import errors
from policy_extproc.audit.record import AuditRecord
from policy_extproc.policy import loader
from policy_extproc.policy.rules import BY_NAME

DOC = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(title: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    m = re.search(rf"^(#+) {re.escape(title)}\n", DOC, re.M)
    assert m, f"docs/policies.md has no section {title!r}"
    level = len(m.group(1))
    rest = DOC[m.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def named(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


@pytest.mark.parametrize("rule_type", sorted(BY_NAME))
def test_every_field_of_every_rule_type_is_documented(rule_type: str) -> None:
    fields = set(BY_NAME[rule_type].fields)
    missing = fields - named(section(f"`{rule_type}`"))
    assert not missing, f"docs/policies.md, {rule_type}: fields not described: {sorted(missing)}"


def test_fields_every_rule_has_are_documented() -> None:
    assert {"type", "id", "final", "alert", "action"} <= named(section("Fields every rule has"))


def test_every_policy_field_is_documented() -> None:
    missing = set(loader._POLICY_FIELDS) - named(section("A policy"))
    assert not missing, f"policy fields not described: {sorted(missing)}"


def _client_codes() -> set[str]:
    # Every module, so that every error class is defined, whichever tests ran before.
    for mod in pkgutil.walk_packages(policy_extproc.__path__, "policy_extproc."):
        if not mod.name.endswith("__main__"):  # a command line, run on import
            importlib.import_module(mod.name)
    found: set[str] = set()
    stack: list[type] = [errors.PolicyExtprocError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("policy_extproc.admin"):
            continue  # admin API errors answer the admin CLI, not a client through Envoy
        code = cls.__dict__.get("code")
        # Start-up and admin errors answer the operator, not a client through Envoy.
        if isinstance(code, str) and code not in ("invalid_policy", "admin_error", "tls_error"):
            found.add(code)
    return found


def test_every_error_code_a_client_can_get_is_documented() -> None:
    missing = _client_codes() - named(section("What the client sees"))
    assert not missing, f"error codes not described: {sorted(missing)}"


def test_every_audit_field_is_documented() -> None:
    fields = {f.name for f in dataclasses.fields(AuditRecord)} | {"prev_hash", "hash"}
    missing = fields - named(section("The audit record"))
    assert not missing, f"audit record fields not described: {sorted(missing)}"


def test_the_readme_points_inside_the_repository() -> None:
    assert "../shared" not in README and "docs/policies.md" in README
