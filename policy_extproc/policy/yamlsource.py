"""YAML/JSON documents that remember the line of every mapping, key and list item (safe loader)."""

from __future__ import annotations

import gc
import json
import re
from typing import TYPE_CHECKING, Any

import yaml


class Located(dict[str, Any]):
    """A mapping from a policy file, with the 1-based line of itself and of each key."""

    line: int
    key_lines: dict[str, int]
    duplicates: list[tuple[str, int]]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LocatedList(list[Any]):
    """A sequence from a policy file, with the 1-based line of itself and of each item."""

    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


# libyaml's parser when PyYAML was built with it (the wheels are): the pure-Python scanner spends
# about 2 s on 10,000 rules. Both keep marks on nodes, so lines are the same either way.
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_SafeLoader):
    pass


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Located:
    # Merge keys ("<<: *defaults") put the merged pairs first; keys written in the mapping come
    # after them and override them, as YAML says. Only two written keys are a duplicate.
    written = sum(1 for k, _ in node.value if k.tag != _MERGE_TAG)
    loader.flatten_mapping(node)
    first_written = len(node.value) - written
    out = Located()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    out.duplicates = []
    seen: set[str] = set()
    for n, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = str(key)
        line = key_node.start_mark.line + 1
        if n >= first_written:
            if key in seen:
                # PyYAML silently keeps the last of two equal keys; a policy author means neither.
                out.duplicates.append((key, line))
            seen.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LocatedList:
    # A rule or policy that is not a mapping (a stray string, a number) is reported at its line.
    out = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
# YAML 1.1 reads JSON's 1e3, 2.5E-1 or 1.0e5 (no dot, or no exponent sign) as strings; a JSON
# policy file means numbers. (add_implicit_resolver copies the table for this subclass only.)
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


class SourceError(ValueError):
    """A file that is not YAML/JSON at all; ``line`` is where the parser gave up."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def _json_tabs_as_spaces(text: str) -> str:
    # YAML forbids tabs as indentation, JSON allows them. JSON also forbids raw tabs inside
    # strings, so in a text that is valid JSON every tab is white space between tokens.
    if "\t" not in text:
        return text
    try:
        json.loads(text)
    except ValueError:
        return text
    return text.replace("\t", " ")


def load_documents(text: str) -> list[Any]:
    """Every document of a YAML (or JSON) text; mappings are ``Located``, lists ``LocatedList``."""
    # A document is hundreds of thousands of small objects, none of them garbage: the cyclic
    # collector would walk the growing heap again and again (a 1 MB file: 1.1 s, 0.3 s without).
    collecting = gc.isenabled()
    gc.disable()
    try:
        loaded = yaml.load_all(_json_tabs_as_spaces(text), Loader=_LineLoader)
        return [d for d in loaded if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = exc.problem or str(exc)
        raise SourceError(f"not valid YAML/JSON: {reason}", line) from exc
    except yaml.YAMLError as exc:
        raise SourceError(f"not valid YAML/JSON: {exc}", 1) from exc
    finally:
        if collecting:
            gc.enable()
