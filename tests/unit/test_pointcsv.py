"""The point table (点表) as CSV: export for the dispatch centre, import back into the site file."""

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.commissioning import pointcsv
from gateway.commissioning.groups import UnknownGroup
from gateway.commissioning.pointcsv import export_rows, import_csv, write_csv
from gateway.commissioning.pointtable import COLUMNS
from gateway.config.loader import Site, load_site
from gateway.config.source import ConfigErrors
from gateway.northbound.iec104.outstation import _by_point
from gateway.northbound.iec104.wiretable import wire_rows
from gateway.registry import load_plugins

CASE = Path(__file__).resolve().parents[1] / "cases" / "pointcsv" / "site.yaml"
PLUGINS = load_plugins()


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    """A copy of the two-group test site, free to be rewritten."""
    return Path(shutil.copy(CASE, tmp_path / "site.yaml"))


def _site(path: Path) -> Site:
    return load_site(path, PLUGINS)


def _table(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding, newline="")
    return path


def _export(site_file: Path, group: str, out: Path) -> Path:
    with out.open("w", encoding="utf-8", newline="") as stream:
        write_csv(export_rows(_site(site_file), group), stream)
    return out


def _problems(csv_path: Path, site_file: Path, group: str) -> set[tuple[str, int, str]]:
    with pytest.raises(ConfigErrors) as caught:
        import_csv(csv_path, site_file, group, PLUGINS)
    return {(Path(p.file).name, p.line, p.path) for p in caught.value.problems}


def test_export_rows_are_sorted_by_ioa_with_hex_and_profile_names() -> None:
    """Rows carry every column, come in IOA order, give the IOA as 0x hex and the profile's name and unit."""
    rows = export_rows(_site(CASE), "dd")
    assert all(tuple(row) == COLUMNS for row in rows)
    assert [row["ioa"] for row in rows] == ["1", "2", "100", "101", "102", "103", "16385", "16386", "16387",
                                            "24577", "25089", "25090", "25601"]
    power = next(row for row in rows if row["point"] == "pcs1.ac_active_power")
    assert power == {**dict.fromkeys(COLUMNS, ""), "ioa": "16385", "ioa_hex": "0x4001", "kind": "monitor",
                     "type": "M_ME_NC_1", "gi_type": "M_ME_NC_1", "event_type": "M_ME_NC_1", "device": "pcs1",
                     "point": "pcs1.ac_active_power",
                     "name": "AC active power, positive = discharge (export), negative = charge",
                     "unit": "kW", "deadband": "0.5", "multiplier": "1", "gi": "yes", "common_address": "1"}
    scaled = next(row for row in rows if row["ioa"] == "16387")
    assert (scaled["multiplier"], scaled["gi"]) == ("5", "yes")


def test_export_gives_the_types_sent_in_interrogation_and_spontaneously() -> None:
    """A tagged type answers GI untagged; gi: false is not in GI; a counter answers counter interrogation only."""
    rows = {row["point"]: row for row in export_rows(_site(CASE), "dd")}
    wire = lambda point: tuple(rows[point][c] for c in ("kind", "type", "gi_type", "ci_type", "event_type", "gi"))
    assert wire("pcs1.grid_connected") == ("monitor", "M_SP_TB_1", "M_SP_NA_1", "", "M_SP_TB_1", "yes")
    assert wire("pcs1.remote_mode") == ("monitor", "M_SP_NA_1", "", "", "M_SP_NA_1", "no")
    assert wire("meter1.energy_import_total") == ("counter", "M_IT_TB_1", "", "M_IT_NA_1", "", "no")
    assert rows["meter1.energy_import_total"]["multiplier"] == "100"


def test_export_lists_status_ioas_of_the_group() -> None:
    """Comm status per device, buffer overflow and clock alarm: M_SP_NA_1 in GI, M_SP_TB_1 spontaneously."""
    rows = {row["ioa"]: row for row in export_rows(_site(CASE), "dd")}
    assert rows["100"]["point"] == "pcs1 communication status" and rows["100"]["device"] == "pcs1"
    assert rows["101"]["point"] == "meter1 communication status"
    assert rows["102"]["point"] == "event buffer overflow"
    assert rows["103"]["point"] == "clock alarm"
    assert [rows[ioa]["kind"] for ioa in ("100", "101", "102", "103")] == ["status", "status", "alarm", "alarm"]
    assert {(rows[ioa]["type"], rows[ioa]["gi_type"], rows[ioa]["event_type"])
            for ioa in ("100", "101", "102", "103")} == {("M_SP_TB_1", "M_SP_NA_1", "M_SP_TB_1")}


def test_export_lists_every_command_ioa_with_mode_target_limits_and_return_ioa() -> None:
    """Command rows carry type, mode, target point, the profile's limits and ramp, and the related IOA."""
    rows = {row["ioa"]: row for row in export_rows(_site(CASE), "dd")}
    cells = lambda ioa, *cols: tuple(rows[ioa][c] for c in cols)
    command = ("kind", "type", "point", "mode", "related_ioa", "min", "max", "ramp_per_s", "gi_type", "event_type")
    assert cells("24577", *command) == ("command", "C_SC_NA_1", "pcs1.run_command", "select_execute", "1",
                                        "0", "1", "", "", "")
    assert cells("24577", "on_value", "off_value") == ("1", "0")
    assert cells("25089", *command) == ("command", "C_SE_NC_1", "pcs1.active_power_setpoint", "direct", "16385",
                                        "-250", "250", "50", "", "")
    assert cells("25089", "on_value", "off_value", "multiplier", "unit") == ("", "", "", "kW")
    assert cells("25090", "multiplier", "mode", "related_ioa") == ("10", "select_execute", "")


def test_the_table_is_what_the_outstation_serves() -> None:
    """Every monitored IOA of the table is mapped by the outstation with the same mapping, so the same wire types."""
    group = _site(CASE).spec.master_groups[0]
    served = sorted(((m.ioa, m) for maps in _by_point(group).values() for m in maps), key=lambda item: item[0])
    table = [(row.ioa, row.mapping) for row in wire_rows(group) if row.kind != "command"]
    assert table == served
    exported = {int(r["ioa"]): (r["gi_type"] or None, r["ci_type"] or None, r["event_type"] or None)
                for r in export_rows(_site(CASE), "dd") if r["kind"] != "command"}
    assert exported == {ioa: (m.gi_type, m.counter_type, m.event_type) for ioa, m in served}
    assert sorted(int(r["ioa"]) for r in export_rows(_site(CASE), "dd") if r["kind"] == "command") == sorted(
        c.ioa for c in group.commands)


def test_export_of_an_unknown_group_names_the_groups() -> None:
    """Asking for a group the site lacks raises UnknownGroup listing the groups it has."""
    with pytest.raises(UnknownGroup, match="groups: dd, jk"):
        export_rows(_site(CASE), "sd")


def test_written_csv_starts_with_a_bom_and_reads_back(tmp_path: Path) -> None:
    """The file is UTF-8 with BOM (Excel on Chinese Windows) and a CSV reader gets the rows back."""
    out = _export(CASE, "dd", tmp_path / "dd.csv")
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfioa,ioa_hex,kind,type,gi_type,ci_type,event_type,")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows == export_rows(_site(CASE), "dd")


def test_round_trip_keeps_the_mapping_and_every_other_line(site_file: Path, tmp_path: Path) -> None:
    """Export then import gives the same points and commands; only a comment inside a replaced list goes away."""
    before = site_file.read_text(encoding="utf-8")
    table = _export(site_file, "dd", tmp_path / "dd.csv")
    assert import_csv(table, site_file, "dd", PLUGINS) == (6, 3)
    assert site_file.read_text(encoding="utf-8") == before.replace("      # telemetry from 0x4001\n", "")
    assert _site(site_file).spec == _site(CASE).spec


def test_export_import_export_is_byte_identical(site_file: Path, tmp_path: Path) -> None:
    """The file export wrote imports cleanly and exports again to the same bytes."""
    first = _export(site_file, "dd", tmp_path / "first.csv")
    import_csv(first, site_file, "dd", PLUGINS)
    assert _export(site_file, "dd", tmp_path / "second.csv").read_bytes() == first.read_bytes()


def test_import_replaces_the_points_in_ioa_order(site_file: Path, tmp_path: Path) -> None:
    """A minimal table (point, ioa, type; hex IOA, any case of type) becomes the group's sorted points."""
    table = _table(tmp_path / "t.csv", "point,ioa,type,deadband,gi\r\n"
                                       "meter1.frequency,0x4002,m_me_nc_1,0.01,\r\n"
                                       "pcs1.grid_connected,7,M_SP_NA_1,,yes\r\n")
    assert import_csv(table, site_file, "dd", PLUGINS) == (2, 0)
    text = site_file.read_text(encoding="utf-8")
    assert ("    points:   # IOAs as issued by the dispatch centre\n"
            "      - {point: pcs1.grid_connected, ioa: 7, type: M_SP_NA_1}\n"
            "      - {point: meter1.frequency, ioa: 16386, type: M_ME_NC_1, deadband: 0.01}\n"
            "    commands: []   # 遥控/遥调 as issued\n"
            "    # end of the dd table\n") in text  # the table is the whole table: no command rows, no commands
    assert text.startswith(CASE.read_text(encoding="utf-8").split("    points:")[0])


def test_import_adds_points_to_a_group_without_them(site_file: Path, tmp_path: Path) -> None:
    """A group with no points: key gets one at the end of its block, before the comments that follow."""
    table = _table(tmp_path / "t.csv", "point,ioa,type\npcs1.ac_active_power,16385,M_ME_NC_1\n")
    assert import_csv(table, site_file, "jk", PLUGINS) == (1, 0)
    assert site_file.read_text(encoding="utf-8").endswith(
        "    comm_status:\n      pcs1: 200\n"
        "    points:\n      - {point: pcs1.ac_active_power, ioa: 16385, type: M_ME_NC_1}\n"
        "  # trailing comment after jk\n")
    site = _site(site_file)
    assert site.spec.master_groups[0] == _site(CASE).spec.master_groups[0]
    assert [m.point for m in site.spec.master_groups[1].points] == ["pcs1.ac_active_power"]


def test_import_of_an_empty_table_writes_an_empty_list(site_file: Path, tmp_path: Path) -> None:
    """A header-only table empties the group's points and commands (key: []) and keeps the key lines' comments."""
    table = _table(tmp_path / "t.csv", "point,ioa,type\n")
    assert import_csv(table, site_file, "dd", PLUGINS) == (0, 0)
    assert ("    points: []   # IOAs as issued by the dispatch centre\n    commands: []   # 遥控/遥调 as issued\n"
            "    # end of the dd table\n") in site_file.read_text(encoding="utf-8")
    assert _site(site_file).spec.master_groups[0].points == []


def test_import_keeps_crlf_line_ends(site_file: Path, tmp_path: Path) -> None:
    """A site file written on Windows keeps CRLF on every line, the new ones included."""
    site_file.write_bytes(CASE.read_bytes().replace(b"\n", b"\r\n"))
    table = _table(tmp_path / "t.csv", "point,ioa,type\npcs1.ac_active_power,16385,M_ME_NC_1\n")
    import_csv(table, site_file, "jk", PLUGINS)
    raw = site_file.read_bytes()
    assert raw.count(b"\n") == raw.count(b"\r\n") == CASE.read_bytes().count(b"\n") + 2


def test_import_reads_a_gbk_table_saved_by_excel(site_file: Path, tmp_path: Path) -> None:
    """A table Excel saved as plain CSV on Chinese Windows (GBK, no BOM) is read."""
    table = _table(tmp_path / "t.csv", "point,ioa,type,name\npcs1.ac_active_power,16385,M_ME_NC_1,有功功率\n",
                   encoding="gbk")
    assert import_csv(table, site_file, "jk", PLUGINS) == (1, 0)


def test_import_reports_every_problem_with_its_row(site_file: Path, tmp_path: Path) -> None:
    """Unknown device or point, duplicates, range, type, carry, numbers, status IOAs: all at once, by row."""
    before = site_file.read_bytes()
    table = _table(tmp_path / "t.csv", "\n".join([
        "point,ioa,type,deadband,gi",
        "pcs1.ac_active_power,16385,M_ME_NC_1,,",     # 2 fine
        "pcs9.ac_active_power,16386,M_ME_NC_1,,",     # 3 unknown device
        "pcs1.no_such_point,16387,M_ME_NC_1,,",       # 4 unknown point
        "meter1.frequency,16385,M_ME_NC_1,,",         # 5 duplicate IOA
        "pcs1.ac_active_power,16388,M_ME_NC_1,,",     # 6 duplicate point
        "meter1.voltage_l1,16777216,M_ME_NC_1,,",     # 7 IOA out of range
        "meter1.voltage_l2,0,M_ME_NC_1,,",            # 8 IOA out of range
        "meter1.voltage_l3,16390,M_ME_XX_1,,",        # 9 unknown type
        "pcs1.serial_number,16391,M_ME_NC_1,,",       # 10 a type that cannot carry the point
        "pcs1.operating_state,16392,M_SP_NA_1,,",     # 11 a type that cannot carry the point
        "meter1.current_l1,16393,M_ME_NC_1,abc,",     # 12 bad number
        "meter1.current_l2,12x,M_ME_NC_1,,",          # 13 bad IOA
        "meter1.current_l3,100,M_ME_NC_1,,",          # 14 IOA of pcs1's communication status
        "pcs1 communication status,99,M_SP_TB_1,,",   # 15 status IOA changed in the table
        "meter1.frequency,16394,M_ME_NC_1,,maybe",    # 16 duplicate point (row 5) and a bad gi
        "meter1.active_power_total,16395,M_ME_NC_1,-1,",  # 17 negative deadband
    ]) + "\n")
    assert _problems(table, site_file, "dd") == {
        ("t.csv", 3, "point"), ("t.csv", 4, "point"), ("t.csv", 5, "ioa"), ("t.csv", 6, "point"),
        ("t.csv", 7, "ioa"), ("t.csv", 8, "ioa"), ("t.csv", 9, "type"), ("t.csv", 10, "type"),
        ("t.csv", 11, "type"), ("t.csv", 12, "deadband"), ("t.csv", 13, "ioa"), ("t.csv", 14, "ioa"),
        ("t.csv", 15, "ioa"), ("t.csv", 16, "point"), ("t.csv", 16, "gi"), ("t.csv", 17, "deadband"),
    }
    assert site_file.read_bytes() == before


def test_problem_messages_say_what_is_wrong(site_file: Path, tmp_path: Path) -> None:
    """Each message names the cause: which device, which earlier row, which limit, which site key."""
    table = _table(tmp_path / "t.csv", "point,ioa,type\n"
                                       "pcs9.ac_active_power,9,M_ME_NC_1\n"
                                       "pcs1.ac_active_power,1,M_ME_NC_1\n"
                                       "pcs1.ac_active_power,2,M_ME_NC_1\n"
                                       "meter1.frequency,0x1000000,M_ME_NC_1\n"
                                       "meter1.voltage_l1,101,M_ME_NC_1\n"
                                       "pcs1.serial_number,3,M_ME_NC_1\n")
    with pytest.raises(ConfigErrors) as caught:
        import_csv(table, site_file, "dd", PLUGINS)
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{table}:2: point: no device 'pcs9' in this site (point is device.point)",
        f"{table}:4: point: duplicate point 'pcs1.ac_active_power' (first at row 3)",
        f"{table}:5: ioa: IOA 16777216 outside 1..16777215",
        f"{table}:6: ioa: duplicate IOA 101 (already meter1 communication status, comm_status.meter1 in the site file)",
        f"{table}:7: type: pcs1.serial_number is a string: no IEC 104 monitoring type carries text",
    ]


def test_a_duplicate_ioa_names_the_first_row(site_file: Path, tmp_path: Path) -> None:
    """The second row claiming an IOA is the one reported, naming the first owner's row."""
    table = _table(tmp_path / "t.csv", "point,ioa,type\npcs1.ac_active_power,5,M_ME_NC_1\nmeter1.frequency,0x5,M_ME_NC_1\n")
    with pytest.raises(ConfigErrors, match=r"t.csv:3: ioa: duplicate IOA 5 \(already pcs1.ac_active_power, row 2\)"):
        import_csv(table, site_file, "dd", PLUGINS)


def test_missing_and_unknown_columns_are_header_problems(site_file: Path, tmp_path: Path) -> None:
    """Missing required columns and unknown (mistyped) columns are reported on row 1."""
    table = _table(tmp_path / "t.csv", "point,dead_band\npcs1.ac_active_power,1\n")
    assert _problems(table, site_file, "dd") == {("t.csv", 1, "ioa"), ("t.csv", 1, "type"), ("t.csv", 1, "dead_band")}


def test_informational_columns_must_agree(site_file: Path, tmp_path: Path) -> None:
    """An edited ioa_hex, another group's common address or a wrong device column is not ignored."""
    table = _table(tmp_path / "t.csv", "point,ioa,ioa_hex,type,device,common_address\n"
                                       "pcs1.ac_active_power,16385,0x4002,M_ME_NC_1,pcs1,1\n"
                                       "meter1.frequency,16386,0x4002,M_ME_NC_1,meter1,2\n"
                                       "meter1.voltage_l1,16387,,M_ME_NC_1,pcs1,\n")
    assert _problems(table, site_file, "dd") == {("t.csv", 2, "ioa_hex"), ("t.csv", 3, "common_address"),
                                                 ("t.csv", 4, "device")}


def test_status_rows_are_checked_not_written(site_file: Path, tmp_path: Path) -> None:
    """Exported status rows pass when unchanged, and a wrong type on one is reported."""
    table = _table(tmp_path / "t.csv", "point,ioa,type\nclock alarm,103,M_SP_TB_1\nevent buffer overflow,102,M_SP_NA_1\n"
                                       "pcs1 status,104,M_SP_TB_1\n")
    assert _problems(table, site_file, "dd") == {("t.csv", 3, "type"), ("t.csv", 4, "point")}


def test_import_writes_command_rows(site_file: Path, tmp_path: Path) -> None:
    """Command rows (hex IOA, any case of type) become the group's commands: list, in IOA order, defaults left out."""
    table = _table(tmp_path / "t.csv", "point,ioa,type,mode,related_ioa\n"
                                       "pcs1.ac_active_power,16385,M_ME_NC_1,,\n"
                                       "pcs1.active_power_setpoint,0x6201,C_SE_NC_1,direct,16385\n"
                                       "pcs1.run_command,24577,c_sc_na_1,,\n")
    assert import_csv(table, site_file, "jk", PLUGINS) == (1, 2)
    assert site_file.read_text(encoding="utf-8").endswith(
        "    points:\n      - {point: pcs1.ac_active_power, ioa: 16385, type: M_ME_NC_1}\n"
        "    commands:\n      - {ioa: 24577, type: C_SC_NA_1, point: pcs1.run_command}\n"
        "      - {ioa: 25089, type: C_SE_NC_1, point: pcs1.active_power_setpoint, mode: direct, related_ioa: 16385}\n"
        "  # trailing comment after jk\n")
    [setpoint, run] = sorted(_site(site_file).spec.master_groups[1].commands, key=lambda c: -c.ioa)
    assert (setpoint.mode, setpoint.related_ioa, run.mode) == ("direct", 16385, "select_execute")


def test_derived_cells_must_say_what_the_row_implies(site_file: Path, tmp_path: Path) -> None:
    """Wire types, kind, a counter's or status row's gi and a command's limits that disagree are reported by row and column."""
    table = _table(tmp_path / "t.csv", "\n".join([
        "point,ioa,type,kind,gi_type,ci_type,event_type,gi,min,max,ramp_per_s",
        "pcs1.grid_connected,1,M_SP_TB_1,Monitor,M_SP_NA_1,,M_SP_TB_1,yes,,,",   # 2 fine
        "pcs1.remote_mode,2,M_SP_NA_1,,M_SP_NA_1,,,no,,,",                     # 3 not in GI with gi: no
        "pcs1.ac_active_power,16385,M_ME_NC_1,,,,M_ME_TF_1,,,,",               # 4 sent untagged
        "meter1.energy_import_total,25601,M_IT_NA_1,,M_IT_NA_1,,,yes,,,",      # 5 counters: no GI
        "meter1.frequency,16386,M_ME_NC_1,counter,,,,,,,",                      # 6 not a counter
        "pcs1.active_power_setpoint,25089,C_SE_NC_1,command,,,,,-250,300,50",  # 7 profile max is 250
        "clock alarm,103,M_SP_TB_1,alarm,M_SP_TB_1,,,,,,",                      # 8 GI carries M_SP_NA_1
        "pcs1.run_command,24577,C_SC_NA_1,,,,,,0.0,1.00,",                      # 9 fine: numbers by value
    ]) + "\n")
    assert _problems(table, site_file, "dd") == {
        ("t.csv", 3, "gi_type"), ("t.csv", 4, "event_type"), ("t.csv", 5, "gi_type"), ("t.csv", 5, "gi"),
        ("t.csv", 6, "kind"), ("t.csv", 7, "max"), ("t.csv", 8, "gi_type")}
    with pytest.raises(ConfigErrors) as caught:
        import_csv(table, site_file, "dd", PLUGINS)
    messages = {(p.line, p.path): p.message for p in caught.value.problems}
    assert messages[(4, "event_type")] == ("M_ME_TF_1 disagrees with type M_ME_NC_1: the row is sent spontaneously "
                                           "as M_ME_NC_1; clear event_type, or change the row")
    assert messages[(7, "max")] == ("300 disagrees with the profile: max of pcs1.active_power_setpoint is 250 "
                                    "(writable limits of gridgate-pcs-250.yaml); change the profile, or clear max")
    assert site_file.read_bytes() == CASE.read_bytes()


def test_settings_on_the_wrong_kind_of_row_are_reported(site_file: Path, tmp_path: Path) -> None:
    """A deadband or gi on a command, a mode on a measured point, a value on an alarm: reported, never dropped."""
    table = _table(tmp_path / "t.csv", "point,ioa,type,deadband,gi,mode,related_ioa,on_value\n"
                                       "pcs1.active_power_setpoint,25089,C_SE_NC_1,0.5,yes,,,\n"
                                       "pcs1.ac_active_power,16385,M_ME_NC_1,,,direct,1,\n"
                                       "clock alarm,103,M_SP_TB_1,1,,,,1\n")
    assert _problems(table, site_file, "dd") == {
        ("t.csv", 2, "deadband"), ("t.csv", 2, "gi"), ("t.csv", 3, "mode"), ("t.csv", 3, "related_ioa"),
        ("t.csv", 4, "deadband"), ("t.csv", 4, "on_value")}


def test_command_rows_are_checked_against_the_site(site_file: Path, tmp_path: Path) -> None:
    """A read-only target, a taken IOA, a bad mode, an unmonitored related IOA, a missing full_scale: each by row."""
    table = _table(tmp_path / "t.csv", "\n".join([
        "point,ioa,type,mode,related_ioa",
        "pcs1.ac_active_power,16385,M_ME_NC_1,,",
        "pcs1.ac_active_power,25089,C_SE_NC_1,,",                   # 3 not writable
        "pcs1.active_power_setpoint,16385,C_SE_NC_1,,",             # 4 IOA of row 2
        "pcs1.active_power_setpoint,25090,C_SE_NC_1,sometimes,",    # 5 bad mode
        "pcs1.active_power_setpoint,25091,C_SE_NC_1,direct,16388",  # 6 related IOA not monitored
        "pcs1.active_power_setpoint,25092,C_SE_NA_1,,",             # 7 normalized needs full_scale
        "pcs1.active_power_setpoint,25093,C_SE_NC_1,direct,16385",  # 8 fine: a point may have two command IOAs
    ]) + "\n")
    assert _problems(table, site_file, "dd") == {
        ("t.csv", 3, "point"), ("t.csv", 4, "ioa"), ("t.csv", 5, "mode"), ("t.csv", 6, "related_ioa"),
        ("t.csv", 7, "full_scale")}
    with pytest.raises(ConfigErrors, match=r"t.csv:3: point: pcs1.ac_active_power is not writable"):
        import_csv(table, site_file, "dd", PLUGINS)


def test_an_unknown_group_leaves_the_site_alone(site_file: Path, tmp_path: Path) -> None:
    """Importing into a group the site lacks raises UnknownGroup and writes nothing."""
    table = _table(tmp_path / "t.csv", "point,ioa,type\npcs1.ac_active_power,1,M_ME_NC_1\n")
    with pytest.raises(UnknownGroup):
        import_csv(table, site_file, "sd", PLUGINS)
    assert site_file.read_bytes() == CASE.read_bytes()


def test_a_rewritten_file_that_fails_validation_is_never_saved(site_file: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """If the new file does not load, the site keeps its bytes, no temp file stays, the row is named."""
    monkeypatch.setattr(pointcsv, "point_line", lambda m: f"{{point: {m.point}, ioa: {m.ioa}, type: {m.type}, color: red}}")
    table = _table(tmp_path / "t.csv", "point,ioa,type\npcs1.ac_active_power,16385,M_ME_NC_1\n")
    with pytest.raises(ConfigErrors) as caught:
        import_csv(table, site_file, "dd", PLUGINS)
    assert [(p.file, p.line, p.path, p.message) for p in caught.value.problems] == [
        (str(table), 2, "color", "unknown key")]
    assert site_file.read_bytes() == CASE.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.yaml", "t.csv"]


# ---- the command line ---------------------------------------------------------------------------

def _gridgate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, timeout=60)


def test_cli_export_writes_the_table_to_stdout_or_a_file(site_file: Path, tmp_path: Path) -> None:
    """`points export` prints the BOM-prefixed CSV on stdout, or writes the same bytes with --out."""
    printed = _gridgate("points", "export", str(site_file), "--group", "dd", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    written = _gridgate("points", "export", str(site_file), "--group", "dd", "--format", "csv",
                        "--out", "dd.csv", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "dd.csv").read_bytes() == printed.stdout
    assert printed.stdout.startswith(b"\xef\xbb\xbfioa,ioa_hex,") and b"\r\n16385,0x4001,monitor,M_ME_NC_1," in printed.stdout


def test_cli_import_round_trip_exits_zero(site_file: Path, tmp_path: Path) -> None:
    """`points import FILE.csv SITE.yaml --group` (and the --site form) rewrites the group, exit 0."""
    _export(site_file, "dd", tmp_path / "dd.csv")
    result = _gridgate("points", "import", "dd.csv", str(site_file), "--group", "jk", cwd=tmp_path)
    assert result.returncode == 1  # dd's table does not fit jk: common address and status IOAs differ
    table = _table(tmp_path / "jk.csv", "point,ioa,type\npcs1.ac_active_power,16385,M_ME_NC_1\n")
    result = _gridgate("points", "import", str(table), "--site", str(site_file), "--group", "jk", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"1 point(s) and 0 command(s) of group jk" in result.stdout
    assert [m.point for m in _site(site_file).spec.master_groups[1].points] == ["pcs1.ac_active_power"]


def test_cli_import_prints_problems_and_leaves_the_site(site_file: Path, tmp_path: Path) -> None:
    """Problems go to stderr as file:line: column: message, exit 1, the site file byte for byte as before."""
    table = _table(tmp_path / "t.csv", "point,ioa,type\npcs1.ac_active_power,0,M_ME_NC_1\nmeter1.nope,5,M_ME_NC_1\n")
    result = _gridgate("points", "import", str(table), str(site_file), "--group", "dd", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"{table}:2: ioa: IOA 0 outside 1..16777215",
        f"{table}:3: point: no point 'nope' in meter1 (profile gridgate-meter-3p.yaml)",
        f"2 problem(s); {site_file} unchanged",
    ]
    assert site_file.read_bytes() == CASE.read_bytes()


def test_points_written_as_a_flow_list_on_the_dash_line_are_replaced(tmp_path: Path) -> None:
    """A points list in flow style spanning lines, as a group's first key, becomes a block list."""
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        "site: x\ndevices:\n  - name: pcs1\n    profile: pcs/gridgate-pcs-250\n"
        "    connection: {host: 127.0.0.1, port: 15020, unit: 1}\n"
        "master_groups:\n"
        "- points: [{point: pcs1.grid_connected, ioa: 1, type: M_SP_TB_1},\n"
        "    {point: pcs1.remote_mode, ioa: 2, type: M_SP_TB_1}]\n"
        "  name: dd\n  bind: 0.0.0.0\n  allowed_masters: [10.1.1.1]\n  common_address: 1\n"
        "- {name: flow, bind: 0.0.0.0, port: 2405, allowed_masters: [10.1.1.1], common_address: 2}\n")
    table = _table(tmp_path / "t.csv", "point,ioa,type\npcs1.dc_current,8,M_ME_NC_1\n")
    assert import_csv(table, site_file, "dd", PLUGINS) == (1, 0)
    assert "master_groups:\n- points:\n    - {point: pcs1.dc_current, ioa: 8, type: M_ME_NC_1}\n  name: dd\n" in (
        site_file.read_text())
    with pytest.raises(ConfigErrors, match="flow style"):
        import_csv(table, site_file, "flow", PLUGINS)
