"""`gridgate points to-profile`'s mapping: a station's point table (点表) drafted into an iec104 profile."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.commissioning.profiledraft import Draft, draft_profile
from gateway.config.source import ConfigErrors
from gateway.registry import load_plugins

PLUGINS = load_plugins()
HEADER = "ioa,kind,type,event_type,point,name,unit,full_scale,multiplier,mode,related_ioa,min,max,ramp_per_s"


def _table(tmp_path: Path, *rows: str, header: str = HEADER, encoding: str = "utf-8",
           name: str = "booster-rtu.csv") -> Path:
    path = tmp_path / name
    path.write_bytes("\r\n".join((header, *rows)).encode(encoding) + b"\r\n")
    return path


def _draft(tmp_path: Path, *rows: str, **kwargs: Any) -> Draft:
    return draft_profile(_table(tmp_path, *rows), PLUGINS, **kwargs)


def _points(tmp_path: Path, *rows: str) -> dict[str, dict[str, Any]]:
    return {point["id"]: point for point in _draft(tmp_path, *rows).profile["points"]}


def _problems(tmp_path: Path, *rows: str) -> dict[tuple[int, str], str]:
    with pytest.raises(ConfigErrors) as caught:
        _draft(tmp_path, *rows)
    assert all(Path(p.file).name == "booster-rtu.csv" for p in caught.value.problems)
    return {(p.line, p.path): p.message for p in caught.value.problems}


def test_monitored_rows_become_points_of_an_rtu_profile(tmp_path: Path) -> None:
    """Each M_ row is a point: id after the last '.', IOA (decimal or hex), type, name and unit copied."""
    draft = _draft(tmp_path, "1,monitor,M_DP_TB_1,,rtu1.cb_main_pos,301 main breaker,,,,,,,,",
                   "0x11,monitor,M_SP_TB_1,,trip_overcurrent,overcurrent trip,,,,,,,,",
                   "16389,,M_ME_NC_1,,f_grid,grid frequency,Hz,,,,,,,")
    assert draft.profile == {
        "model": "BOOSTER-RTU", "vendor": "", "kind": "rtu", "protocol": "iec104",
        "description": "drafted from booster-rtu.csv by gridgate points to-profile",
        "points": [{"id": "cb_main_pos", "name": "301 main breaker", "ioa": 1, "type": "M_DP_TB_1"},
                   {"id": "trip_overcurrent", "name": "overcurrent trip", "ioa": 17, "type": "M_SP_TB_1"},
                   {"id": "f_grid", "name": "grid frequency", "ioa": 16389, "type": "M_ME_NC_1", "unit": "Hz"}]}
    assert (draft.points, draft.commands, draft.notes) == (3, 0, [])


def test_model_and_kind_are_taken_from_the_options(tmp_path: Path) -> None:
    """--model and --kind replace the defaults (the file's stem upper-cased, rtu)."""
    draft = _draft(tmp_path, "1,,M_SP_NA_1,,alarm,,,,,,,,,", model="VENDOR-X200", kind="ems")
    assert (draft.profile["model"], draft.profile["kind"]) == ("VENDOR-X200", "ems")


def test_the_spontaneous_event_type_is_preferred_to_the_configured_type(tmp_path: Path) -> None:
    """A filled event_type is the point's type (the tagged twin the station sends); an empty one leaves type."""
    points = _points(tmp_path, "1,monitor,M_DP_NA_1,M_DP_TB_1,cb_pos,,,,,,,,,",
                     "2,monitor,M_SP_NA_1,,remote_mode,,,,,,,,,")
    assert (points["cb_pos"]["type"], points["remote_mode"]["type"]) == ("M_DP_TB_1", "M_SP_NA_1")


def test_an_event_type_that_is_no_twin_of_the_type_is_a_problem(tmp_path: Path) -> None:
    """event_type must be the type or its twin with or without time tag; anything else names the row."""
    problems = _problems(tmp_path, "1,monitor,M_ME_NB_1,M_SP_TB_1,u_bus,,,,,,,,,")
    assert problems == {(2, "event_type"): "'M_SP_TB_1' is not M_ME_NB_1 or its twin with or without time tag"}


def test_scale_comes_from_full_scale_or_the_multiplier(tmp_path: Path) -> None:
    """Normalized: scale = full_scale; scaled and counters: scale = 1 / multiplier; a scale of 1 is left out."""
    points = _points(tmp_path, "16385,monitor,M_ME_NA_1,M_ME_TD_1,p_main,,MW,60,,,,,,",
                     "16386,monitor,M_ME_NB_1,M_ME_TE_1,u_bus,,kV,,100,,,,,",
                     "16387,monitor,M_ME_NB_1,,i_f1,,A,,1,,,,,",
                     "16388,monitor,M_ME_NC_1,,f_grid,,Hz,50,10,,,,,",
                     "25601,counter,M_IT_NA_1,,e_export,,kWh,,1000,,,,,")
    assert {pid: point.get("scale") for pid, point in points.items()} == {
        "p_main": 60, "u_bus": 0.01, "i_f1": None, "f_grid": None, "e_export": 0.001}


def test_scaling_cells_that_cannot_scale_are_problems(tmp_path: Path) -> None:
    """A full_scale not above 0 and a multiplier of 0 are reported on their cells."""
    problems = _problems(tmp_path, "16385,monitor,M_ME_NA_1,,p_main,,MW,0,,,,,,",
                         "16386,monitor,M_ME_NB_1,,u_bus,,kV,,0,,,,,")
    assert set(problems) == {(2, "full_scale"), (3, "multiplier")}


def test_a_command_attaches_to_the_point_at_its_related_ioa(tmp_path: Path) -> None:
    """A C_SE row is the command of the point at related_ioa: direct by default, min/max/ramp as writable."""
    draft = _draft(tmp_path, "25001,command,C_SE_NC_1,,p_limit_cmd,,,,,,16400,0,50,5",
                   "16400,monitor,M_ME_NC_1,,p_limit,active power limit,MW,,,,,,,")
    assert draft.profile["points"] == [{
        "id": "p_limit", "name": "active power limit", "ioa": 16400, "type": "M_ME_NC_1", "unit": "MW",
        "writable": {"min": 0, "max": 50, "ramp_per_s": 5},
        "command": {"ioa": 25001, "type": "C_SE_NC_1", "mode": "direct"}}]
    assert (draft.points, draft.commands) == (1, 1)


def test_a_command_without_related_ioa_attaches_to_the_point_it_names(tmp_path: Path) -> None:
    """Without related_ioa the row's point cell names the point; switching commands default to select_execute."""
    points = _points(tmp_path, "1,monitor,M_DP_TB_1,,rtu1.cb_main_pos,,,,,,,,,",
                     "17,monitor,M_SP_TB_1,,reset_latch,,,,,,,,,",
                     "24577,command,C_DC_NA_1,,rtu1.cb_main_pos,,,,,,,,,",
                     "24578,command,C_SC_NA_1,,reset_latch,,,,,direct,,,,")
    assert points["cb_main_pos"]["command"] == {"ioa": 24577, "type": "C_DC_NA_1", "mode": "select_execute"}
    assert points["reset_latch"]["command"] == {"ioa": 24578, "type": "C_SC_NA_1", "mode": "direct"}


def test_switching_commands_default_to_the_values_they_carry(tmp_path: Path) -> None:
    """A C_SC without limits gets writable 0..1, a C_DC 1..2 (off, on); given limits are kept."""
    points = _points(tmp_path, "1,monitor,M_DP_TB_1,,cb_pos,,,,,,,,,", "2,monitor,M_SP_TB_1,,enable,,,,,,,,,",
                     "3,monitor,M_SP_TB_1,,pump_on,,,,,,,,,",
                     "24577,command,C_DC_NA_1,,,,,,,,1,,,", "24578,command,C_SC_NA_1,,,,,,,,2,,,",
                     "24579,command,C_SC_NA_1,,,,,,,,3,1,1,")
    assert points["cb_pos"]["writable"] == {"min": 1, "max": 2}
    assert points["enable"]["writable"] == {"min": 0, "max": 1}
    assert points["pump_on"]["writable"] == {"min": 1, "max": 1}


def test_a_setpoint_without_limits_is_a_problem_on_its_row(tmp_path: Path) -> None:
    """A C_SE row must give min and max: each missing one is reported, and nothing is drafted."""
    problems = _problems(tmp_path, "16400,monitor,M_ME_NC_1,,p_limit,,,,,,,,,",
                         "25001,command,C_SE_NC_1,,,,,,,,16400,,100,")
    assert problems == {(3, "min"): "empty: a C_SE_NC_1 needs the point's writable limits (min and max, in "
                                    "engineering units)"}


def test_a_command_that_finds_no_point_is_a_problem(tmp_path: Path) -> None:
    """A related_ioa that is no monitored row, an unknown point, or neither given: each names its row."""
    problems = _problems(tmp_path, "1,monitor,M_DP_TB_1,,cb_pos,,,,,,,,,",
                         "24577,command,C_DC_NA_1,,,,,,,,2,,,",
                         "24578,command,C_DC_NA_1,,cb_f9_pos,,,,,,,,,",
                         "24579,command,C_DC_NA_1,,,,,,,,,,,")
    assert set(problems) == {(3, "related_ioa"), (4, "point"), (5, "related_ioa")}
    assert problems[(3, "related_ioa")].startswith("IOA 2 is not a monitored row of this table")


def test_a_point_commanded_twice_is_a_problem_naming_both_rows(tmp_path: Path) -> None:
    """Two command rows for one point: the second is reported, naming the point's row and the first command."""
    problems = _problems(tmp_path, "1,monitor,M_DP_TB_1,,cb_pos,,,,,,,,,", "24577,command,C_DC_NA_1,,,,,,,,1,,,",
                         "24578,command,C_DC_NA_1,,cb_pos,,,,,,,,,")
    assert problems == {(4, "point"): "cb_pos (row 2) is already commanded by row 3"}


def test_the_driver_model_judges_the_draft_and_its_errors_name_the_command_row(tmp_path: Path) -> None:
    """Validated through the registry: a C_DC confirmed by a single point, a C_SC limit it cannot carry, a bad mode."""
    problems = _problems(tmp_path, "1,monitor,M_SP_TB_1,,trip,,,,,,,,,", "2,monitor,M_SP_TB_1,,enable,,,,,,,,,",
                         "3,monitor,M_SP_TB_1,,pump,,,,,,,,,",
                         "24577,command,C_DC_NA_1,,,,,,,,1,,,", "24578,command,C_SC_NA_1,,,,,,,,2,0,5,",
                         "24579,command,C_SC_NA_1,,,,,,,sometimes,3,,,")
    assert problems[(5, "type")] == "a C_DC_NA_1 is confirmed by a M_DP point, not M_SP_TB_1"
    assert problems[(6, "type")].startswith("a C_SC_NA_1 carries 0 (off) or 1 (on)")
    assert "'direct' or 'select_execute'" in problems[(7, "mode")]
    assert len(problems) == 3


def test_a_setpoint_scaled_unlike_its_point_is_a_problem(tmp_path: Path) -> None:
    """The driver sends value / the point's scale: a command row whose own scaling disagrees is reported."""
    problems = _problems(tmp_path, "16385,monitor,M_ME_NB_1,,q_set,,,,10,,,,,",
                         "16386,monitor,M_ME_NB_1,,p_set,,,,100,,,,,",
                         "16387,monitor,M_ME_NA_1,,u_set,,,200,,,,,,",
                         "25001,command,C_SE_NB_1,,,,,,10,,16385,-10,10,",
                         "25002,command,C_SE_NC_1,,,,,,,,16386,0,50,",
                         "25003,command,C_SE_NA_1,,,,,100,,,16387,0,100,")
    assert set(problems) == {(6, "type"), (7, "full_scale")}
    assert problems[(6, "type")].startswith("a C_SE_NC_1 carries the value itself, but p_set (row 3) has scale 0.01")
    assert problems[(7, "full_scale")].startswith("full_scale means scale 100, but u_set (row 4) has scale 200")


@pytest.mark.parametrize("cell", ["Main_Breaker", "1st_breaker", "主变有功", "rtu1.", "p-main"])
def test_a_point_cell_that_is_no_point_id_is_a_problem(tmp_path: Path, cell: str) -> None:
    """Ids are lower-case letters, digits and _, starting with a letter; anything else names its row."""
    problems = _problems(tmp_path, "1,monitor,M_SP_TB_1,,ok_point,,,,,,,,,", f"2,monitor,M_SP_TB_1,,{cell},,,,,,,,,")
    assert list(problems) == [(3, "point")]


def test_duplicate_ioas_and_point_ids_are_problems_naming_both_rows(tmp_path: Path) -> None:
    """A second row on an IOA (point or command) or with a point id already taken names the first row."""
    problems = _problems(tmp_path, "1,monitor,M_DP_TB_1,,cb_pos,,,,,,,,,", "0x0001,monitor,M_SP_TB_1,,trip,,,,,,,,,",
                         "2,monitor,M_SP_TB_1,,rtu2.cb_pos,,,,,,,,,", "1,command,C_DC_NA_1,,,,,,,,1,,,")
    assert problems == {(3, "ioa"): "duplicate IOA 1 (first at row 2)",
                        (4, "point"): "duplicate point 'cb_pos' (first at row 2)",
                        (5, "ioa"): "duplicate IOA 1 (first at row 2)"}


def test_status_and_alarm_rows_are_skipped_with_a_note(tmp_path: Path) -> None:
    """An exported table's comm-status and alarm rows are the gateway's own: left out, each noted."""
    draft = _draft(tmp_path, "1,monitor,M_SP_TB_1,,pcs1.grid_connected,,,,,,,,,",
                   "100,status,M_SP_TB_1,M_SP_TB_1,pcs1 communication status,,,,,,,,,",
                   "102,alarm,M_SP_TB_1,M_SP_TB_1,event buffer overflow,,,,,,,,,")
    assert [p["id"] for p in draft.profile["points"]] == ["grid_connected"]
    assert [note.split(":")[:2] for note in draft.notes] == [[str(tmp_path / "booster-rtu.csv"), "3"],
                                                            [str(tmp_path / "booster-rtu.csv"), "4"]]
    assert "status row 'pcs1 communication status' skipped" in draft.notes[0]


def test_unknown_types_and_kinds_are_problems(tmp_path: Path) -> None:
    """A type outside the standard's M_/C_ types, or an unknown kind, names its row."""
    problems = _problems(tmp_path, "1,monitor,M_XX_NA_1,,a,,,,,,,,,", "2,feeder,M_SP_NA_1,,b,,,,,,,,,")
    assert set(problems) == {(2, "type"), (3, "kind")}


def test_a_table_without_a_required_column_is_refused_at_its_header(tmp_path: Path) -> None:
    """Without point, ioa or type no row can be read: the header problem alone is reported."""
    with pytest.raises(ConfigErrors) as caught:
        draft_profile(_table(tmp_path, "1,M_SP_NA_1", header="ioa,type"), PLUGINS)
    assert [(p.line, p.path, p.message) for p in caught.value.problems] == [(1, "point", "missing required column")]


def test_a_gb18030_table_is_read_with_its_chinese_names(tmp_path: Path) -> None:
    """Excel's plain CSV on a Chinese Windows is GB18030: names and units arrive intact."""
    path = _table(tmp_path, "16385,monitor,M_ME_NB_1,M_ME_TE_1,u_bus,35千伏母线电压,千伏,,100,,,,,",
                  encoding="gb18030")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    [point] = draft_profile(path, PLUGINS).profile["points"]
    assert (point["name"], point["unit"], point["scale"]) == ("35千伏母线电压", "千伏", 0.01)


def test_the_yaml_says_where_it_came_from_and_loads_back_as_the_profile(tmp_path: Path) -> None:
    """The text starts with a review comment naming the table; the YAML is the profile, Chinese unescaped."""
    draft = _draft(tmp_path, "1,monitor,M_DP_TB_1,,cb_pos,主断路器,,,,,,,,", "24577,command,C_DC_NA_1,,,,,,,,1,,,")
    text = draft.text()
    assert text.startswith("# Drafted from booster-rtu.csv by gridgate points to-profile.\n# Review before use: "
                           "names, units and scaling")
    assert "主断路器" in text
    assert yaml.safe_load(text) == draft.profile
    assert list(draft.profile) == ["model", "vendor", "kind", "protocol", "description", "points"]
