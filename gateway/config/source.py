"""YAML loading that remembers where every node came from.

PyYAML's plain loaders drop positions. Validation errors must name ``file:line``, so mappings and
sequences are loaded as ``dict``/``list`` subclasses that keep the line of each key or item.
Duplicate keys (silently last-wins in PyYAML) are reported as errors.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml


Problem = tuple[tuple[Any, ...], str]
"""A finding of a check before it has a file and line: (location in the YAML tree, message)."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One validation finding, printed as ``file:line: path: message``."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path or '<root>'}: {self.message}"


class ConfigErrors(Exception):
    """Every problem found in one run, in file and line order."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class LineDict(dict):
    """A mapping that knows its own line and the line of each key (1-based)."""

    line: int = 1
    key_lines: dict[Any, int]


class LineList(list):
    """A sequence that knows its own line and the line of each item (1-based)."""

    line: int = 1
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building LineDict/LineList; duplicate keys are collected, not merged."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.file = file
        self.duplicates: list[ConfigProblem] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:
        result = LineDict()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in result:
                self.duplicates.append(ConfigProblem(self.file, line, str(key), "duplicate key"))
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = line
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:
        result = LineList(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_sequence)


def load_yaml(path: Path) -> Any:
    """Parse ``path``; raise ConfigErrors for unreadable files, syntax errors and duplicate keys."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors([ConfigProblem(file, 0, "", f"cannot read: {exc.strerror}")]) from exc
    loader = _LineLoader(text, file)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigErrors([ConfigProblem(file, line, "", f"YAML syntax: {exc.problem}")]) from exc
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigErrors(loader.duplicates)
    return data


def line_of(tree: Any, loc: Sequence[Any]) -> int:
    """The line of the deepest node along ``loc`` that has a known position."""
    line = getattr(tree, "line", 1)
    node = tree
    for part in loc:
        if isinstance(node, LineDict) and part in node:
            line = node.key_lines.get(part, line)
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
    return line


def dotted(loc: Sequence[Any]) -> str:
    """``('points', 3, 'type')`` -> ``points[3].type``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
