"""Pushed policies over the in-memory repository: validation, conditional writes, followers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from policy_extproc.admin.errors import Conflict, NotFound
from policy_extproc.admin.pushed import PushedPolicies, split
from policy_extproc.errors import AdminError, PolicyError
from policy_extproc.sources.store import PolicyStore
from policy_extproc.state.policies import MemoryPolicies

BASE = """
policy_name: acme_base
org: acme
rules:
  - type: content_filter
    id: secrets
    keywords: [confidential]
"""

TEAM = """# the ML team's words
policy_name: acme_ml
org: acme
team: ml
rules:
  - type: content_filter
    id: words
    keywords: [classified]
"""

TWO = """
- policy_name: globex_base
  org: globex
  rules: [{type: model_access, models: [gpt-4o-mini]}]
- policy_name: initech_base
  org: initech
  rules: [{type: pii, entities: [EMAIL]}]
"""


def replica(tmp_path: Path, repo: MemoryPolicies, name: str) -> PushedPolicies:
    policy_dir = tmp_path / name
    policy_dir.mkdir()
    (policy_dir / "base.yaml").write_text(BASE)
    return PushedPolicies(PolicyStore([str(policy_dir)]), repo, poll_s=60)


async def wait_for(predicate: object, what: str) -> None:
    async with asyncio.timeout(5):  # a safety net, not a claim about speed
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)


def names(p: PushedPolicies) -> list[str]:
    return [cp.policy.name for cp in p.store.current.policies]


async def test_a_push_is_stored_applied_here_and_followed_there(tmp_path: Path) -> None:
    repo = MemoryPolicies()
    a, b = replica(tmp_path, repo, "a"), replica(tmp_path, repo, "b")
    await a.start()
    await b.start()
    try:
        change = await a.put(TEAM, "team.yaml")
        assert change.names == ("acme_ml",) and change.repository_version == 1
        assert names(a) == ["acme_base", "acme_ml"]
        assert change.version == a.store.current.version
        assert a.texts == {"acme_ml": TEAM}  # one policy: kept as written, comment and all
        await wait_for(lambda: names(b) == ["acme_base", "acme_ml"], "b to follow")
        assert b.texts == a.texts
        await b.delete("acme_ml")
        await wait_for(lambda: names(a) == ["acme_base"], "a to follow the delete")
    finally:
        await a.stop()
        await b.stop()


async def test_a_bad_push_is_refused_with_check_lines_and_changes_nothing(tmp_path: Path) -> None:
    repo = MemoryPolicies()
    a = replica(tmp_path, repo, "a")
    before = await a.start()
    bad = TEAM.replace("keywords: [classified]", "keywords: [classified]\n    colour: red")
    with pytest.raises(PolicyError) as exc:
        await a.put(bad, "team.yaml")
    assert [str(p) for p in exc.value.problems] == [
        "team.yaml:9: policy 'acme_ml' rule 1 (content_filter): 'colour': unknown field "
        "(known: id, final, alert, keywords, patterns, topics, action, direction, case_sensitive, "
        "whole_words, model)"
    ]
    assert await repo.version() == 0
    assert a.store.current is before


async def test_a_pushed_policy_cannot_take_a_file_policys_name(tmp_path: Path) -> None:
    a = replica(tmp_path, MemoryPolicies(), "a")
    await a.start()
    with pytest.raises(PolicyError, match=r"pushed.yaml:2: policy 'acme_base': duplicate policy"):
        await a.put(BASE, "pushed.yaml")
    with pytest.raises(Conflict, match="defined in"):
        await a.delete("acme_base")
    with pytest.raises(NotFound):
        await a.delete("nobody")
    with pytest.raises(AdminError, match="no policy"):
        await a.put("[]", "empty.yaml")


async def test_several_policies_in_one_text_are_stored_one_by_one(tmp_path: Path) -> None:
    repo = MemoryPolicies()
    a = replica(tmp_path, repo, "a")
    await a.start()
    change = await a.put(TWO, "two.yaml")
    assert change.names == ("globex_base", "initech_base")
    stored = (await repo.read()).texts
    assert json.loads(stored["globex_base"])["org"] == "globex"
    await a.delete("globex_base")
    assert names(a) == ["acme_base", "initech_base"]


def test_split_keeps_a_single_policy_as_written() -> None:
    assert split(TEAM) == {"acme_ml": TEAM}
    assert set(split(TWO)) == {"globex_base", "initech_base"}
    assert set(split(BASE + "---\n" + TEAM)) == {"acme_base", "acme_ml"}


class RacingRepository(MemoryPolicies):
    """Another replica writes a policy of its own just before each of our first ``races`` writes."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    async def write(
        self, expected: int, put: Mapping[str, str], delete: Sequence[str] = ()
    ) -> int | None:
        if self.races:
            self.races -= 1
            name = f"rival_{self.races}"
            rival = TEAM.replace("acme_ml", name).replace("team: ml", f"team: {name}")
            await super().write(self._version, {name: rival})
        return await super().write(expected, put, delete)


async def test_a_write_that_lost_a_race_is_validated_again(tmp_path: Path) -> None:
    repo = RacingRepository(races=2)
    a = replica(tmp_path, repo, "a")
    await a.start()
    change = await a.put(TWO, "two.yaml")
    assert change.repository_version == 3  # two rival writes, then ours
    assert set(a.texts) == {"rival_0", "rival_1", "globex_base", "initech_base"}


async def test_a_push_that_keeps_losing_races_gives_up(tmp_path: Path) -> None:
    repo = RacingRepository(races=100)
    a = replica(tmp_path, repo, "a")
    await a.start()
    with pytest.raises(Conflict, match="kept changing"):
        await a.put(TWO, "two.yaml")


async def test_a_repository_that_lost_its_data_is_written_back(tmp_path: Path) -> None:
    repo = MemoryPolicies()
    a = replica(tmp_path, repo, "a")
    await a.start()
    await a.put(TEAM, "team.yaml")
    await a.put(TWO, "two.yaml")
    assert a.applied == 2
    repo._texts.clear()  # a Redis restarted without persistence
    repo._version = 0
    await a.refresh()
    restored = await repo.read()
    assert set(restored.texts) == {"acme_ml", "globex_base", "initech_base"}
    assert a.applied == restored.version == 1
    assert names(a) == ["acme_base", "acme_ml", "globex_base", "initech_base"]


async def test_a_candidate_is_compiled_but_not_stored(tmp_path: Path) -> None:
    repo = MemoryPolicies()
    a = replica(tmp_path, repo, "a")
    await a.start()
    snapshot = a.candidate(TEAM, "team.yaml")
    assert [cp.policy.name for cp in snapshot.policies] == ["acme_base", "acme_ml"]
    assert names(a) == ["acme_base"] and await repo.version() == 0
