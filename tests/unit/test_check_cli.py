"""`gridgate check` and `gridgate run` on broken input: every problem named by file:line, nothing started."""

import json
import subprocess
import sys
from pathlib import Path

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
