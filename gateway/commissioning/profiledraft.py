"""Drafting the IEC 104 master's profile of a station from its point table (点表): ``gridgate points to-profile``.

A station's vendor hands over its point table as a spreadsheet, and typing it into a profile by
hand is where IOAs get swapped and scales lost. The table is read in the columns ``points
export`` writes (``pointtable``: UTF-8 with or without BOM, or GB18030), and each row becomes
part of an ``iec104`` profile:

* a monitored row (``M_...``) is a point: its id is the ``point`` cell (the part after the last
  ``.`` of ``device.point``), its type the one the station sends spontaneously (``event_type``
  when filled, else ``type``; the driver takes the untagged twin too), ``name`` and ``unit`` as
  given, and the scale the station's scaling implies, read as the outstation's own mapping reads
  it: normalized, value = fraction x ``full_scale``; scaled and counters, value = integer /
  ``multiplier``;
* a command row (``C_...``) is the ``command:`` of the monitored point that confirms it: the one
  at its ``related_ioa``, else the one its ``point`` cell names. ``mode`` defaults to
  select-before-operate for switching commands and to direct for setpoints, the usual practice;
  ``min``/``max`` are the point's writable limits, which a setpoint must give (a C_SC carries
  0/1, a C_DC 1 off / 2 on, and those are their defaults). The driver sends a setpoint as value
  / the point's scale, so a setpoint whose own scaling disagrees with its point's is a problem;
* status and alarm rows (a gateway's own comm-status and alarm points, in a table it exported)
  are no points of the station: skipped, with a note.

The station's serving settings (deadbands, ``gi``, a command's ``on_value``/``off_value``) say
how it sends, not how a master reads, and are not carried. Every problem is collected and
reported at once as ``table.csv:row: column: message``. The draft is validated by the ``iec104``
driver's own profile model, found through the plugin registry (commissioning imports no
driver), and its errors are reported against the rows they come from: a draft that is written
is one ``gridgate check`` accepts.
"""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml
from pydantic import ValidationError

from gateway.commissioning.pointtable import TYPES, Row, parse_float, parse_ioa, read_table
from gateway.config.profile import POINT_ID
from gateway.config.source import ConfigErrors, ConfigProblem, dotted
from gateway.iec104.types import COUNTERS, UNTAGGED
from gateway.registry import Plugins

PROTOCOL = "iec104"
KINDS = ("monitor", "counter", "command", "status", "alarm")
_SKIPPED = {"status": "communication status", "alarm": "alarm"}
_NORMALIZED = frozenset({"M_ME_NA_1", "M_ME_TD_1"})
_SCALED = frozenset({"M_ME_NB_1", "M_ME_TE_1"}) | COUNTERS
_SWITCHING = {"C_SC": (0.0, 1.0), "C_DC": (1.0, 2.0)}  # the values each carries: off, on
# where a nested profile key of a commanded point comes from when the model names only its parent
_WHOLE = {"command": "type", "writable": "min"}
T = TypeVar("T")


def _full_scale(text: str) -> float:
    """A normalized point's scale: value = fraction x full_scale."""
    value = parse_float(text)
    if value <= 0:
        raise ValueError(f"{text} is not above 0 (value = normalized fraction x full_scale)")
    return value


def _per_multiplier(text: str) -> float:
    """A scaled point's or counter's scale: value = integer / multiplier."""
    value = parse_float(text)
    if value == 0:
        raise ValueError("0: value = integer / multiplier")
    return 1 / value


_COMMAND_SCALING = {"C_SE_NA_1": ("full_scale", _full_scale), "C_SE_TA_1": ("full_scale", _full_scale),
                    "C_SE_NB_1": ("multiplier", _per_multiplier), "C_SE_TB_1": ("multiplier", _per_multiplier)}


def _plain(value: float) -> float | int:
    """1 rather than 1.0 in the YAML."""
    return int(value) if value.is_integer() else value


@dataclass
class _Point:
    """A monitored row on its way into the profile, and which row and column each key came from."""

    row: int
    data: dict[str, Any]
    scale: float | None
    columns: dict[str, str]
    command_row: int | None = None

    def where(self, loc: tuple[Any, ...]) -> tuple[int, str]:
        """The row and column behind the profile location ``loc`` (below the point)."""
        head = str(loc[0]) if loc else "command"
        if self.command_row is not None and head in _WHOLE:
            return self.command_row, str(loc[1]) if len(loc) > 1 else _WHOLE[head]
        return self.row, self.columns.get(head, head) if loc else "type"


@dataclass
class Draft:
    """The drafted profile, where it came from, and the notes about rows it left out."""

    source: str
    profile: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def points(self) -> int:
        """How many points the draft has."""
        return len(self.profile["points"])

    @property
    def commands(self) -> int:
        """How many of its points are commanded."""
        return sum(1 for point in self.profile["points"] if "command" in point)

    def text(self) -> str:
        """The profile as YAML, headed by where it came from and what a person must still judge."""
        header = (f"# Drafted from {self.source} by gridgate points to-profile.\n"
                  "# Review before use: names, units and scaling (scale, offset), and each command's mode "
                  "and qualifier.\n")
        return header + yaml.safe_dump(self.profile, sort_keys=False, allow_unicode=True)


class _Drafting:
    """Reads the rows of one table into profile points, collecting every problem."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []
        self.notes: list[str] = []
        self.points: list[_Point] = []
        self.by_ioa: dict[int, _Point] = {}
        self.by_id: dict[str, _Point] = {}
        self.ioas: dict[int, int] = {}  # every IOA of the table -> its first row

    def bad(self, row: int, column: str, message: str) -> None:
        """Record one problem of one cell."""
        self.problems.append(ConfigProblem(self.file, row, column, message))

    def read(self, rows: list[Row]) -> None:
        """Monitored rows first, so a command finds its point wherever the table lists it."""
        commands = []
        for row, cells in rows:
            kind, type_name = cells.get("kind", "").lower(), cells.get("type", "").upper()
            if kind in _SKIPPED:
                self.notes.append(f"{self.file}:{row}: {kind} row {cells.get('point', '')!r} skipped: the gateway's "
                                  f"own {_SKIPPED[kind]}, no point of the station")
                continue
            if kind and kind not in KINDS:
                self.bad(row, "kind", f"unknown kind {cells['kind']!r} (known: {', '.join(KINDS)})")
            if type_name not in TYPES:
                self.bad(row, "type", f"unknown type {cells.get('type', '')!r} (known: {', '.join(TYPES)})")
            elif type_name.startswith("C_"):
                commands.append((row, cells, type_name))
            else:
                self._monitored(row, cells, type_name)
        for row, cells, type_name in commands:
            self._command(row, cells, type_name)

    # -- cells ----------------------------------------------------------------------------------

    def _parsed(self, row: int, cells: dict[str, str], column: str, parse: Callable[[str], T],
                required: bool = False) -> T | None:
        """The parsed cell; None when it is empty (a problem if ``required``) or wrong (a problem)."""
        text = cells.get(column, "")
        if not text and not required:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            self.bad(row, column, str(exc))
            return None

    def _ioa(self, row: int, cells: dict[str, str]) -> int | None:
        """The row's IOA, claimed for it: one point or command per IOA, and ``ioa_hex`` must agree."""
        ioa = self._parsed(row, cells, "ioa", parse_ioa, required=True)
        hex_ioa = self._parsed(row, cells, "ioa_hex", parse_ioa)
        if ioa is None:
            return None
        if hex_ioa is not None and hex_ioa != ioa:
            self.bad(row, "ioa_hex", f"{cells['ioa_hex']} disagrees with ioa {ioa} (0x{ioa:04X}): fix one, "
                                     "or clear ioa_hex")
        if ioa in self.ioas:
            self.bad(row, "ioa", f"duplicate IOA {ioa} (first at row {self.ioas[ioa]})")
        self.ioas.setdefault(ioa, row)
        return ioa

    def _point_id(self, row: int, cells: dict[str, str]) -> str | None:
        cell = cells.get("point", "")
        point_id = cell.rsplit(".", 1)[-1]
        if not cell:
            self.bad(row, "point", "empty: give the point's id")
        elif not re.match(POINT_ID, point_id):
            self.bad(row, "point", f"{point_id!r} is not a point id (lower-case letters, digits and _, "
                                   "starting with a letter)")
        elif point_id in self.by_id:
            self.bad(row, "point", f"duplicate point {point_id!r} (first at row {self.by_id[point_id].row})")
        else:
            return point_id
        return None

    def _sent_type(self, row: int, cells: dict[str, str], type_name: str) -> tuple[str, str]:
        """The type sent spontaneously and its column: ``event_type`` when filled, a twin of ``type``."""
        sent = cells.get("event_type", "").upper()
        if not sent:
            return type_name, "type"
        if UNTAGGED.get(sent, sent) != UNTAGGED.get(type_name, type_name):
            self.bad(row, "event_type", f"{cells['event_type']!r} is not {type_name} or its twin with or without "
                                        "time tag")
        return sent, "event_type"

    def _scale(self, row: int, cells: dict[str, str], type_name: str) -> tuple[float | None, str]:
        """The scale the row's scaling implies (1 without one; None when wrong) and its column."""
        if type_name in _NORMALIZED:
            column, parse = "full_scale", _full_scale
        elif type_name in _SCALED:
            column, parse = "multiplier", _per_multiplier
        else:
            return 1.0, "scale"
        scale = self._parsed(row, cells, column, parse)
        return (1.0 if scale is None and not cells.get(column) else scale), column

    # -- rows -----------------------------------------------------------------------------------

    def _monitored(self, row: int, cells: dict[str, str], type_name: str) -> None:
        point_id, ioa = self._point_id(row, cells), self._ioa(row, cells)
        sent, type_column = self._sent_type(row, cells, type_name)
        scale, scale_column = self._scale(row, cells, type_name)
        data: dict[str, Any] = {"id": point_id, "name": cells.get("name", ""), "ioa": ioa, "type": sent,
                                "scale": _plain(scale) if scale is not None else None, "unit": cells.get("unit", "")}
        data = {key: value for key, value in data.items() if value not in ("", None) and (key != "scale" or value != 1)}
        point = _Point(row, data, scale, {"id": "point", "type": type_column, "scale": scale_column})
        self.points.append(point)
        if ioa is not None:
            self.by_ioa.setdefault(ioa, point)
        if point_id is not None:
            self.by_id[point_id] = point

    def _command(self, row: int, cells: dict[str, str], type_name: str) -> None:
        ioa, limits = self._ioa(row, cells), self._limits(row, cells, type_name)
        default_mode = "select_execute" if type_name[:4] in _SWITCHING else "direct"
        target, link = self._target(row, cells)
        if target is None:
            return
        if target.command_row is not None:
            self.bad(row, link, f"{target.data.get('id', 'the point')} (row {target.row}) is already commanded by "
                                f"row {target.command_row}")
            return
        self._same_scale(row, cells, type_name, target)
        target.command_row = row
        target.data["writable"] = limits
        target.data["command"] = {"ioa": ioa, "type": type_name, "mode": cells.get("mode", "").lower() or default_mode}

    def _target(self, row: int, cells: dict[str, str]) -> tuple[_Point | None, str]:
        """The monitored point the command row confirms by: at ``related_ioa``, else named by ``point``."""
        if cells.get("related_ioa"):
            ioa = self._parsed(row, cells, "related_ioa", parse_ioa)
            if ioa is not None and ioa not in self.by_ioa:
                self.bad(row, "related_ioa", f"IOA {ioa} is not a monitored row of this table (the point whose "
                                             "return information confirms the command)")
            return self.by_ioa.get(ioa) if ioa is not None else None, "related_ioa"
        if cells.get("point"):
            target = self.by_id.get(cells["point"].rsplit(".", 1)[-1])
            if target is None:
                self.bad(row, "point", f"{cells['point']!r} is not a monitored point of this table (or give "
                                       "related_ioa: the IOA of the point confirming the command)")
            return target, "point"
        self.bad(row, "related_ioa", "empty, and so is point: give the IOA of the monitored point whose return "
                                     "information confirms the command")
        return None, "related_ioa"

    def _limits(self, row: int, cells: dict[str, str], type_name: str) -> dict[str, float | int | None]:
        """``min``/``max`` (a C_SC or C_DC defaults to the values it carries) and ``ramp_per_s``."""
        defaults = _SWITCHING.get(type_name[:4], (None, None))
        limits: dict[str, float | int | None] = {}
        for column, default in zip(("min", "max"), defaults):
            value = self._parsed(row, cells, column, parse_float)
            if value is None and default is None and not cells.get(column):
                self.bad(row, column, f"empty: a {type_name} needs the point's writable limits (min and max, in "
                                      "engineering units)")
            chosen = value if value is not None else default
            limits[column] = _plain(chosen) if chosen is not None else None
        ramp = self._parsed(row, cells, "ramp_per_s", parse_float)
        if ramp is not None:
            limits["ramp_per_s"] = _plain(ramp)
        return limits

    def _same_scale(self, row: int, cells: dict[str, str], type_name: str, target: _Point) -> None:
        """A setpoint is sent as value / its point's scale: its own scaling must say the same."""
        if not type_name.startswith("C_SE") or target.scale is None:
            return
        column, parse = _COMMAND_SCALING.get(type_name, ("type", None))
        scale = self._parsed(row, cells, column, parse) if parse is not None and cells.get(column) else 1.0
        if scale is None or math.isclose(scale, target.scale):
            return
        says = f"a {type_name} carries the value itself" if column == "type" else f"{column} means scale {scale:g}"
        self.bad(row, column, f"{says}, but {target.data.get('id')} (row {target.row}) has scale {target.scale:g}, "
                              "and the driver sends a command as value / its point's scale: scale both rows alike")

    # -- the profile ----------------------------------------------------------------------------

    def validate(self, profile: dict[str, Any], plugins: Plugins) -> None:
        """Check the draft with the iec104 driver's model and checks, each error put on its row."""
        plugin = plugins.drivers.get(PROTOCOL)
        if plugin is None:
            self.problems.append(ConfigProblem(self.file, 0, "", f"the {PROTOCOL} driver is not installed"))
            return
        try:
            checked = plugin.profile_model.model_validate(profile)
        except ValidationError as exc:
            for err in exc.errors():
                self._misfit(tuple(err["loc"]), err["msg"].removeprefix("Value error, "))
            return
        for loc, message in plugin.profile_problems(checked):
            self._misfit(tuple(loc), message)

    def _misfit(self, loc: tuple[Any, ...], message: str) -> None:
        if len(loc) >= 2 and loc[0] == "points" and isinstance(loc[1], int):
            row, column = self.points[loc[1]].where(loc[2:])
            self.bad(row, column, message)
        else:
            self.problems.append(ConfigProblem(self.file, 0, dotted(loc), message))


def draft_profile(table: Path, plugins: Plugins, model: str | None = None, kind: str = "rtu") -> Draft:
    """The iec104 profile the point table in ``table`` describes; ConfigErrors listing every problem.

    ``model`` defaults to the file's stem upper-cased, the name a vendor's table usually carries.
    """
    rows, problems = read_table(table)
    if any(p.line == 1 and p.message in ("missing required column", "duplicate column") for p in problems):
        raise ConfigErrors(problems)
    drafting = _Drafting(str(table))
    drafting.problems += problems
    drafting.read(rows)
    if drafting.problems:
        raise ConfigErrors(drafting.problems)
    profile = {"model": model or table.stem.upper(), "vendor": "", "kind": kind, "protocol": PROTOCOL,
               "description": f"drafted from {table.name} by gridgate points to-profile",
               "points": [point.data for point in drafting.points]}
    drafting.validate(profile, plugins)
    if drafting.problems:
        raise ConfigErrors(drafting.problems)
    return Draft(table.name, profile, drafting.notes)
