"""``gridgate dispatch-test`` against a real c104 Server standing in for the outstation.

The stand-in serves the site's table from a running ModbusSimulator (read through
``simulator.value`` every 50 ms, sent spontaneously on change, counters only in the counter
interrogation), so the tool sees what a gateway would send (the table's types are untagged, so
one c104 type per IOA serves GI and events alike); overrides make it serve one IOA with the
wrong type or a wrong value. The simulator's
side is the real control API (``gateway.simulation.simcontrol``). The tool is synchronous, so it runs in a
worker thread while the reactor serves the simulator, the control API and the stand-in.
This module must not use ``from __future__ import annotations`` (c104 callbacks).
"""

import argparse
import datetime
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import c104
import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall

from gateway.commissioning import dispatchtest
from gateway.config.loader import Site, load_site
from gateway.northbound.iec104.section import MasterGroup, PointMap
from gateway.registry import load_plugins
from gateway.simulation.simcontrol import control_url, start_control
from tests.ports import next_port

pytestmark = pytest.mark.integration

PROFILE = {
    "model": "dispatch-test-pcs", "kind": "pcs", "protocol": "modbus", "modbus": {"address_base": 0},
    "points": [
        {"id": "p_ac", "address": 0, "type": "int32", "unit": "W", "sim": {"kind": "constant", "value": 1000}},
        {"id": "v_l1", "address": 2, "type": "int16", "scale": 0.1, "unit": "V",
         "sim": {"kind": "sine", "value": 230, "amplitude": 2, "period_s": 30}},
        {"id": "soc", "address": 3, "type": "uint16", "scale": 0.1, "unit": "%", "sim": {"kind": "constant", "value": 55}},
        {"id": "energy", "address": 4, "type": "uint32", "unit": "kWh", "sim": {"kind": "ramp", "value": 5000, "step": 1}},
        {"id": "running", "table": "coil", "address": 0, "type": "bool", "sim": {"kind": "constant", "value": 1}},
    ]}
TABLE = [
    {"point": "pcs1.running", "ioa": 1, "type": "M_SP_NA_1"},
    {"point": "pcs1.p_ac", "ioa": 16385, "type": "M_ME_NC_1", "deadband": 10},
    {"point": "pcs1.v_l1", "ioa": 16386, "type": "M_ME_NB_1", "multiplier": 10},
    {"point": "pcs1.soc", "ioa": 16387, "type": "M_ME_NA_1", "full_scale": 100, "deadband_percent": 0.5},
    {"point": "pcs1.energy", "ioa": 25601, "type": "M_IT_NA_1"},
]
COMM_STATUS_IOA = 100


def make_site(folder: Path, **group: Any) -> Site:
    """A one-PCS site with a master group "dispatch" on a port of the run's block (``group`` overrides its keys)."""
    (folder / "pcs.yaml").write_text(yaml.safe_dump(PROFILE), encoding="utf-8")
    spec = {"site": "dispatch-test", "spool": {"path": str(folder / "spool.db")},
            "devices": [{"name": "pcs1", "profile": "pcs.yaml", "poll_s": "200ms",
                         "connection": {"host": "127.0.0.1", "port": 0, "unit": 1}}],
            "master_groups": [{"name": "dispatch", "bind": "127.0.0.1", "port": next_port(),
                               "allowed_masters": ["127.0.0.1"], "common_address": 7,
                               "comm_status": {"pcs1": COMM_STATUS_IOA}, "points": TABLE, **group}]}
    (folder / "site.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return load_site(folder / "site.yaml", load_plugins())


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """The one-PCS site, its wire in UTC."""
    return make_site(tmp_path)


def info(type_name: str, mapping: PointMap, value: Any) -> c104.Information:
    """The information object a correct outstation sends (independent of the gateway's encoder)."""
    if type_name.startswith("M_SP"):
        return c104.SingleInfo(on=bool(value), recorded_at=datetime.datetime.utcnow() if "TB" in type_name else None)
    if type_name == "M_ME_NA_1":
        return c104.NormalizedInfo(actual=c104.NormalizedFloat(value / mapping.full_scale))
    if type_name == "M_ME_NB_1":
        return c104.ScaledInfo(actual=c104.Int16(round(value * mapping.multiplier)))
    if type_name == "M_IT_NA_1":
        return c104.BinaryCounterInfo(counter=round(value), sequence=c104.UInt5(0), quality=c104.BinaryCounterQuality(0))
    return c104.ShortInfo(actual=float(value))


class StandInOutstation:
    """A c104 Server serving a group's table from a simulator, with deliberate mistakes on demand."""

    def __init__(self, group: MasterGroup, simulator: Any, wrong_type: dict[int, str] | None = None,
                 offset: dict[int, float] | None = None, common_address: int | None = None, busy: bool = False) -> None:
        self.group, self.simulator = group, simulator
        self.wrong_type, self.offset = wrong_type or {}, offset or {}
        self.busy = busy  # every point sent spontaneously at every update, changed or not
        self.server = c104.Server(ip=group.bind, port=group.port, tick_rate_ms=50)
        station = self.server.add_station(common_address=common_address or group.common_address)
        self.points = {m.ioa: station.add_point(io_address=m.ioa, type=getattr(c104.Type, self._type(m)))
                       for m in group.points}
        status = station.add_point(io_address=COMM_STATUS_IOA, type=c104.Type.M_SP_NA_1)  # its GI type
        status.info = c104.SingleInfo(on=True)
        self.sent: dict[int, Any] = {}
        self._update()
        self._loop = LoopingCall(self._update)
        self._loop.clock = reactor

    def _type(self, mapping: PointMap) -> str:
        return self.wrong_type.get(mapping.ioa, mapping.type)

    def _update(self) -> None:
        for mapping in self.group.points:
            device, point = mapping.point.split(".")
            value = self.simulator.value(device, point) + self.offset.get(mapping.ioa, 0)
            c104_point = self.points[mapping.ioa]
            c104_point.info = info(self._type(mapping), mapping, value)
            last = self.sent.get(mapping.ioa)
            changed = last is not None and abs(float(value) - float(last)) > mapping.threshold
            if mapping.event_type and (changed or self.busy):
                c104_point.transmit(cause=c104.Cot.SPONTANEOUS)
            if last is None or abs(float(value) - float(last)) > mapping.threshold:
                self.sent[mapping.ioa] = value

    @inlineCallbacks
    def start(self) -> Iterator[Any]:
        """Listen and follow the simulator."""
        yield threads.deferToThread(self.server.start)
        self._loop.start(0.05, now=False)

    @inlineCallbacks
    def stop(self) -> Iterator[Any]:
        """Stop following, stop listening."""
        self._loop.stop()
        yield threads.deferToThread(self.server.stop)


def arguments(site: Site, tmp_path: Path, simulator: str | None, port: int | None = None,
              timeout: float = 5.0) -> argparse.Namespace:
    """The command line of ``gridgate dispatch-test`` for this site, with both reports."""
    group = site.spec.master_groups[0]
    return argparse.Namespace(site=str(site.file), group=group.name, target=f"127.0.0.1:{port or group.port}",
                              simulator=simulator, junit=str(tmp_path / "junit.xml"),
                              html=str(tmp_path / "report.html"), timeout=timeout, latency_points=20,
                              max_latency=3.0, time_tolerance=2.0)


@inlineCallbacks
def run_against(site: Site, tmp_path: Path, with_simulator: bool = True, timeout: float = 5.0,
                **mistakes: Any) -> Iterator[Any]:
    """Simulator + control API + stand-in outstation, then the tool in a thread; fires with its exit code."""
    simulator = load_plugins().drivers["modbus"].simulator(site.devices, reactor)
    yield simulator.start()
    control = start_control(reactor, [simulator], site.devices)
    outstation = StandInOutstation(site.spec.master_groups[0], simulator, **mistakes)
    yield outstation.start()
    try:
        args = arguments(site, tmp_path, control_url(control) if with_simulator else None, timeout=timeout)
        code = yield threads.deferToThread(dispatchtest.main, site, args)
    finally:
        yield outstation.stop()
        yield control.stopListening()
        yield simulator.stop()
    return code


def junit_cases(path: Path) -> dict[str, ET.Element]:
    """Testcases of a JUnit report by name."""
    return {case.get("name"): case for case in ET.parse(path).getroot().iter("testcase")}


@pytest_twisted.inlineCallbacks
def test_correct_table_passes(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture) -> Iterator[Any]:
    """An outstation serving the table exactly as mapped passes every check, latency measured on the moved points."""
    code = yield run_against(site, tmp_path)
    out = capsys.readouterr().out
    assert code == 0, out
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.get("failures") == "0" and root.get("skipped") == "0", out
    assert {s.get("name") for s in root.iter("testsuite")} == {"link", "pcs1"}
    cases = junit_cases(tmp_path / "junit.xml")
    assert {"connect", "general interrogation", "counter interrogation", "clock synchronisation",
            "spontaneous latency", "pcs1.p_ac (IOA 16385)", "pcs1 communication status (IOA 100)"} <= set(cases)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "PASSED" in page and "<svg" in page
    for moved in ("pcs1.p_ac", "pcs1.soc", "pcs1.v_l1"):  # the latency table names the points used
        assert f"<td>{moved}</td><td>" in page.split("Spontaneous latency")[1].split("<h2>")[0]
    assert "PASSED" in out and "latency (3 points)" in out


@pytest_twisted.inlineCallbacks
def test_wrong_type_and_value_fail_naming_the_points(site: Site, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> Iterator[Any]:
    """An IOA served with another type, and one with another value, fail; both reports name point, IOA and what came."""
    code = yield run_against(site, tmp_path, timeout=2.0, wrong_type={16385: "M_ME_NB_1"}, offset={16387: 20.0})
    out = capsys.readouterr().out
    assert code == 1, out
    cases = junit_cases(tmp_path / "junit.xml")
    wrong_type = cases["pcs1.p_ac (IOA 16385)"].find("failure")
    assert wrong_type is not None
    assert "pcs1.p_ac at IOA 16385" in wrong_type.get("message")
    assert "received type M_ME_NB_1, table says M_ME_NC_1" in wrong_type.get("message")
    wrong_value = cases["pcs1.soc (IOA 16387)"].find("failure")
    assert wrong_value is not None and "value 0.75" in wrong_value.get("message")
    assert "simulator served 0.55" in wrong_value.get("message")
    for fine in ("pcs1.running (IOA 1)", "pcs1.v_l1 (IOA 16386)", "pcs1.energy (IOA 25601)"):
        assert cases[fine].find("failure") is None, fine
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "FAILED" in page
    assert "M_ME_NC_1 (received M_ME_NB_1)" in page and "pcs1.p_ac at IOA 16385" in page
    assert "pcs1.soc at IOA 16387" in page
    assert "FAIL pcs1.p_ac at IOA 16385" in out and "FAIL pcs1.soc at IOA 16387" in out


@pytest_twisted.inlineCallbacks
def test_without_simulator_values_are_not_checked(site: Site, tmp_path: Path) -> Iterator[Any]:
    """Without --simulator the value checks are reported "not checked" (skipped), not passed; the run has no failure."""
    code = yield run_against(site, tmp_path, with_simulator=False)
    assert code == 0
    cases = junit_cases(tmp_path / "junit.xml")
    skipped = cases["pcs1.p_ac (IOA 16385)"].find("skipped")
    assert skipped is not None and "value not checked (no --simulator)" in skipped.get("message")
    assert cases["spontaneous latency"].find("skipped") is not None
    assert cases["pcs1 communication status (IOA 100)"].find("skipped") is None  # True is known without a simulator


@pytest_twisted.inlineCallbacks
def test_wrong_common_address_fails_the_interrogation(site: Site, tmp_path: Path) -> Iterator[Any]:
    """An outstation with another common address refuses the GI: the link check says why, every row is missing."""
    code = yield run_against(site, tmp_path, timeout=2.0, common_address=8, busy=True)  # frames with CA 8 keep coming
    assert code == 1
    cases = junit_cases(tmp_path / "junit.xml")
    failure = cases["general interrogation"].find("failure")
    assert failure is not None and failure.get("message") == "negative confirmation of C_IC_NA_1 (UNKNOWN_CA)"
    assert "not sent in the general interrogation" in cases["pcs1.p_ac (IOA 16385)"].find("failure").get("message")
    assert "common address 8, expected 7" in cases["common address"].find("failure").get("message")


@pytest_twisted.inlineCallbacks
def test_clock_sync_is_not_sent_to_a_group_whose_wire_is_not_utc(tmp_path: Path) -> Iterator[Any]:
    """c104 can only send UTC: for a Beijing-time wire the clock sync is skipped ("not checked", saying why)."""
    code = yield run_against(make_site(tmp_path, wire_time_zone="Asia/Shanghai"), tmp_path, with_simulator=False)
    assert code == 0
    skipped = junit_cases(tmp_path / "junit.xml")["clock synchronisation"].find("skipped")
    assert skipped is not None
    assert "the wire time zone Asia/Shanghai is UTC+8 now" in skipped.get("message")


@pytest_twisted.inlineCallbacks
def test_no_outstation_is_a_clear_connect_failure(site: Site, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> Iterator[Any]:
    """Nothing listening at the target: the connect check fails within the timeout, naming the target; rows are skipped."""
    port = next_port()  # nothing listens there: the run's own block, never handed to a server
    args = arguments(site, tmp_path, None, port=port, timeout=1.0)
    code = yield threads.deferToThread(dispatchtest.main, site, args)
    assert code == 1
    cases = junit_cases(tmp_path / "junit.xml")
    failure = cases["connect"].find("failure")
    assert failure is not None and f"no connection to 127.0.0.1:{port} within 1 s" in failure.get("message")
    assert cases["pcs1.p_ac (IOA 16385)"].find("skipped") is not None
    assert f"FAIL connect: no connection to 127.0.0.1:{port}" in capsys.readouterr().out


def test_unknown_group_exits_2(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A group the site does not have, or a target that is not HOST:PORT, is a usage error (exit 2) saying why."""
    args = arguments(site, tmp_path, None)
    args.group = "nope"
    assert dispatchtest.main(site, args) == 2
    assert "groups: dispatch" in capsys.readouterr().err
    args.group, args.target = "dispatch", "nowhere"
    assert dispatchtest.main(site, args) == 2
    assert "expected HOST:PORT, got 'nowhere'" in capsys.readouterr().err
