"""Rewriting one master group's ``points:`` and ``commands:`` blocks of a site file, as text.

A site file is edited by hand and carries comments that matter (who issued a table, when, which
bay a device sits in). PyYAML drops comments, so loading the file, changing the data and dumping
it back would lose them and reorder the rest. Instead the block is found by the line numbers
``load_yaml`` records and replaced line for line: every other line, comment and line end (LF or
CRLF) of the file stays as it was.
"""

import re
from pathlib import Path
from typing import Any, Mapping

from gateway.config.source import ConfigErrors, ConfigProblem, load_yaml

_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def replace_group_lists(path: Path, index: int, lists: Mapping[str, list[str]]) -> str:
    """The text of the site file at ``path`` with lists of ``master_groups[index]`` replaced.

    ``lists`` maps a key (``points``, ``commands``) to its items, each one YAML line (a flow
    mapping such as ``{point: pcs1.p, ioa: 1, type: M_SP_TB_1}``) written as one ``- item`` of a
    block list; no items give ``key: []``. A key the group lacks is added after its last key, in
    the order of ``lists``. Comments between old items go with them; the key line's comment and
    the comments after the block stay. A group written in flow style (``- {name: ...}``) cannot
    be rewritten and raises ConfigErrors. The file is not written.

    Every splice uses the line numbers of the file as read, so the blocks are replaced from the
    end of the group backwards: keys to add first (each lands right after the group's last key,
    so the later-listed ones go first), then the existing blocks from the last one up.
    """
    text = path.read_bytes().decode("utf-8")
    group = load_yaml(path)["master_groups"][index]
    added = [key for key in reversed(list(lists)) if key not in group]
    present = sorted((key for key in lists if key in group), key=lambda key: -group.key_lines[key])
    for key in added + present:
        text = _splice(text, group, key, lists[key], str(path))
    return text


def _is_content(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def _block_end(lines: list[str], start: int, column: int) -> int:
    """Index of the last content line of the block whose key sits on ``lines[start]`` at ``column``.

    Comments and blank lines after that line belong to whatever follows, so they stay.
    """
    end = start
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if not _is_content(line):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent > column or (indent == column and re.match(r"-(\s|$)", line.lstrip(" "))):
            end = index
            continue
        break
    return end


def _key_column(line: str, key: str) -> re.Match[str] | None:
    return re.match(rf"""^(\s*(?:-\s+)?)(["']?){re.escape(key)}\2\s*:""", line)


def _splice(text: str, group_tree: Any, name: str, items: list[str], file: str) -> str:
    """``text`` with the group's ``name:`` block replaced by ``items`` (or added after the group).

    ``group_tree`` is the group as ``load_yaml`` read it from ``text``: its key lines say where
    the block starts.
    """
    lines = _LINES.findall(text)
    newline = next((m.group() for m in re.finditer(r"\r\n|\r|\n", text)), "\n")
    if name in group_tree:
        key, head_index = name, group_tree.key_lines[name] - 1
    else:
        key = max(group_tree.key_lines, key=group_tree.key_lines.get)
        head_index = group_tree.key_lines[key] - 1
    match = _key_column(lines[head_index], key)
    if match is None:
        raise ConfigErrors([ConfigProblem(file, head_index + 1, key, f"cannot rewrite the {name} of a group "
                                          "written in flow style ({...}); write the group in block style")])
    column = len(match.group(1))
    end = _block_end(lines, head_index, column)
    block = [" " * (column + 2) + "- " + item + newline for item in items]
    empty = "" if items else " []"
    if key == name:
        rest = lines[head_index][match.end():].rstrip("\r\n")
        tail = rest if rest.strip().startswith("#") or not rest.strip() else ""
        return "".join(lines[:head_index] + [lines[head_index][:match.end()] + empty + tail + newline]
                       + block + lines[end + 1:])
    last = lines[end] if lines[end].endswith(("\n", "\r")) else lines[end] + newline
    return "".join(lines[:end] + [last, " " * column + f"{name}:" + empty + newline] + block + lines[end + 1:])
