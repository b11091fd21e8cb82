"""The `gridgate` process end to end: the demo command, and a SIGKILL that loses no committed sample."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from gateway.commissioning.recordingmaster import RecordingMaster
from gateway.iec104.wiretime import WireClock
from tests import tsdb
from tests.integration.sites import wait_until
from tests.ports import next_port, next_ports

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_and_shows_every_point_good(tmp_path: Path) -> None:
    """`gridgate demo --duration N` polls the TCP devices and the RTU string, prints the table, exits 0."""
    result = subprocess.run([sys.executable, "-m", "gateway", "demo", "--duration", "6",
                             "--spool", str(tmp_path / "spool.db"), "--iec104-port", str(next_port())],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    table = lines[max(i for i, line in enumerate(lines) if line.startswith("device ")) + 1:]
    devices = {"pcs1", "bms1", "meter1", "bms2", "pv1", "ev1", "ev2"}
    rows = [line.split() for line in table if line.split()[:1] and line.split()[0] in devices]
    assert {row[0] for row in rows} == devices
    assert all("good" in row for row in rows), [row for row in rows if "good" not in row]
    assert " IV 0 " in result.stdout and "offline none" in result.stdout


def test_demo_forwards_to_influxdb(tmp_path: Path, victoria_metrics: tsdb.TsdbProcess) -> None:
    """`gridgate demo --influx-url ...` forwards every device's points, tagged with site, device and model."""
    result = subprocess.run([sys.executable, "-m", "gateway", "demo", "--duration", "5", "--spool",
                             str(tmp_path / "spool.db"), "--iec104-port", str(next_port()),
                             "--influx-url", victoria_metrics.url,
                             "--influx-bucket", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    devices = {"pcs1": "GG-PCS-250", "bms1": "GG-BMS-C215", "meter1": "GG-EM-3P", "bms2": "GG-BMS-S48",
               "ems1": "GG-EMS-UA", "pv1": "GG-PV-100K", "ev1": "GG-DCFC-160", "ev2": "GG-AC-22"}
    series = tsdb.vm_export(victoria_metrics.url, '{__name__="gridgate_quality",site="demo-ess"}',
                            until=lambda found: {s["metric"]["device"] for s in found} >= set(devices))
    seen = {(s["metric"]["device"], s["metric"]["model"]) for s in series}
    assert seen == set(devices.items())


def _site(tmp_path: Path, port: int, influx_url: str) -> Path:
    profile = {"model": "KILL", "kind": "meter", "protocol": "modbus",
               "points": [{"id": f"p{i}", "address": i, "type": "uint16",
                           "sim": {"kind": "ramp", "step": 1, "min": 0, "max": 60000}} for i in range(5)]}
    (tmp_path / "kill.yaml").write_text(yaml.safe_dump(profile))
    site = {"site": "kill", "influx": {"url": influx_url, "bucket": "b", "flush_interval_s": 0.2},
            "spool": {"path": str(tmp_path / "spool.db")},
            "devices": [{"name": "m", "profile": "kill", "poll_s": 0.1,
                         "connection": {"host": "127.0.0.1", "port": port}}]}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


def _spooled(spool: Path) -> list[tuple[str, int]]:
    """The committed samples (point, ms); none while the gateway is still creating the file."""
    with sqlite3.connect(spool) as db:
        try:
            return [(point, round(t * 1000)) for point, t in db.execute("SELECT point, source_time FROM samples")]
        except sqlite3.OperationalError:
            return []


def _gridgate(command: str, site: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway", "--log-level", "WARNING", command, str(site)],
                            cwd=site.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def site(tmp_path: Path, victoria_metrics: tsdb.TsdbProcess) -> Iterator[Path]:
    """A one-device site writing to ``victoria_metrics``, its device served by `gridgate simulate`."""
    path = _site(tmp_path, next_port(), victoria_metrics.url)
    simulator = _gridgate("simulate", path)
    yield path
    simulator.terminate()
    simulator.wait(20)


def test_sigkill_loses_no_committed_sample(tmp_path: Path, site: Path, victoria_metrics: tsdb.TsdbProcess) -> None:
    """Polled with InfluxDB down, SIGKILLed, restarted with it up: every sample the spool held arrives."""
    victoria_metrics.stop()
    gateway = _gridgate("run", site)
    spool = tmp_path / "spool.db"
    try:
        wait_until(lambda: spool.exists() and len(_spooled(spool)) >= 100, 30, "100 spooled samples")
    finally:
        os.kill(gateway.pid, signal.SIGKILL)  # also when the wait failed: no gateway outlives the test
        gateway.wait(10)
    committed = set(_spooled(spool))
    assert len(committed) >= 100
    victoria_metrics.start()
    gateway = _gridgate("run", site)
    try:
        wait_until(lambda: not committed & set(_spooled(spool)), 60, "the spool to forward the old samples")
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(20) == 0, gateway.stderr.read().decode()[-2000:]
    wanted = {(f"m.{point.split('.')[1]}", ms) for point, ms in committed}

    def arrived(series: list) -> set:
        return {(f"m.{s['metric']['point']}", ts) for s in series for ts in s["timestamps"]}

    series = tsdb.vm_export(victoria_metrics.url, '{__name__="gridgate_quality",site="kill"}',
                            until=lambda found: wanted <= arrived(found))
    missing = wanted - arrived(series)
    assert not missing, f"{len(missing)} of {len(wanted)} committed samples never arrived, e.g. {sorted(missing)[:3]}"


def test_sigterm_forwards_what_is_committed_before_exit(tmp_path: Path, site: Path,
                                                        victoria_metrics: tsdb.TsdbProcess) -> None:
    """InfluxDB up, SIGTERM while polling every 0.1 s: exit 0 with an empty spool (the last polls were forwarded)."""
    gateway = _gridgate("run", site)
    spool = tmp_path / "spool.db"
    try:
        wait_until(lambda: spool.exists() and len(_spooled(spool)) > 0, 30, "a spooled sample")
        forwarded = tsdb.vm_export(victoria_metrics.url, '{__name__="gridgate_quality",site="kill"}',
                                   until=lambda found: sum(len(s["timestamps"]) for s in found) >= 50)
        assert sum(len(s["timestamps"]) for s in forwarded) >= 50, "the gateway polls and forwards steadily"
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(20) == 0, gateway.stderr.read().decode()[-2000:]
    assert _spooled(spool) == []


def test_a_second_sigterm_during_shutdown_is_harmless(tmp_path: Path, site: Path) -> None:
    """Two SIGTERMs (as timeout(1) and systemd send them): exit 0, no ReactorNotRunning in the log."""
    gateway = _gridgate("run", site)
    spool = tmp_path / "spool.db"
    try:
        wait_until(lambda: spool.exists() and len(_spooled(spool)) > 0, 30, "a spooled sample")
    finally:
        gateway.send_signal(signal.SIGTERM)
        time.sleep(0.05)  # the first one handled: the kernel does not merge the second into it
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(20)
    errors = gateway.stderr.read().decode()
    assert code == 0 and "ReactorNotRunning" not in errors, errors[-2000:]


def _tz_site(tmp_path: Path, wire_zone: str) -> tuple[Path, int]:
    device_port, iec_port = next_ports(2)
    profile = {"model": "TZ", "kind": "meter", "protocol": "modbus",
               "points": [{"id": "p", "address": 0, "type": "uint16", "sim": {"kind": "ramp", "step": 5, "min": 0, "max": 60000}}]}
    (tmp_path / "tz.yaml").write_text(yaml.safe_dump(profile))
    site = {"site": "tz", "spool": {"path": str(tmp_path / "spool.db")},
            "devices": [{"name": "m", "profile": "tz", "poll_s": 0.5, "connection": {"host": "127.0.0.1", "port": device_port}}],
            "master_groups": [{"name": "dispatch", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
                               "common_address": 1, "wire_time_zone": wire_zone,
                               "points": [{"point": "m.p", "ioa": 16385, "type": "M_ME_TF_1"}]}]}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path, iec_port


@pytest.mark.parametrize("process_tz", ["UTC", "Asia/Shanghai"])
@pytest.mark.parametrize("wire_zone", ["UTC", "Asia/Shanghai"])
def test_time_tags_are_right_whatever_the_process_time_zone(tmp_path: Path, process_tz: str, wire_zone: str) -> None:
    """`gridgate run` under TZ=UTC or Asia/Shanghai sends time tags a master reads as now, in the group's wire zone."""
    site, iec_port = _tz_site(tmp_path, wire_zone)
    env = {**os.environ, "TZ": process_tz}
    simulator = subprocess.Popen([sys.executable, "-m", "gateway", "simulate", str(site)], cwd=tmp_path, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", str(site)], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    master = RecordingMaster("127.0.0.1", iec_port, 1, timeout_s=30)
    spontaneous = lambda: [r for r in master.arrivals() if r.cot == "SPONTANEOUS"]
    try:
        assert master.connect() is not None
        assert master.wait_for(lambda: len(spontaneous()) >= 3, 20)
        wire = WireClock(wire_zone)
        for event in spontaneous()[-2:]:
            assert abs(wire.from_c104(event.recorded_at) - event.at) < 3.0, (event.recorded_at, process_tz, wire_zone)
    finally:
        master.close()
        for process in (gateway, simulator):
            process.terminate()
            process.wait(20)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_listening(port: int, timeout_s: float = 30.0) -> None:
    wait_until(lambda: _listening(port), timeout_s, f"port {port}")


def _wait_served(port: int, common_address: int, timeout_s: float = 30.0) -> None:
    """Until a general interrogation of the outstation at ``port`` answers every point with good quality:
    every device has been polled, so dispatch-test finds values to check."""
    def served() -> bool:
        master = RecordingMaster("127.0.0.1", port, common_address, timeout_s=5)
        try:
            if master.connect() is None or master.interrogate() is not None:
                return False
            answers = [r for r in master.arrivals() if r.cot == "INTERROGATED_BY_STATION"]
            return bool(answers) and all(not r.quality for r in answers)
        finally:
            master.close()
    wait_until(served, timeout_s, f"good values from every point at 127.0.0.1:{port}", every_s=0.5)


def _dispatch_test(site: Path, port: int, control: int, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "dispatch-test", str(site), "--group", site_group(site),
                           "--target", f"127.0.0.1:{port}", "--simulator", f"http://127.0.0.1:{control}",
                           "--junit", str(folder / "dispatch.xml"), "--html", str(folder / "dispatch.html")],
                          cwd=folder, capture_output=True, text=True, timeout=180)


def site_group(site: Path) -> str:
    return yaml.safe_load(site.read_text())["master_groups"][0]["name"]


def test_dispatch_test_passes_against_the_demo(tmp_path: Path) -> None:
    """`gridgate dispatch-test` against `gridgate demo` passes every check, the PCS setpoint, run/stop and
    the chargers' power limit round trips included."""
    iec_port, control = next_ports(2)
    demo = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--duration", "120", "--spool", str(tmp_path / "spool.db"),
                             "--iec104-port", str(iec_port), "--control-port", str(control)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(iec_port)
        _wait_listening(control)
        _wait_served(iec_port, 1)  # first polls of every device
        result = _dispatch_test(tmp_path / "gridgate-demo-site.yaml", iec_port, control, tmp_path)
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(30)
    assert result.returncode == 0, result.stdout[-3000:]
    suites = {s.get("name"): s for s in ET.parse(tmp_path / "dispatch.xml").getroot().iter("testsuite")}
    commands = suites["commands"]
    assert (commands.get("tests"), commands.get("failures"), commands.get("skipped")) == ("4", "0", "0")
    assert {c.get("name") for c in commands.iter("testcase")} == {
        "pcs1.run_command (IOA 24577)", "pcs1.active_power_setpoint (IOA 25089)",
        "ev1.power_limit (IOA 25090)", "ev2.power_limit (IOA 25091)"}
    assert "ac_active_power" in (tmp_path / "dispatch.html").read_text()


def test_dispatch_test_names_a_wrong_mapping(tmp_path: Path) -> None:
    """A gateway whose table maps one IOA to the wrong point fails dispatch-test, which names that point."""
    reference, iec_port = _tz_site(tmp_path, "UTC")
    data = yaml.safe_load(reference.read_text())
    profile = yaml.safe_load((tmp_path / "tz.yaml").read_text())
    profile["points"].append({"id": "q", "address": 1, "type": "uint16", "sim": {"kind": "constant", "value": 777}})
    (tmp_path / "tz.yaml").write_text(yaml.safe_dump(profile))
    data["master_groups"][0]["points"] = [{"point": "m.p", "ioa": 16385, "type": "M_ME_NC_1", "deadband": 5},
                                          {"point": "m.q", "ioa": 16386, "type": "M_ME_NC_1"}]
    reference.write_text(yaml.safe_dump(data))
    wrong = yaml.safe_load(yaml.safe_dump(data))
    wrong["master_groups"][0]["points"][1]["point"] = "m.p"  # IOA 16386 wired to the wrong register
    wrong["master_groups"][0]["points"][0]["point"] = "m.q"
    (tmp_path / "gateway-site.yaml").write_text(yaml.safe_dump(wrong))
    control = next_port()
    simulator = subprocess.Popen([sys.executable, "-m", "gateway", "simulate", str(reference), "--control", f"127.0.0.1:{control}"],
                                 cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = _gridgate("run", tmp_path / "gateway-site.yaml")
    try:
        _wait_listening(iec_port)
        _wait_listening(control)
        _wait_served(iec_port, 1)
        result = _dispatch_test(reference, iec_port, control, tmp_path)
    finally:
        for process in (gateway, simulator):
            process.terminate()
            process.wait(20)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "m.q" in result.stdout
    junit = (tmp_path / "dispatch.xml").read_text()
    assert "<failure" in junit and "m.q" in junit
    assert "m.q" in (tmp_path / "dispatch.html").read_text()
