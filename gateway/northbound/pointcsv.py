"""A master group's point table (点表) as CSV: exported for the dispatch centre, imported back.

A dispatch centre commissions a 104 link point by point against its own table, usually kept in
Excel. Export writes the group's table the way the centre reads it: one row per IOA, the IOA in
decimal and hex. Import takes an edited table back, checks every row against the site, reports
every problem at once (``table.csv:row: column: message``) and rewrites only the group's
``points:`` list in the site file, as text (``gateway.config.yamlpatch``), so every other line
and comment of the file stays.
"""

import csv
import io
import math
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TextIO, get_args

import yaml
from pydantic import ValidationError

from gateway.config.iec104 import IOA_MAX, MasterGroup, MonitorType, PointMap
from gateway.config.loader import Site, load_site
from gateway.config.profile import PointSpec
from gateway.config.source import ConfigErrors, ConfigProblem
from gateway.config.yamlpatch import replace_group_points
from gateway.interfaces import DriverPlugin
from gateway.northbound.mapping import carry_problem

COLUMNS = ("ioa", "ioa_hex", "type", "device", "point", "name", "unit", "deadband",
           "deadband_percent", "full_scale", "multiplier", "gi", "common_address")
REQUIRED = ("point", "ioa", "type")
NUMBERS = ("deadband", "deadband_percent", "full_scale", "multiplier")
TYPES = get_args(MonitorType)
STATUS_TYPE = "M_SP_TB_1"
YES, NO = {"yes", "y", "true", "1", "是"}, {"no", "n", "false", "0", "否"}


class UnknownGroup(LookupError):
    """The site has no master group of that name; the message lists the groups it has."""


@dataclass(frozen=True)
class StatusPoint:
    """An IOA the gateway itself feeds (not a device point); set by its own key in the site file."""

    point: str
    ioa: int
    device: str
    name: str
    source: str


def find_group(site: Site, name: str) -> tuple[int, MasterGroup]:
    """The index and spec of the group called ``name``."""
    for index, group in enumerate(site.spec.master_groups):
        if group.name == name:
            return index, group
    known = ", ".join(g.name for g in site.spec.master_groups) or "none"
    raise UnknownGroup(f"no master group {name!r} in {site.file} (groups: {known})")


def status_points(group: MasterGroup) -> list[StatusPoint]:
    """The group's status IOAs: per-device communication status, buffer overflow, clock alarm."""
    found = [StatusPoint(f"{device} communication status", ioa, device, f"communication status of {device}",
                         f"comm_status.{device}") for device, ioa in group.comm_status.items()]
    if group.buffer_overflow_ioa:
        found.append(StatusPoint("event buffer overflow", group.buffer_overflow_ioa, "",
                                 "event buffer overflow (events lost)", "buffer_overflow_ioa"))
    if group.clock_alarm_ioa:
        found.append(StatusPoint("clock alarm", group.clock_alarm_ioa, "", "clock synchronisation alarm",
                                 "clock_alarm_ioa"))
    return found


def point_specs(site: Site) -> dict[str, PointSpec]:
    """Every point of the site's enabled devices, by ``device.point``."""
    return {f"{d.name}.{p.id}": p for d in site.devices for p in d.profile.points}


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.15g}"


def export_rows(site: Site, group: str) -> list[dict[str, str]]:
    """The group's point table as CSV-ready rows (every column in ``COLUMNS``), sorted by IOA."""
    _, spec = find_group(site, group)
    specs, ca = point_specs(site), str(spec.common_address)
    rows = []
    for m in spec.points:
        point = specs[m.point]
        rows.append({"ioa": str(m.ioa), "ioa_hex": f"0x{m.ioa:04X}", "type": m.type,
                     "device": m.point.split(".", 1)[0], "point": m.point, "name": point.name,
                     "unit": point.unit, "deadband": _number(m.deadband),
                     "deadband_percent": _number(m.deadband_percent), "full_scale": _number(m.full_scale),
                     "multiplier": _number(m.multiplier), "gi": "yes" if m.gi else "no", "common_address": ca})
    for s in status_points(spec):
        rows.append({**dict.fromkeys(COLUMNS, ""), "ioa": str(s.ioa), "ioa_hex": f"0x{s.ioa:04X}",
                     "type": STATUS_TYPE, "device": s.device, "point": s.point, "name": s.name,
                     "gi": "yes", "common_address": ca})
    return sorted(rows, key=lambda row: int(row["ioa"]))


def write_csv(rows: Iterable[Mapping[str, str]], stream: TextIO) -> None:
    """Write the rows as CSV, starting with a UTF-8 byte-order mark.

    The BOM is why Excel on a Chinese Windows opens the file as UTF-8 instead of GBK; open
    ``stream`` with ``encoding="utf-8", newline=""`` so the mark and the CRLF rows arrive intact.
    """
    stream.write("\ufeff")
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)


# ---- reading and checking a table -------------------------------------------------------------

Row = tuple[int, dict[str, str]]


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
    for number, cells in enumerate(records[1:], start=2):
        if any(cell.strip() for cell in cells):
            rows.append((number, {col: cell.strip() for col, cell in zip(header, cells) if col}))
            if any(cell.strip() for cell in cells[len(header):]):
                problems.append(ConfigProblem(file, number, "", f"{len(cells)} cells, the header has {len(header)}"))
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


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"bad number {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"bad number {text!r} (not finite)")
    return value


def _gi(text: str) -> bool:
    if text.lower() in YES:
        return True
    if text.lower() in NO:
        return False
    raise ValueError(f"bad value {text!r} (yes or no)")


class TableCheck:
    """Checks the rows of one table against a site and one of its groups, collecting every problem.

    IOAs claimed by the group's status points count as taken whether or not the table lists them,
    so a point cannot silently land on the communication status of a device.
    """

    def __init__(self, site: Site, group: MasterGroup, file: str) -> None:
        self.group, self.file, self.specs = group, file, point_specs(site)
        self.devices = {d.name: d for d in site.devices}
        self.status = {s.point: s for s in status_points(group)}
        self.owners: dict[int, str] = {s.ioa: f"{s.point}, {s.source} in the site file" for s in self.status.values()}
        self.first_row: dict[str, int] = {}
        self.problems: list[ConfigProblem] = []
        self.mappings: list[tuple[int, PointMap]] = []

    def bad(self, row: int, column: str, message: str) -> None:
        """Record one problem of one cell."""
        self.problems.append(ConfigProblem(self.file, row, column, message))

    def check(self, row: int, cells: dict[str, str]) -> None:
        """Check every cell of one row; a clean point row becomes a mapping, a status row is only verified."""
        before, point = len(self.problems), cells.get("point", "")
        fields = {"point": point, "ioa": self._ioa(row, cells), "type": self._type(row, cells), **self._options(row, cells)}
        mapping = self._validated(row, fields) if len(self.problems) == before else None
        self._same_context(row, cells, fields["ioa"])
        if not self._first_sight(row, point):
            return
        if (status := self.status.get(point)) is not None:
            self._check_status(row, status, fields["ioa"], fields["type"])
            return
        spec = self._spec(row, point)
        self._claim(row, fields["ioa"], point)
        if mapping is not None and spec is not None and (why := carry_problem(mapping, spec)) is not None:
            self.bad(row, "type", why)
        elif mapping is not None and len(self.problems) == before:
            self.mappings.append((row, mapping))

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

    def _first_sight(self, row: int, point: str) -> bool:
        if not point:
            self.bad(row, "point", "empty: give device.point")
            return False
        if point in self.first_row:
            self.bad(row, "point", f"duplicate point {point!r} (first at row {self.first_row[point]})")
            return False
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

    def _claim(self, row: int, ioa: int | None, point: str) -> None:
        if ioa is not None and ioa in self.owners:
            self.bad(row, "ioa", f"duplicate IOA {ioa} (already {self.owners[ioa]})")
        elif ioa is not None:
            self.owners[ioa] = f"{point}, row {row}"

    def _check_status(self, row: int, status: StatusPoint, ioa: int | None, kind: str | None) -> None:
        if ioa is not None and ioa != status.ioa:
            self.bad(row, "ioa", f"{status.point} is IOA {status.ioa}: change {status.source} in the site file")
        if kind is not None and kind != STATUS_TYPE:
            self.bad(row, "type", f"{status.point} is always {STATUS_TYPE}")

    def _options(self, row: int, cells: dict[str, str]) -> dict[str, Any]:
        """The optional columns that are given, parsed: deadband, scaling, gi."""
        options: dict[str, Any] = {}
        for column in NUMBERS:
            if cells.get(column):
                try:
                    options[column] = _float(cells[column])
                except ValueError as exc:
                    self.bad(row, column, str(exc))
        if cells.get("gi"):
            try:
                options["gi"] = _gi(cells["gi"])
            except ValueError as exc:
                self.bad(row, "gi", str(exc))
        return options

    def _validated(self, row: int, fields: dict[str, Any]) -> PointMap | None:
        """The mapping, or None after reporting the limits and combinations it breaks."""
        try:
            return PointMap.model_validate(fields)
        except ValidationError as exc:
            for err in exc.errors():
                message = err["msg"].removeprefix("Value error, ")
                column = str(err["loc"][0]) if err["loc"] else ("full_scale" if "full_scale" in message else "deadband")
                if column != "point":  # reported by _spec, in words
                    self.bad(row, column, message)
            return None


def check_table(rows: Iterable[Row], site: Site, group: MasterGroup, file: str) -> tuple[list[tuple[int, PointMap]], list[ConfigProblem]]:
    """The table's mappings with their row numbers, and every problem found in it."""
    check = TableCheck(site, group, file)
    for row, cells in rows:
        check.check(row, cells)
    return check.mappings, check.problems


# ---- writing the points back into the site file -----------------------------------------------


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


def _verify(candidate: Path, site: Site, index: int, mappings: list[tuple[int, PointMap]],
            csv_file: str, plugins: Mapping[str, DriverPlugin]) -> None:
    """Load the rewritten file like ``gridgate check`` and prove only the group's points changed."""
    try:
        rewritten = load_site(candidate, plugins)
    except ConfigErrors as exc:
        raise ConfigErrors(_relocate(p, candidate, site.file, index, mappings, csv_file) for p in exc.problems) from None
    groups = list(site.spec.master_groups)
    groups[index] = groups[index].model_copy(update={"points": [m for _, m in mappings]})
    if rewritten.spec != site.spec.model_copy(update={"master_groups": groups}):
        raise ConfigErrors([ConfigProblem(str(site.file), 0, f"master_groups[{index}].points",
                                          "the rewritten file would differ in more than these points; left unchanged")])


def _relocate(problem: ConfigProblem, candidate: Path, site_file: Path, index: int,
              mappings: list[tuple[int, PointMap]], csv_file: str) -> ConfigProblem:
    """A problem of the candidate file, named by its CSV row where it is about one imported point."""
    if problem.file != str(candidate):
        return problem
    found = re.match(rf"master_groups\[{index}\]\.points\[(\d+)\]\.?(\w*)", problem.path)
    if found and int(found[1]) < len(mappings):
        return ConfigProblem(csv_file, mappings[int(found[1])][0], found[2] or "point", problem.message)
    return ConfigProblem(str(site_file), problem.line, problem.path, f"{problem.message} (after import; not saved)")


def import_csv(csv_path: Path, site_path: Path, group: str, plugins: Mapping[str, DriverPlugin]) -> int:
    """Replace the group's points with the table in ``csv_path``; the number of points written.

    Columns ``point``, ``ioa`` and ``type`` are required, the others of the export optional;
    ``name`` and ``unit`` come from the profile and are not read back. Status rows (communication
    status, buffer overflow, clock alarm) are checked against the site, never written: their
    IOAs live under their own keys. On any problem the site file is left as it was and
    ConfigErrors lists them all; the new file replaces the old one only after it passed
    ``load_site``, so a reader never sees a half-written or invalid site.
    """
    site = load_site(site_path, plugins)
    index, spec = find_group(site, group)
    rows, problems = read_table(csv_path)
    if any(p.line == 1 and p.message in ("missing required column", "duplicate column") for p in problems):
        raise ConfigErrors(problems)
    mappings, found = check_table(rows, site, spec, str(csv_path))
    if problems or found:
        raise ConfigErrors(problems + found)
    mappings.sort(key=lambda item: item[1].ioa)
    new_text = replace_group_points(site_path, index, [point_line(m) for _, m in mappings])
    _replace_atomically(site_path, new_text.encode("utf-8"),
                        lambda candidate: _verify(candidate, site, index, mappings, str(csv_path), plugins))
    return len(mappings)
