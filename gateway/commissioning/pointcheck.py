"""Checking an edited point table against a site and one of its groups, every problem at once.

Each row is judged on its own (IOA, type, point, settings, derived cells: see ``pointtable``),
then across rows (duplicate IOAs and points, a command's ``related_ioa`` that the table does not
monitor). A problem is reported as ``table.csv:row: column: message``; a clean row becomes a
``PointMap`` or a ``CommandMap``. Status and alarm rows are verified, never written: their IOAs
live under their own keys of the site file.
"""

from dataclasses import dataclass, field
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from gateway.iec104.types import COUNTERS

from gateway.commissioning.pointtable import (COLUMNS, COMMAND_NUMBERS, LIMITS, MONITOR_NUMBERS, TYPES, Row,
                                              derived_cells, parse_float, parse_ioa, parse_yes_no, same_cell,
                                              used_columns)
from gateway.config.loader import Site
from gateway.config.profile import Limits, PointSpec
from gateway.config.source import ConfigProblem
from gateway.northbound.iec104.mapping import carry_problem
from gateway.northbound.iec104.section import CommandMap, MasterGroup, PointMap
from gateway.northbound.iec104.wiretable import STATUS_TYPE, Kind, WireRow, wire_rows

_SENT = {"gi_type": ("answers general interrogation with {}", "is not in the general interrogation"),
         "ci_type": ("answers counter interrogation with {}", "is not in the counter interrogation"),
         "event_type": ("is sent spontaneously as {}", "is never sent spontaneously"),
         "kind": ("is a {} row", ""),
         "gi": ("is {}in the general interrogation", "")}


def point_specs(site: Site) -> dict[str, PointSpec]:
    """Every point of the site's enabled devices, by ``device.point``."""
    return {f"{d.name}.{p.id}": p for d in site.devices for p in d.profile.points}


def kind_of(type_name: str | None) -> Kind | None:
    """The kind of a device row of this type (None for an unknown type)."""
    if type_name is None:
        return None
    return "command" if type_name.startswith("C_") else "counter" if type_name in COUNTERS else "monitor"


@dataclass
class CheckedTable:
    """What a table holds once checked: mappings with their CSV rows, and every problem."""

    points: list[tuple[int, PointMap]] = field(default_factory=list)
    commands: list[tuple[int, CommandMap]] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)


class TableCheck:
    """Checks the rows of one table against a site and one of its groups, collecting every problem.

    IOAs claimed by the group's status and alarm points count as taken whether or not the table
    lists them, so a point cannot silently land on the communication status of a device.
    """

    def __init__(self, site: Site, group: MasterGroup, file: str) -> None:
        self.group, self.file, self.specs = group, file, point_specs(site)
        self.devices = {d.name: d for d in site.devices}
        self.status = {r.point: r for r in wire_rows(group) if r.kind in ("status", "alarm")}
        self.owners: dict[int, str] = {r.ioa: f"{r.point}, {r.source} in the site file" for r in self.status.values()}
        self.first_row: dict[str, int] = {}
        self.monitored: set[int] = set()
        self.result = CheckedTable()

    def bad(self, row: int, column: str, message: str) -> None:
        """Record one problem of one cell."""
        self.result.problems.append(ConfigProblem(self.file, row, column, message))

    def check(self, row: int, cells: dict[str, str]) -> None:
        """Check every cell of one row; a clean device row becomes a mapping."""
        before, point = len(self.result.problems), cells.get("point", "")
        ioa, type_name = self._ioa(row, cells), self._type(row, cells)
        status = self.status.get(point)
        kind = status.kind if status is not None else kind_of(type_name)
        self._same_context(row, cells, ioa)
        if kind is not None:
            self._unused(row, cells, kind)
        if status is not None:
            self._check_status(row, cells, status, ioa, type_name)
        elif kind == "command":
            self._check_command(row, cells, ioa, type_name, before)
        else:
            self._check_monitored(row, cells, ioa, type_name, before)

    def finish(self) -> CheckedTable:
        """Cross-row checks, then the result: a command's return information must be monitored here."""
        for row, command in self.result.commands:
            if command.related_ioa is not None and command.related_ioa not in self.monitored:
                self.bad(row, "related_ioa", f"IOA {command.related_ioa} is not a monitored point of this table "
                                             "(return information is sent at a monitored IOA)")
        return self.result

    # -- one kind of row ------------------------------------------------------------------------

    def _check_monitored(self, row: int, cells: dict[str, str], ioa: int | None, type_name: str | None,
                         before: int) -> None:
        point, kind = cells.get("point", ""), kind_of(type_name)
        fields = {"point": point, "ioa": ioa, "type": type_name,
                  **self._numbers(row, cells, MONITOR_NUMBERS), **self._gi(row, cells, kind)}
        mapping = self._validated(row, PointMap, fields, "deadband") if len(self.result.problems) == before else None
        if not self._first_sight(row, point, unique=True):
            return
        spec = self._spec(row, point)
        self._claim(row, ioa, point)
        if ioa is not None:
            self.monitored.add(ioa)
        if mapping is None or spec is None:
            return
        if (why := carry_problem(mapping, spec)) is not None:
            self.bad(row, "type", why)
            return
        self._derived(row, cells, WireRow(kind, mapping.ioa, point, point.split(".")[0], mapping.type, mapping), None)
        if len(self.result.problems) == before:
            self.result.points.append((row, mapping))

    def _check_command(self, row: int, cells: dict[str, str], ioa: int | None, type_name: str | None,
                       before: int) -> None:
        point = cells.get("point", "")
        fields = {"point": point, "ioa": ioa, "type": type_name, **self._numbers(row, cells, COMMAND_NUMBERS),
                  **self._command_options(row, cells)}
        command = self._validated(row, CommandMap, fields, "multiplier") if len(self.result.problems) == before else None
        if not self._first_sight(row, point, unique=False):
            return
        spec = self._spec(row, point)
        self._claim(row, ioa, f"command {point}")
        if spec is not None and spec.writable is None:
            self.bad(row, "point", f"{point} is not writable (its profile gives no writable limits)")
        if command is None or spec is None or spec.writable is None:
            return
        self._derived(row, cells, WireRow("command", command.ioa, point, point.split(".")[0], command.type,
                                          command=command), spec.writable)
        if len(self.result.problems) == before:
            self.result.commands.append((row, command))

    def _check_status(self, row: int, cells: dict[str, str], status: WireRow, ioa: int | None,
                      type_name: str | None) -> None:
        if not self._first_sight(row, status.point, unique=True):
            return
        if ioa is not None and ioa != status.ioa:
            self.bad(row, "ioa", f"{status.point} is IOA {status.ioa}: change {status.source} in the site file")
        if type_name is not None and type_name != STATUS_TYPE:
            self.bad(row, "type", f"{status.point} is always {STATUS_TYPE}")
            return
        self._derived(row, cells, status, None)

    # -- cells ----------------------------------------------------------------------------------

    def _ioa(self, row: int, cells: dict[str, str]) -> int | None:
        try:
            return parse_ioa(cells.get("ioa", ""))
        except ValueError as exc:
            self.bad(row, "ioa", str(exc))
            return None

    def _type(self, row: int, cells: dict[str, str]) -> str | None:
        kind = cells.get("type", "").upper()
        if kind not in TYPES:
            self.bad(row, "type", f"unknown type {cells.get('type', '')!r} (known: {', '.join(TYPES)})")
            return None
        return kind

    def _numbers(self, row: int, cells: dict[str, str], columns: Iterable[str]) -> dict[str, float]:
        numbers: dict[str, float] = {}
        for column in columns:
            if cells.get(column):
                try:
                    numbers[column] = parse_float(cells[column])
                except ValueError as exc:
                    self.bad(row, column, str(exc))
        return numbers

    def _gi(self, row: int, cells: dict[str, str], kind: Kind | None) -> dict[str, bool]:
        """``gi`` where it is a setting (monitor rows); a counter's gi is derived, checked later."""
        if kind == "counter" or not cells.get("gi"):
            return {}
        try:
            return {"gi": parse_yes_no(cells["gi"])}
        except ValueError as exc:
            self.bad(row, "gi", str(exc))
            return {}

    def _command_options(self, row: int, cells: dict[str, str]) -> dict[str, Any]:
        options: dict[str, Any] = {"mode": cells["mode"].lower()} if cells.get("mode") else {}
        if cells.get("related_ioa"):
            try:
                options["related_ioa"] = parse_ioa(cells["related_ioa"])
            except ValueError as exc:
                self.bad(row, "related_ioa", str(exc))
        return options

    def _unused(self, row: int, cells: dict[str, str], kind: Kind) -> None:
        used = used_columns(kind)
        for column in COLUMNS:
            if cells.get(column) and column not in used:
                self.bad(row, column, f"not used by {kind} rows: leave it empty")

    def _derived(self, row: int, cells: dict[str, str], wire: WireRow, limits: Limits | None) -> None:
        """Filled derived cells must say what the row implies (``pointtable``)."""
        for column, derived in derived_cells(wire, limits).items():
            given = cells.get(column, "")
            if given and not same_cell(column, given, derived):
                self.bad(row, column, self._disagreement(column, given, derived, wire))

    def _disagreement(self, column: str, given: str, derived: str, wire: WireRow) -> str:
        if column in LIMITS:
            device = self.devices[wire.device]
            return (f"{given} disagrees with the profile: {column} of {wire.point} is {derived or 'not set'} "
                    f"(writable limits of {device.profile_file.name}); change the profile, or clear {column}")
        said, unsaid = _SENT[column]
        what = said.format("" if derived == "yes" else "not " if derived == "no" else derived) if derived else unsaid
        basis = f"{wire.point} ({wire.type})" if wire.kind in ("status", "alarm") else f"type {wire.type}"
        if wire.kind == "counter":
            basis += " (counters answer counter interrogation only)"
        elif wire.mapping is not None and not wire.mapping.gi and wire.kind == "monitor":
            basis += " with gi: no"
        return f"{given} disagrees with {basis}: the row {what}; clear {column}, or change the row"

    def _first_sight(self, row: int, point: str, unique: bool) -> bool:
        if not point:
            self.bad(row, "point", "empty: give device.point")
            return False
        if unique and point in self.first_row:
            self.bad(row, "point", f"duplicate point {point!r} (first at row {self.first_row[point]})")
            return False
        if unique:
            self.first_row[point] = row
        return True

    def _spec(self, row: int, point: str) -> PointSpec | None:
        spec = self.specs.get(point)
        if spec is None:
            device, _, point_id = point.partition(".")
            if not point_id or " " in point:
                known = ", ".join(self.status) or "none"
                self.bad(row, "point", f"{point!r} is neither device.point nor a status row of group "
                                       f"{self.group.name!r} (status rows: {known})")
            elif device not in self.devices:
                self.bad(row, "point", f"no device {device!r} in this site (point is device.point)")
            else:
                self.bad(row, "point", f"no point {point_id!r} in {device} "
                                       f"(profile {self.devices[device].profile_file.name})")
        return spec

    def _claim(self, row: int, ioa: int | None, what: str) -> None:
        if ioa is not None and ioa in self.owners:
            self.bad(row, "ioa", f"duplicate IOA {ioa} (already {self.owners[ioa]})")
        elif ioa is not None:
            self.owners[ioa] = f"{what}, row {row}"

    def _same_context(self, row: int, cells: dict[str, str], ioa: int | None) -> None:
        """Informational columns that disagree mean the table was edited in the wrong place."""
        hex_text, ca = cells.get("ioa_hex", ""), cells.get("common_address", "")
        if hex_text and ioa is not None:
            try:
                agrees = parse_ioa(hex_text) == ioa
            except ValueError:
                agrees = False
            if not agrees:
                self.bad(row, "ioa_hex", f"{hex_text} disagrees with ioa {ioa} (0x{ioa:04X}): fix one, or clear ioa_hex")
        if ca and ca != str(self.group.common_address):
            self.bad(row, "common_address", f"{ca} is not the common address {self.group.common_address} of group "
                                            f"{self.group.name!r} (set per group in the site file)")
        device, point = cells.get("device", ""), cells.get("point", "")
        if device and "." in point and not point.startswith(f"{device}."):
            self.bad(row, "device", f"{device!r} is not the device of {point!r}")

    def _validated(self, row: int, model: type[BaseModel], fields: dict[str, Any], fallback: str) -> Any:
        """The mapping, or None after reporting the limits and combinations it breaks."""
        try:
            return model.model_validate(fields)
        except ValidationError as exc:
            for err in exc.errors():
                message = err["msg"].removeprefix("Value error, ")
                column = str(err["loc"][0]) if err["loc"] else ("full_scale" if "full_scale" in message else fallback)
                if column != "point":  # reported by _spec, in words
                    self.bad(row, column, message)
            return None


def check_table(rows: Iterable[Row], site: Site, group: MasterGroup, file: str) -> CheckedTable:
    """The table's mappings and commands with their row numbers, and every problem found in it."""
    check = TableCheck(site, group, file)
    for row, cells in rows:
        check.check(row, cells)
    return check.finish()
