"""`gridgate check` and `gridgate run` on broken input: every problem named by file:line, nothing started."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema  # hat-json's dependency
import pytest
import yaml

from gateway.cli import build_parser

CASES = Path(__file__).resolve().parents[1] / "cases" / "bad"


def _gridgate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_check_names_every_problem_with_file_and_line(tmp_path: Path) -> None:
    """Wrong type, overlap, unknown key, writable without limits, missing profile: all reported at once."""
    result = _gridgate("check", str(CASES / "site.yaml"), cwd=tmp_path)
    assert result.returncode == 1
    profile, site = CASES / "broken-pcs.yaml", CASES / "site.yaml"
    expected = [
        (f"{profile}:8: points[0].type:", "Input should be"),
        (f"{profile}:13: points[2].address:", "'q_overlap' overlaps 'q_reactive'"),
        (f"{profile}:18: points[3].scal:", "unknown key"),
        (f"{profile}:22: points[4].writable:", "needs limits"),
        (f"{site}:8: devices[1].profile:", "not found"),
        (f"{site}:12: devices[2].connection.baud:", "unknown key"),
    ]
    lines = result.stderr.splitlines()
    for prefix, words in expected:
        assert any(line.startswith(prefix) and words in line for line in lines), (prefix, result.stderr)


def test_run_refuses_a_broken_site(tmp_path: Path) -> None:
    """The gateway does not start (no spool created) when the site has problems."""
    result = _gridgate("run", str(CASES / "site.yaml"), cwd=tmp_path)
    assert result.returncode == 1
    assert "nothing started" in result.stderr
    assert not any(tmp_path.iterdir())


def test_check_summarises_a_clean_site(tmp_path: Path) -> None:
    """A valid site prints its devices, points and request rate, exit 0."""
    site = tmp_path / "site.yaml"
    site.write_text("site: ok\ndevices:\n  - name: meter1\n    profile: meter/gridgate-meter-3p\n"
                    "    connection: {host: 127.0.0.1, port: 15022}\n    poll_s: 2s\n")
    result = _gridgate("check", str(site), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 device(s)" in result.stdout and "requests/s" in result.stdout


def test_the_readme_example_site_is_valid(tmp_path: Path) -> None:
    """examples/ess-site.yaml (quoted in the README) passes check, master group included."""
    result = _gridgate("check", str(CASES.parents[1].parent / "examples" / "ess-site.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "IEC 104 group provincial: 127.0.0.1:2404" in result.stdout


def test_check_names_every_command_problem(tmp_path: Path) -> None:
    """Command tables, policies and fail-safe writes that cannot work are each named with file:line."""
    site = CASES / "commands-site.yaml"
    result = _gridgate("check", str(site), cwd=tmp_path)
    assert result.returncode == 1
    expected = [(14, "not writable"), (15, "not a monitored point"), (16, "duplicate IOA 16385"),
                (19, "outside pcs1.active_power_setpoint's limits"), (22, "no master group 'regional'"),
                (25, "not under t1")]
    for line, words in expected:
        assert any(row.startswith(f"{site}:{line}:") and words in row for row in result.stderr.splitlines()), (line, result.stderr)


def test_check_names_every_point_table_problem(tmp_path: Path) -> None:
    """Duplicate IOAs, a type that cannot carry the point, IOAs out of range, unknown points: each by line."""
    site = CASES / "iec104-site.yaml"
    result = _gridgate("check", str(site), cwd=tmp_path)
    assert result.returncode == 1
    expected = [(16, "less than or equal to 16777215")]
    for line, words in expected:
        assert any(row.startswith(f"{site}:{line}:") and words in row for row in result.stderr.splitlines()), (line, result.stderr)


def test_check_names_mapping_problems_once_the_table_parses(tmp_path: Path) -> None:
    """With every IOA in range, the cross checks run: duplicate IOA, carry problems, unknown point, each by line."""
    site = tmp_path / "site.yaml"
    site.write_text((CASES / "iec104-site.yaml").read_text().replace("16777216", "4"))
    result = _gridgate("check", str(site), cwd=tmp_path)
    assert result.returncode == 1
    expected = [(13, "duplicate IOA 16385"), (14, "single point) carries on/off"), (15, "is a string"),
                (17, "no point 'pcs1.no_such_point'")]
    for line, words in expected:
        assert any(row.startswith(f"{site}:{line}:") and words in row for row in result.stderr.splitlines()), (line, result.stderr)


def test_schema_writes_site_and_profile_schemas(tmp_path: Path) -> None:
    """`gridgate schema --out DIR` writes JSON Schemas that name the site and profile keys."""
    result = _gridgate("schema", "--out", str(tmp_path / "schemas"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    site = json.loads((tmp_path / "schemas" / "site.schema.json").read_text())
    profile = json.loads((tmp_path / "schemas" / "profile-modbus.schema.json").read_text())
    assert "master_groups" in site["properties"] and "points" in profile["properties"]
    device = site["$defs"]["DeviceEntry"]["properties"]
    assert {"connection", "poll_s", "timeout_s", "retries", "offline_after"} <= device.keys()  # a polling driver is installed


def test_check_into_a_closed_pipe_ends_quietly() -> None:
    """`gridgate check SITE | head -1` after head left: no BrokenPipeError traceback on stderr, exit 1."""
    import subprocess
    import sys
    from pathlib import Path
    site = Path(__file__).resolve().parents[2] / "examples" / "ess-site.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "check", str(site)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first line is written
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_a_site_level_schema_error_hides_nothing_else(tmp_path: Path) -> None:
    """A bad InfluxDB url (site schema), a bad device entry, a connection problem, a device-level
    poll setting the driver refuses, a broken profile and a 104 mapping problem: one run names all.
    Points of devices that failed are not reported again as missing."""
    profile = tmp_path / "pcs.yaml"
    profile.write_text("model: p\nkind: pcs\nprotocol: modbus\npoints:\n"
                       "  - {id: p_active, table: input, address: 0, type: int16, unit: kW}\n"
                       "  - {id: q, table: input, address: 0, type: int16, unit: kvar}\n")
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: s\n"                                                            # 1
        "influx: {url: ftp://x, bucket: b}\n"                                  # 2
        "devices:\n"                                                           # 3
        "  - name: meter1\n"                                                   # 4
        "    profile: meter/gridgate-meter-3p\n"                               # 5
        "    connection: {host: 127.0.0.1, port: 15022, unit: 300}\n"          # 6
        "  - name: meter2\n"                                                   # 7
        "    profile: meter/gridgate-meter-3p\n"                               # 8
        "    connection: {host: 127.0.0.1, port: 15023}\n"                     # 9
        "    poll_s: -1\n"                                                     # 10
        "  - {name: 9bad, profile: x, connection: {}}\n"                       # 11
        "  - name: pcs1\n"                                                     # 12
        "    profile: pcs.yaml\n"                                              # 13
        "    connection: {host: 127.0.0.1, port: 15024}\n"                     # 14
        "  - name: meter3\n"                                                   # 15
        "    profile: meter/gridgate-meter-3p\n"                               # 16
        "    connection: {host: 127.0.0.1, port: 15025}\n"                     # 17
        "master_groups:\n"                                                     # 18
        "  - name: g\n"                                                        # 19
        "    bind: 127.0.0.1\n"                                                # 20
        "    allowed_masters: [127.0.0.1]\n"                                   # 21
        "    common_address: 1\n"                                              # 22
        "    points:\n"                                                        # 23
        "      - {point: meter1.voltage_l1, ioa: 1, type: M_ME_NC_1}\n"         # 24
        "      - {point: meter3.nothing, ioa: 2, type: M_ME_NC_1}\n"            # 25
        "      - {point: pcs1.p_active, ioa: 3, type: M_ME_NC_1}\n")            # 26
    result = _gridgate("check", str(site), cwd=tmp_path)
    assert result.returncode == 1
    expected = [f"{site}:2: influx.url:", f"{site}:6: devices[0].connection.unit:", f"{site}:10: devices[1].poll_s:",
                f"{site}:11: devices[2].name:", f"{profile}:6: points[1].address:", f"{site}:13: devices[3].profile:",
                f"{site}:25: master_groups[0].points[1].point: no point 'meter3.nothing' in this site"]
    lines = result.stderr.splitlines()
    for prefix in expected:
        assert any(line.startswith(prefix) for line in lines), (prefix, result.stderr)
    assert not any("meter1.voltage_l1" in line or "pcs1.p_active" in line for line in lines), result.stderr


def test_help_lists_every_command_on_one_line(tmp_path: Path) -> None:
    """`gridgate --help` on an 80-column terminal: each subcommand the parser knows, with its help, on one line."""
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    result = subprocess.run([sys.executable, "-m", "gateway", "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert len(commands.choices) == 11  # nine of the core, discover from the Modbus driver, opcua from OPC UA
    for name in commands.choices:
        row = [line for line in lines if line.split()[:1] == [name]]
        assert len(row) == 1 and len(row[0].split()) > 2, (name, result.stdout)
        following = lines[lines.index(row[0]) + 1] if lines.index(row[0]) + 1 < len(lines) else ""
        assert not following.startswith(" " * 8), (name, "its help wraps onto the next line", result.stdout)


def test_the_modbus_sample_site_is_valid(tmp_path: Path) -> None:
    """drivers/modbus/sample-site.yaml (quoted in the driver's README) passes check: TCP, RTU over TCP, RTU serial."""
    result = _gridgate("check", str(CASES.parents[1].parent / "drivers" / "modbus" / "sample-site.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "modbus: 3 device(s)" in result.stdout and "bms2: GG-BMS-S48" in result.stdout


def test_the_opcua_sample_site_is_valid_once_its_certificates_exist(tmp_path: Path) -> None:
    """drivers/opcua/sample-site.yaml, as its README says: without the gateway's certificate check
    names the missing files; after `gridgate certs init/issue --role opcua` and a trust folder, OK."""
    sample = CASES.parents[1].parent / "drivers" / "opcua" / "sample-site.yaml"
    site = tmp_path / "site.yaml"
    site.write_text(sample.read_text())
    result = _gridgate("check", str(site), cwd=tmp_path)
    assert result.returncode == 1 and "security.certificate" in result.stderr and "security.trust" in result.stderr
    for args in (("init", "ca", "--rsa"), ("issue", "ca", "--name", "gateway", "--role", "opcua",
                                           "--uri", "urn:gridgate:opcua-sample", "--dns", "localhost", "--out", "certs")):
        made = _gridgate("certs", *args, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
    (tmp_path / "certs" / "trusted").mkdir()
    result = _gridgate("check", str(site), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "opcua: 2 device(s), 20 monitored items, 2 read points" in result.stdout
    assert "Basic256Sha256 SignAndEncrypt" in result.stdout


def test_the_framed_serial_schema_accepts_every_shipped_framed_profile_and_names_its_keys(tmp_path: Path) -> None:
    """profile-serial_framed.schema.json (what an editor checks while typing) takes the shipped
    framed profiles as written, arrays included, and refuses an unknown framing key."""
    result = _gridgate("schema", "--out", str(tmp_path / "schemas"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schema = json.loads((tmp_path / "schemas" / "profile-serial_framed.schema.json").read_text())
    assert {"framing", "messages", "points", "order"} <= schema["properties"].keys()
    shipped = Path(__file__).resolve().parents[2] / "device_profiles"
    framed = [p for p in shipped.rglob("*.yaml") if "protocol: serial_framed" in p.read_text()]
    assert len(framed) == 3
    for path in framed:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    broken = yaml.safe_load(framed[0].read_text())
    broken["framing"]["crc"] = "crc16_modbus"
    with pytest.raises(jsonschema.ValidationError, match="crc"):
        jsonschema.validate(broken, schema)
