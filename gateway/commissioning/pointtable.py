"""The point table's CSV format: its columns, which of them each kind of row uses, and reading it back.

Columns fall in three sorts. *Settings* are read back into the site file (``type``, ``point``,
``ioa``, deadbands, scaling, ``gi``, and for commands ``mode``, ``related_ioa``, ``on_value``,
``off_value``). *Derived* columns say what the row implies on the wire or in the profile
(``kind``, ``gi_type``, ``ci_type``, ``event_type``; ``gi`` of counters, status and alarm rows;
``min``, ``max``, ``ramp_per_s`` of commands, from the profile's ``writable`` limits): an import
checks a filled derived cell against what the row implies and reports a disagreement like any
other problem, because an edited derived cell means someone expected an effect that the site
file cannot give (a gi_type is changed through ``type``, limits in the device profile). An
empty derived cell is not checked, so a short table of ``point,ioa,type`` stays valid.
*Informational* columns (``ioa_hex``, ``device``, ``common_address``) must agree with the row
and the group; ``name`` and ``unit`` come from the profile and are not read. A setting filled in
on a kind of row that does not use it (a deadband on a command) is reported, never dropped.
"""

import csv
import io
import math
from pathlib import Path
from typing import get_args

from gateway.config.profile import Limits
from gateway.config.source import ConfigErrors, ConfigProblem
from gateway.iec104.types import IOA_MAX, CommandType, MonitorType
from gateway.northbound.iec104.wiretable import WireRow

COLUMNS = ("ioa", "ioa_hex", "kind", "type", "gi_type", "ci_type", "event_type", "device", "point", "name", "unit",
           "deadband", "deadband_percent", "full_scale", "multiplier", "gi", "mode", "related_ioa", "on_value",
           "off_value", "min", "max", "ramp_per_s", "common_address")
REQUIRED = ("point", "ioa", "type")
TYPES = get_args(MonitorType) + get_args(CommandType)
INFORMATIONAL = frozenset({"ioa", "ioa_hex", "type", "device", "point", "name", "unit", "common_address"})
WIRE_TYPES = ("kind", "gi_type", "ci_type", "event_type")
LIMITS = ("min", "max", "ramp_per_s")
MONITOR_NUMBERS = ("deadband", "deadband_percent", "full_scale", "multiplier")
COMMAND_NUMBERS = ("on_value", "off_value", "full_scale", "multiplier")
SETTINGS = {"monitor": frozenset(MONITOR_NUMBERS + ("gi",)), "counter": frozenset(MONITOR_NUMBERS),
            "status": frozenset(), "alarm": frozenset(),
            "command": frozenset(COMMAND_NUMBERS + ("mode", "related_ioa"))}
YES, NO = {"yes", "y", "true", "1", "是"}, {"no", "n", "false", "0", "否"}

Row = tuple[int, dict[str, str]]


def number(value: float | None) -> str:
    """A number as the table writes it (empty for none)."""
    return "" if value is None else f"{value:.15g}"


def derived_cells(row: WireRow, limits: Limits | None) -> dict[str, str]:
    """The derived columns of ``row``: its wire types, ``gi`` where it is not a setting, a command's limits."""
    cells = {"kind": row.kind, "gi_type": row.gi_type or "", "ci_type": row.ci_type or "",
             "event_type": row.event_type or ""}
    if row.kind in ("counter", "status", "alarm"):
        cells["gi"] = "yes" if row.gi_type else "no"
    if row.kind == "command":
        cells |= {"min": number(limits.min if limits else None), "max": number(limits.max if limits else None),
                  "ramp_per_s": number(limits.ramp_per_s if limits else None)}
    return cells


def used_columns(kind: str) -> frozenset[str]:
    """The columns a row of ``kind`` may fill: informational, derived, and its settings."""
    derived = WIRE_TYPES + (LIMITS if kind == "command" else ("gi",) if kind in ("counter", "status", "alarm") else ())
    return INFORMATIONAL | SETTINGS[kind] | frozenset(derived)


def same_cell(column: str, given: str, derived: str) -> bool:
    """Whether a filled derived cell says what the row implies (numbers by value, words in any case)."""
    if column in LIMITS and given and derived:
        try:
            return float(given) == float(derived)
        except ValueError:
            return False
    if column == "gi":
        return given.lower() in (YES if derived == "yes" else NO)
    return given.upper() == derived.upper()


# ---- reading ------------------------------------------------------------------------------------

def _decode(raw: bytes) -> str:
    """UTF-8 (BOM or not); else GB18030, because Excel saves plain "CSV" as GBK on Chinese Windows."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("gb18030", errors="replace")


def read_table(path: Path) -> tuple[list[Row], list[ConfigProblem]]:
    """The non-blank rows as (row number, header = 1; cells by column), and header problems.

    Row numbers count CSV records, as Excel numbers its rows, not physical lines.
    """
    file = str(path)
    try:
        records = list(csv.reader(io.StringIO(_decode(path.read_bytes()), newline="")))
    except OSError as exc:
        raise ConfigErrors([ConfigProblem(file, 0, "", f"cannot read: {exc.strerror}")]) from exc
    except csv.Error as exc:
        raise ConfigErrors([ConfigProblem(file, 0, "", f"not a CSV file: {exc}")]) from exc
    if not records:
        raise ConfigErrors([ConfigProblem(file, 1, "", "empty file: no header row")])
    header = [cell.strip().lower() for cell in records[0]]
    problems = _header_problems(header, file)
    rows = []
    for row_number, cells in enumerate(records[1:], start=2):
        if any(cell.strip() for cell in cells):
            rows.append((row_number, {col: cell.strip() for col, cell in zip(header, cells) if col}))
            if any(cell.strip() for cell in cells[len(header):]):
                problems.append(ConfigProblem(file, row_number, "", f"{len(cells)} cells, the header has {len(header)}"))
    return rows, problems


def _header_problems(header: list[str], file: str) -> list[ConfigProblem]:
    problems = [ConfigProblem(file, 1, col, "missing required column") for col in REQUIRED if col not in header]
    for index, col in enumerate(header):
        if col and col not in COLUMNS:
            problems.append(ConfigProblem(file, 1, col, f"unknown column (known: {', '.join(COLUMNS)})"))
        elif col and col in header[:index]:
            problems.append(ConfigProblem(file, 1, col, "duplicate column"))
    return problems


def parse_ioa(text: str) -> int:
    """A decimal or ``0x`` hex IOA within 1..16777215; ValueError saying what is wrong."""
    if not text:
        raise ValueError("empty: give the IOA")
    try:
        ioa = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise ValueError(f"bad number {text!r} (decimal, or hex as 0x4001)") from None
    if not 1 <= ioa <= IOA_MAX:
        raise ValueError(f"IOA {ioa} outside 1..{IOA_MAX}")
    return ioa


def parse_float(text: str) -> float:
    """A finite number; ValueError saying what is wrong."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"bad number {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"bad number {text!r} (not finite)")
    return value


def parse_yes_no(text: str) -> bool:
    """yes/no in the spellings Excel users type; ValueError otherwise."""
    if text.lower() in YES:
        return True
    if text.lower() in NO:
        return False
    raise ValueError(f"bad value {text!r} (yes or no)")
