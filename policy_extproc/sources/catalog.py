"""The model catalog file: the operator's (``--catalog``) or the packaged default.

``llm.catalog`` parses catalog text; reading it, from a path or from the package, is done here,
once, by the server and the CLI, which hand the ``Catalog`` to whatever needs it.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from ..errors import PolicyError, Problem
from ..llm.catalog import Catalog
from ..llm.catalog_file import parse_catalog


@functools.lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The packaged ``default_catalog.yaml``, parsed once per process."""
    text = (
        resources.files("policy_extproc.llm")
        .joinpath("default_catalog.yaml")
        .read_text(encoding="utf-8")
    )
    return parse_catalog(text, "default_catalog.yaml")


def load_catalog(path: str | None = None) -> Catalog:
    """Load a catalog file, or the packaged default when path is None."""
    if path is None:
        return default_catalog()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([Problem(path, 0, f"cannot read catalog: {exc}")]) from exc
    return parse_catalog(text, path)
