"""`gridgate points to-profile` through the real CLI: a station's point table becomes a profile that a
site names and `gridgate check` accepts; a table with problems is reported row by row and writes nothing."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

TABLE = "\r\n".join([
    "ioa,kind,type,event_type,point,name,unit,full_scale,multiplier,mode,related_ioa,min,max",
    "1,monitor,M_DP_NA_1,M_DP_TB_1,rtu1.cb_main_pos,301 主断路器,,,,,,,",
    "17,monitor,M_SP_TB_1,,rtu1.trip_overcurrent,过流跳闸,,,,,,,",
    "100,status,M_SP_TB_1,M_SP_TB_1,rtu1 communication status,,,,,,,,",
    "16385,monitor,M_ME_NB_1,M_ME_TE_1,rtu1.u_bus35,35 kV bus voltage,kV,,100,,,,",
    "16400,monitor,M_ME_NC_1,,rtu1.p_limit,active power limit,MW,,,,,,",
    "25601,counter,M_IT_NA_1,,rtu1.e_export,exported energy,kWh,,1,,,,",
    "24577,command,C_DC_NA_1,,rtu1.cb_main_pos,,,,,,,,",
    "25001,command,C_SE_NC_1,,rtu1.p_limit_set,,,,,direct,16400,0,50",
]) + "\r\n"
SITE = {"site": "booster", "devices": [{"name": "rtu1", "profile": "booster-rtu.yaml",
                                        "connection": {"host": "127.0.0.1", "port": 2404, "common_address": 1}}]}


def _gridgate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, text=True,
                          encoding="utf-8", timeout=120)


def test_a_station_table_becomes_a_profile_that_gridgate_check_accepts(tmp_path: Path) -> None:
    """to-profile --out writes the draft (stdout gives the same YAML); a site naming it passes gridgate check."""
    (tmp_path / "booster-rtu.csv").write_text(TABLE, encoding="utf-8-sig", newline="")
    drafted = _gridgate("points", "to-profile", "booster-rtu.csv", "--out", "booster-rtu.yaml", cwd=tmp_path)
    assert drafted.returncode == 0, drafted.stderr
    assert drafted.stdout == "booster-rtu.yaml: 5 point(s), 2 command(s) drafted\n"
    assert drafted.stderr.startswith("note: booster-rtu.csv:4: status row 'rtu1 communication status' skipped")
    text = (tmp_path / "booster-rtu.yaml").read_text(encoding="utf-8")
    assert text.startswith("# Drafted from booster-rtu.csv by gridgate points to-profile.")
    profile = yaml.safe_load(text)
    assert (profile["model"], profile["kind"], profile["protocol"]) == ("BOOSTER-RTU", "rtu", "iec104")
    points = {point["id"]: point for point in profile["points"]}
    assert points["cb_main_pos"]["command"] == {"ioa": 24577, "type": "C_DC_NA_1", "mode": "select_execute"}
    assert points["p_limit"]["writable"] == {"min": 0, "max": 50}
    assert points["u_bus35"]["scale"] == 0.01
    assert _gridgate("points", "to-profile", "booster-rtu.csv", cwd=tmp_path).stdout == text

    (tmp_path / "site.yaml").write_text(yaml.safe_dump(SITE), encoding="utf-8")
    checked = _gridgate("check", "site.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "1 device(s), 5 point(s), 2 writable" in checked.stdout
    assert "rtu1: BOOSTER-RTU (booster-rtu.yaml), 5 points" in checked.stdout


def test_a_table_with_problems_is_reported_by_row_and_writes_nothing(tmp_path: Path) -> None:
    """Exit 1, one `file:row: column: message` line per problem and a count; no profile file is written."""
    bad = TABLE.replace("rtu1.trip_overcurrent", "Trip-OC").replace("25001,command", "17,command") \
        .replace("0,50\r\n", "0,\r\n")
    (tmp_path / "bad.csv").write_text(bad, encoding="utf-8", newline="")
    result = _gridgate("points", "to-profile", "bad.csv", "--out", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "bad.csv:3: point: 'Trip-OC' is not a point id (lower-case letters, digits and _, starting with a letter)",
        "bad.csv:9: ioa: duplicate IOA 17 (first at row 3)",
        "bad.csv:9: max: empty: a C_SE_NC_1 needs the point's writable limits (min and max, in engineering units)",
        "3 problem(s); nothing written"]
    assert not (tmp_path / "bad.yaml").exists()
