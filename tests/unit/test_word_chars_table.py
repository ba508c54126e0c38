"""The generated table of word characters (detect/word_chars_table.py) is what its generator
makes of the running Python's unicodedata."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_word_chars", ROOT / "tools/gen_word_chars.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def test_the_module_is_what_the_generator_writes() -> None:
    assert GEN.TARGET.read_text(encoding="utf-8") == GEN.render()


def test_what_makes_a_word() -> None:
    inside = "aZ09\u00e9\u0301\u3099\u200b\u00ad\ufe0f\x00\u0915\u093e\u0e49\u65e5\uff43\u02bc"
    assert all(GEN.word_char(c) for c in inside)
    # ... and 1/4, "1." (they unfold to more than a word), the acute accent, circled B
    between = " _-.,'\u2019\u00a0\u2014\u3002\u00bc\u2488\u00b4\u24b7"
    assert not any(GEN.word_char(c) for c in between)
