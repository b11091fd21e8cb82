"""A master group's point table (点表) as CSV: exported for the dispatch centre, imported back.

A dispatch centre commissions a 104 link point by point against its own table, usually kept in
Excel, so the table is the wire: one row per IOA the outstation serves (``wiretable``), the
IOA in decimal and hex, the configured type and the types actually sent in general
interrogation, counter interrogation and spontaneously, the comm-status and alarm points, and
every command IOA with its mode, target point, limits and return-information IOA. The columns
and which of them an import reads are in ``pointtable``.

Import takes an edited table back, checks every row against the site (``pointcheck``), reports
every problem at once (``table.csv:row: column: message``) and rewrites only the group's
``points:`` and ``commands:`` lists in the site file, as text (``gateway.commissioning.yamlpatch``), so
every other line and comment of the file stays. The table is the group's whole table: a device
point or command missing from it is removed from the group. Export, import, export gives the
same bytes.
"""

import csv
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, TextIO

import yaml

from gateway.commissioning.groups import find_group
from gateway.commissioning.pointcheck import check_table, point_specs
from gateway.commissioning.pointtable import COLUMNS, derived_cells, number, read_table
from gateway.commissioning.yamlpatch import replace_group_lists
from gateway.config.loader import Site, load_site
from gateway.config.profile import PointSpec
from gateway.config.source import ConfigErrors, ConfigProblem
from gateway.northbound.iec104.section import CommandMap, PointMap
from gateway.northbound.iec104.wiretable import WireRow, wire_rows
from gateway.registry import Plugins

_SWITCHING = ("C_SC", "C_DC")
_SCALED = ("C_SE_NB_1", "C_SE_TB_1")


class Imported(NamedTuple):
    """How many device points and command IOAs an import wrote."""

    points: int
    commands: int


# ---- export -------------------------------------------------------------------------------------

def export_rows(site: Site, group: str) -> list[dict[str, str]]:
    """The group's point table as CSV-ready rows (every column in ``COLUMNS``), sorted by IOA."""
    _, spec = find_group(site, group)
    specs = point_specs(site)
    return [_cells(row, specs.get(row.point), str(spec.common_address)) for row in wire_rows(spec)]


def _cells(row: WireRow, spec: PointSpec | None, common_address: str) -> dict[str, str]:
    cells = dict.fromkeys(COLUMNS, "")
    cells |= {"ioa": str(row.ioa), "ioa_hex": f"0x{row.ioa:04X}", "type": row.type, "device": row.device,
              "point": row.point, "name": spec.name if spec else row.name, "unit": spec.unit if spec else "",
              "common_address": common_address}
    cells |= derived_cells(row, spec.writable if spec else None)
    if row.kind in ("monitor", "counter") and row.mapping is not None:
        cells |= _monitor_settings(row.mapping, row.kind)
    if row.command is not None:
        cells |= _command_settings(row.command)
    return cells


def _monitor_settings(mapping: PointMap, kind: str) -> dict[str, str]:
    settings = {"deadband": number(mapping.deadband), "deadband_percent": number(mapping.deadband_percent),
                "full_scale": number(mapping.full_scale), "multiplier": number(mapping.multiplier)}
    if kind == "monitor":
        settings["gi"] = "yes" if mapping.gi else "no"
    return settings


def _command_settings(command: CommandMap) -> dict[str, str]:
    """Mode and return IOA always; the values and scaling the type uses, or that differ from the defaults."""
    switching = command.type.startswith(_SWITCHING)
    return {"mode": command.mode, "related_ioa": "" if command.related_ioa is None else str(command.related_ioa),
            "on_value": number(command.on_value) if switching or command.on_value != 1 else "",
            "off_value": number(command.off_value) if switching or command.off_value != 0 else "",
            "full_scale": number(command.full_scale),
            "multiplier": number(command.multiplier) if command.type in _SCALED or command.multiplier != 1 else ""}


def write_csv(rows: Iterable[Mapping[str, str]], stream: TextIO) -> None:
    """Write the rows as CSV, starting with a UTF-8 byte-order mark.

    The BOM is why Excel on a Chinese Windows opens the file as UTF-8 instead of GBK; open
    ``stream`` with ``encoding="utf-8", newline=""`` so the mark and the CRLF rows arrive intact.
    """
    stream.write("\ufeff")
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)


# ---- writing the table back into the site file --------------------------------------------------

def point_line(mapping: PointMap) -> str:
    """One YAML flow mapping, only the keys that differ from the defaults."""
    data: dict[str, Any] = {"point": mapping.point, "ioa": mapping.ioa, "type": mapping.type}
    for key in ("deadband", "deadband_percent", "full_scale"):
        if getattr(mapping, key) is not None:
            data[key] = _plain(getattr(mapping, key))
    if mapping.multiplier != 1:
        data["multiplier"] = _plain(mapping.multiplier)
    if not mapping.gi:
        data["gi"] = False
    return _flow(data)


def command_line(command: CommandMap) -> str:
    """One YAML flow mapping of a command IOA, only the keys that differ from the defaults."""
    data: dict[str, Any] = {"ioa": command.ioa, "type": command.type, "point": command.point}
    for key in ("mode", "related_ioa", "on_value", "off_value", "full_scale", "multiplier"):
        value = getattr(command, key)
        if value != CommandMap.model_fields[key].default:
            data[key] = _plain(value) if isinstance(value, float) else value
    return _flow(data)


def _flow(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, default_flow_style=True, sort_keys=False, width=1 << 20, allow_unicode=True).strip()


def _plain(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def _replace_atomically(path: Path, data: bytes, check: Callable[[Path], None]) -> None:
    """Write ``data`` next to ``path``, let ``check`` judge that file, and only then rename it over ``path``."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, stat.S_IMODE(path.stat().st_mode))
        check(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


class _Written(NamedTuple):
    """The lists an import writes, each item with its CSV row."""

    points: list[tuple[int, PointMap]]
    commands: list[tuple[int, CommandMap]]


def _verify(candidate: Path, site: Site, index: int, written: _Written, csv_file: str,
            plugins: Plugins) -> None:
    """Load the rewritten file like ``gridgate check`` and prove only the group's points and commands changed."""
    try:
        rewritten = load_site(candidate, plugins)
    except ConfigErrors as exc:
        raise ConfigErrors(_relocate(p, candidate, site.file, index, written, csv_file) for p in exc.problems) from None
    groups = list(site.spec.master_groups)
    groups[index] = groups[index].model_copy(update={"points": [m for _, m in written.points],
                                                     "commands": [c for _, c in written.commands]})
    if rewritten.spec != site.spec.model_copy(update={"master_groups": groups}):
        raise ConfigErrors([ConfigProblem(str(site.file), 0, f"master_groups[{index}]", "the rewritten file would "
                                          "differ in more than these points and commands; left unchanged")])


def _relocate(problem: ConfigProblem, candidate: Path, site_file: Path, index: int, written: _Written,
              csv_file: str) -> ConfigProblem:
    """A problem of the candidate file, named by its CSV row where it is about one imported row."""
    if problem.file != str(candidate):
        return problem
    found = re.match(rf"master_groups\[{index}\]\.(points|commands)\[(\d+)\]\.?(\w*)", problem.path)
    items = getattr(written, found[1]) if found else []
    if found and int(found[2]) < len(items):
        return ConfigProblem(csv_file, items[int(found[2])][0], found[3] or "point", problem.message)
    return ConfigProblem(str(site_file), problem.line, problem.path, f"{problem.message} (after import; not saved)")


def import_csv(csv_path: Path, site_path: Path, group: str, plugins: Plugins) -> Imported:
    """Replace the group's points and commands with the table in ``csv_path``; how many of each were written.

    Columns ``point``, ``ioa`` and ``type`` are required, the others of the export optional.
    On any problem the site file is left as it was and ConfigErrors lists them all; the new file
    replaces the old one only after it passed ``load_site``, so a reader never sees a
    half-written or invalid site. A group without command rows and without a ``commands:`` key
    gets none added.
    """
    site = load_site(site_path, plugins)
    index, spec = find_group(site, group)
    rows, problems = read_table(csv_path)
    if any(p.line == 1 and p.message in ("missing required column", "duplicate column") for p in problems):
        raise ConfigErrors(problems)
    checked = check_table(rows, site, spec, str(csv_path))
    if problems or checked.problems:
        raise ConfigErrors(problems + checked.problems)
    written = _Written(sorted(checked.points, key=lambda item: item[1].ioa),
                       sorted(checked.commands, key=lambda item: item[1].ioa))
    lists = {"points": [point_line(m) for _, m in written.points]}
    if written.commands or spec.commands:
        lists["commands"] = [command_line(c) for _, c in written.commands]
    new_text = replace_group_lists(site_path, index, lists)
    _replace_atomically(site_path, new_text.encode("utf-8"),
                        lambda candidate: _verify(candidate, site, index, written, str(csv_path), plugins))
    return Imported(len(written.points), len(written.commands))
