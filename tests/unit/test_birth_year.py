"""A birth date lies in no later year than the current one, and the core is told which year
that is: the edge reads it when a set compiles (``sources.secrets``), the snapshot is built for
it, and the store compiles again when the year turns."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from policy_extproc.detect import pii_validators as v
from policy_extproc.detect.pii import PiiDetector
from policy_extproc.errors import PolicyError
from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.loader import load_sources
from policy_extproc.policy.model import Secrets
from policy_extproc.policy.rules.pii import PiiRule, detector_of
from policy_extproc.sources import secrets as secrets_source
from policy_extproc.sources import store as store_module
from policy_extproc.sources.secrets import read_secrets
from policy_extproc.sources.store import PolicyStore

POLICY = """
policy_name: dob
org: acme
rules:
  - type: pii
    entities: [DATE_OF_BIRTH]
  - type: compliance
    framework: HIPAA
"""
BORN = "date of birth: 2027-01-05"


def found(detector: PiiDetector, text: str) -> list[str]:
    return [text[m.start : m.end] for m in detector.find(text)]


def test_a_date_after_the_year_given_is_no_birth_date() -> None:
    assert found(PiiDetector(["DATE_OF_BIRTH"], latest_birth_year=2026), BORN) == []
    assert found(PiiDetector(["DATE_OF_BIRTH"], latest_birth_year=2027), BORN) == ["2027-01-05"]
    # Not told: no year is too late, the date is masked rather than let through.
    assert found(PiiDetector(["DATE_OF_BIRTH"]), BORN) == ["2027-01-05"]
    assert v.is_birth_date("2999-01-01") and not v.is_birth_date("2999-01-01", 2998)


def test_a_licence_number_shaped_like_a_future_date_stays_a_licence() -> None:
    """The licence check refuses what is a birth date: a date of next year is not one yet."""
    assert not v.is_driver_license("2026-10-12", 2026)
    assert v.is_driver_license("2027-10-12", 2026)


def _detectors(snapshot: Snapshot) -> list[PiiDetector]:
    es = snapshot.resolve("acme", None, None)
    out = [detector_of(e) for e in es.rules]
    return [d for d in out if d is not None]


def test_the_snapshot_builds_its_detectors_for_the_year_handed_in() -> None:
    policies = load_sources([("p.yaml", POLICY)])
    snapshot = Snapshot(policies, secrets=Secrets(year=2026))
    detectors = _detectors(snapshot)
    assert len(detectors) == 2  # the pii rule's and the HIPAA pack's
    assert [d.latest_birth_year for d in detectors] == [2026, 2026]
    assert all(found(d, BORN) == [] for d in detectors)
    later = Snapshot(policies, secrets=Secrets(year=2027))
    assert [found(d, BORN) for d in _detectors(later)] == [["2027-01-05"]] * 2
    # Same policies, same version; built for another year: another build (workers recompile).
    assert later.version == snapshot.version and later.build != snapshot.build
    assert any(isinstance(e.rule, PiiRule) for e in snapshot.resolve("acme", None, None).rules)


def test_the_edge_reads_the_year_with_the_keys() -> None:
    assert read_secrets().year == date.today().year
    assert "year=" in repr(read_secrets())


def test_the_store_compiles_again_when_the_year_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    year = [2026]
    monkeypatch.setattr(secrets_source, "this_year", lambda: year[0])
    monkeypatch.setattr(store_module, "this_year", lambda: year[0])
    store = PolicyStore([str(tmp_path)])
    first = store.load()
    assert first.secrets.year == 2026 and not store.changed()
    assert all(found(d, BORN) == [] for d in _detectors(first))
    year[0] = 2027
    assert store.changed()  # the files are the same; the year is not
    second = store.load()
    assert second.secrets.year == 2027 and not store.changed()
    assert second.version == first.version and store.current is second
    assert all(found(d, BORN) == ["2027-01-05"] for d in _detectors(second))


def test_a_set_that_fails_to_compile_is_not_retried_every_tick_of_a_new_year(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    year = [2026]
    monkeypatch.setattr(secrets_source, "this_year", lambda: year[0])
    monkeypatch.setattr(store_module, "this_year", lambda: year[0])
    store = PolicyStore([str(tmp_path)])
    first = store.load()
    (tmp_path / "p.yaml").write_text(POLICY.replace("DATE_OF_BIRTH", "NOT_A_TYPE"))
    year[0] = 2027
    assert store.changed()
    with pytest.raises(PolicyError):
        store.load()
    assert store.current is first  # the last good set keeps serving
    assert not store.changed()  # tried for this year and these files: wait for a change
