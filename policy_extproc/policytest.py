"""Policy tests: ``*_test.yaml`` files that say which decision a request must get, as ``opa test``.

A test file holds ``tests:``, a list of cases; each case is a request (headers, path, body) and
what is expected of its decision. Every case is decided by the admin API's dry run, the same
pipeline ``eval`` and the server use (approvals escalate, limits and budgets are checked
against an empty state, nothing is consumed), so a test passes exactly when ``eval`` would
print that decision.

    tests:
      - name: ml may use gpt-4o
        headers: {x-org-id: acme, x-team-id: ml, x-user-id: alice}
        path: /v1/chat/completions          # optional, this is the default
        request: {model: gpt-4o, messages: [{role: user, content: hi}]}
        expect:
          decision: allow                   # required
          policy: acme_baseline             # optional
          rule: secrets                     # optional
          body_contains: "[EMAIL]"          # optional: the rewritten body holds this
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RequestError
from .llm.catalog import Catalog
from .policy.compiler import Snapshot
from .policy.yamlsource import Located, SourceError, load_documents
from .state.base import StateBackend

TEST_SUFFIXES = ("_test.yaml", "_test.yml", "_test.json")
DECISIONS = frozenset({"allow", "modify", "block", "throttle", "escalate"})
_CASE_KEYS = frozenset({"name", "headers", "path", "request", "expect"})
_EXPECT_KEYS = frozenset({"decision", "policy", "rule", "body_contains", "code"})
DEFAULT_PATH = "/v1/chat/completions"


class PolicyTestError(ValueError):
    """A test file that cannot be read as tests: ``file:line: message``."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")


@dataclass(frozen=True, slots=True)
class Case:
    """One request and what its decision must be."""

    file: str
    line: int
    name: str
    headers: Mapping[str, str]
    path: str
    body: bytes
    expect: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A case and what went wrong with it (``failures`` empty: it passed)."""

    case: Case
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def is_test_file(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(TEST_SUFFIXES)


def find_test_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every test file under ``paths`` (files named directly are taken as they are), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*") if x.is_file() and is_test_file(x.name)))
        else:
            out.append(p)
    return out


def _string_map(value: Any, file: str, line: int, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PolicyTestError(file, line, f"{what} must be a mapping")
    return {str(k): str(v) for k, v in value.items()}


def read_cases(file: str, text: str) -> list[Case]:
    """The cases of one test file; ``PolicyTestError`` names the first mistake and its line."""
    try:
        docs = load_documents(text)
    except SourceError as exc:
        raise PolicyTestError(file, exc.line, str(exc)) from exc
    cases: list[Case] = []
    for doc in docs:
        if not isinstance(doc, Located) or not isinstance(doc.get("tests"), list):
            line = doc.line if isinstance(doc, Located) else 1
            raise PolicyTestError(file, line, "a test file holds 'tests:', a list of cases")
        items = doc["tests"]
        for i, raw in enumerate(items):
            line = items.item_lines[i] if hasattr(items, "item_lines") else doc.line
            cases.append(_case(raw, file, line))
    return cases


def _case(raw: Any, file: str, line: int) -> Case:
    if not isinstance(raw, dict):
        raise PolicyTestError(file, line, "a test case must be a mapping")
    unknown = sorted(set(raw) - _CASE_KEYS)
    if unknown:
        raise PolicyTestError(file, line, f"unknown field {unknown[0]!r} in a test case")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyTestError(file, line, "a test case needs a 'name'")
    request = raw.get("request")
    if isinstance(request, str):
        body = request.encode()
    elif isinstance(request, dict | list):
        body = json.dumps(request, ensure_ascii=False).encode()
    else:
        raise PolicyTestError(file, line, f"test {name!r}: 'request' must be a mapping or a string")
    expect = raw.get("expect")
    if not isinstance(expect, dict) or "decision" not in expect:
        raise PolicyTestError(file, line, f"test {name!r}: 'expect' needs a 'decision'")
    unknown = sorted(set(expect) - _EXPECT_KEYS)
    if unknown:
        raise PolicyTestError(file, line, f"test {name!r}: unknown expectation {unknown[0]!r}")
    if expect["decision"] not in DECISIONS:
        allowed = ", ".join(sorted(DECISIONS))
        raise PolicyTestError(file, line, f"test {name!r}: decision must be one of {allowed}")
    headers = {
        k.lower(): v for k, v in _string_map(raw.get("headers"), file, line, "headers").items()
    }
    path = raw.get("path", DEFAULT_PATH)
    if not isinstance(path, str) or not path.startswith("/"):
        raise PolicyTestError(file, line, f"test {name!r}: 'path' must be a path such as /v1/...")
    return Case(file, line, name, headers, path, body,
                _string_map(expect, file, line, "expect"))  # fmt: skip


def run_case(
    snapshot: Snapshot,
    case: Case,
    *,
    state: StateBackend | None = None,
    catalog: Catalog | None = None,
) -> Outcome:
    """Decide ``case`` with the dry run and compare with what it expects (not from a running
    event loop: ``check_case`` is the coroutine)."""
    return asyncio.run(check_case(snapshot, case, state=state, catalog=catalog))


async def check_case(
    snapshot: Snapshot,
    case: Case,
    *,
    state: StateBackend | None = None,
    catalog: Catalog | None = None,
) -> Outcome:
    """Decide ``case`` with the dry run and compare with what it expects."""
    from .admin.evaluate import dry_run

    want = case.expect
    try:
        run = await dry_run(
            snapshot, case.body, case.headers, case.path, state=state, catalog=catalog
        )
    except RequestError as exc:
        # A refused body is a decision too: the client gets a 4xx with this code.
        got = {"decision": "block", "code": exc.code, "policy": "", "rule": ""}
        body = b""
    else:
        rec = run.record
        got = {"decision": rec.decision, "code": rec.error_code or "", "policy": rec.policy or "",
               "rule": rec.rule or ""}  # fmt: skip
        body = run.body or b""
    failures = []
    for key in ("decision", "code", "policy", "rule"):
        if key in want and want[key] != got[key]:
            failures.append(f"{key}: expected {want[key]!r}, got {got[key]!r}")
    needle = want.get("body_contains")
    if needle is not None and needle not in body.decode("utf-8", "replace"):
        shown = "no rewritten body" if not body else "the rewritten body does not hold it"
        failures.append(f"body_contains: expected {needle!r}, {shown}")
    return Outcome(case, tuple(failures))
