"""YAML/JSON documents that remember the line of every mapping and key (safe loader only)."""

from __future__ import annotations

from typing import Any

import yaml


class Located(dict[str, Any]):
    """A mapping from a policy file, with the 1-based line of itself and of each key."""

    line: int
    key_lines: dict[str, int]
    duplicates: list[tuple[str, int]]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Located:
    loader.flatten_mapping(node)
    out = Located()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    out.duplicates = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        if not isinstance(key, str):
            key = str(key)
        line = key_node.start_mark.line + 1
        if key in out:
            # PyYAML silently keeps the last of two equal keys; a policy author means neither.
            out.duplicates.append((key, line))
        out[key] = loader.construct_object(value_node, deep=True)  # type: ignore[no-untyped-call]
        out.key_lines[key] = line
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class SourceError(ValueError):
    """A file that is not YAML/JSON at all; ``line`` is where the parser gave up."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def load_documents(text: str) -> list[Any]:
    """Every document of a YAML (or JSON) text, mappings as ``Located``."""
    try:
        return [d for d in yaml.load_all(text, Loader=_LineLoader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = exc.problem or str(exc)
        raise SourceError(f"not valid YAML/JSON: {reason}", line) from exc
    except yaml.YAMLError as exc:
        raise SourceError(f"not valid YAML/JSON: {exc}", 1) from exc
