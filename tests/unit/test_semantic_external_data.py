"""Shape of the external evaluation data (tests/data/semantic/external/)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

EXT = Path(__file__).resolve().parent.parent / "data" / "semantic" / "external"
ITEMS = yaml.safe_load((EXT / "external.yaml").read_text())["items"]


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def test_every_item_is_labelled() -> None:
    for x in ITEMS:
        assert x["label"] in ("attack", "benign"), x
        assert x["split"] in ("ext-tune", "ext-heldout"), x
        assert x["family"] and x["source"] and x["lang"], x
        assert x["text"].strip(), x


def test_no_text_in_both_parts() -> None:
    sides: dict[str, set[str]] = {}
    for x in ITEMS:
        sides.setdefault(_key(x["text"]), set()).add(x["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert len(sides) == len(ITEMS)  # no duplicate at all


def test_each_part_has_both_classes_and_is_bounded() -> None:
    n = Counter((x["split"], x["label"]) for x in ITEMS)
    for split in ("ext-tune", "ext-heldout"):
        assert n[(split, "attack")] >= 100 and n[(split, "benign")] >= 100
    assert sum(v for (_, lab), v in n.items() if lab == "attack") <= 400
    assert sum(v for (_, lab), v in n.items() if lab == "benign") <= 400


def test_readme_names_every_source() -> None:
    readme = (EXT / "README.md").read_text()
    for source in {x["source"].split(":")[0] for x in ITEMS}:
        assert source.split("-", 1)[-1] in readme, source
