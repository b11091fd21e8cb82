"""A framed-serial DTS unit as a device of a site, end to end on 127.0.0.1: a zone alarm reaches a
104 master as a time-tagged single point (SOE), and an interlock on that alarm refuses a charge
setpoint for the PCS, with the reason in the audit trail and the PCS untouched."""

import datetime
import json
import time
from pathlib import Path
from typing import Iterator

import c104
import pytest
import pytest_twisted
import yaml
from twisted.internet.threads import deferToThread

from drivers.serial_framed.sim.server import FramedSimulator
from gateway.commands.auditkeys import init_key
from tests.integration.sites import until
from tests.ports import next_ports

pytestmark = pytest.mark.integration
CA, ALARM, SETPOINT = 5, 101, 24833
DTS_PROFILE = """
model: T-DTS-E2E
kind: sensor
protocol: serial_framed
framing:
  encoding: binary
  start: "AA 55"
  length: {offset: 4, size: 2, adjust: 8}
  checksum: {algorithm: crc16_modbus, start: 2, byteorder: little}
messages:
  - {name: zones, request: "{address:02X} 21 00 00", match: {at: 0, value: "{address:02X} A1"}}
points:
  - {id: z7_tmax, message: zones, at: 4, type: i16, scale: 0.1, unit: "°C", sim: {value: 32.0}}
  - {id: z7_alarm, message: zones, at: 6, type: u8, bit: 1}
"""
REASON = "DTS zone 7 fire-risk alarm: no charging"


def _site(folder: Path) -> tuple[Path, int]:
    dts_port, pcs_port, iec_port = next_ports(3)
    (folder / "profiles").mkdir()
    (folder / "profiles" / "dts.yaml").write_text(DTS_PROFILE)
    init_key(folder / "audit.key")
    site = {
        "site": "dts-e2e", "profile_dirs": ["profiles"], "spool": {"path": str(folder / "spool.db")},
        "audit": {"path": str(folder / "audit.jsonl"), "key": str(folder / "audit.key")},
        "devices": [{"name": "dts1", "profile": "dts", "poll_s": 0.2, "timeout_s": 0.5,
                     "connection": {"host": "127.0.0.1", "port": dts_port, "address": 1}},
                    {"name": "pcs1", "profile": "pcs/gridgate-pcs-250", "poll_s": 0.2, "timeout_s": 0.3,
                     "connection": {"host": "127.0.0.1", "port": pcs_port}}],
        "master_groups": [{
            "name": "provincial", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
            "common_address": CA, "wire_time_zone": "UTC",
            "points": [{"point": "dts1.z7_alarm", "ioa": ALARM, "type": "M_SP_TB_1"}],
            "commands": [{"ioa": SETPOINT, "type": "C_SE_NC_1", "point": "pcs1.active_power_setpoint",
                          "mode": "direct"}]}],
        "command_policy": [{"point": "pcs1.active_power_setpoint", "groups": ["provincial"], "timeout_s": "3s",
                            "interlocks": [{"point": "dts1.z7_alarm", "op": "==", "value": True,
                                            "when_command": "negative", "reason": REASON}]}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, iec_port


def _charge(master, kw: float) -> bool:
    station = master.connection.get_station(CA)
    point = station.get_point(io_address=SETPOINT) or station.add_point(io_address=SETPOINT, type=c104.Type.C_SE_NC_1)
    point.info = c104.ShortCmd(target=kw)
    return point.transmit(cause=c104.Cot.ACTIVATION)


@pytest_twisted.inlineCallbacks
def test_a_dts_alarm_reaches_dispatch_as_soe_and_its_interlock_refuses_charging(
        tmp_path: Path, running, master_factory) -> Iterator:
    path, iec_port = _site(tmp_path)
    run = yield running(path)
    yield until(run.all_good, 20)
    master = master_factory(iec_port, CA)
    assert (yield deferToThread(master.connect)) is not None
    dts = next(s for s in run.simulators if isinstance(s, FramedSimulator))
    pcs = next(s for s in run.simulators if s is not dts)
    raised = time.time()
    dts.set_value("dts1", "z7_alarm", True)
    yield until(lambda: any(a.ioa == ALARM and a.cot == "SPONTANEOUS" and a.value is True
                            for a in master.arrivals()), 5)
    soe = next(a for a in master.arrivals() if a.ioa == ALARM and a.cot == "SPONTANEOUS" and a.value is True)
    tagged = soe.recorded_at.replace(tzinfo=datetime.timezone.utc).timestamp()
    assert soe.type == "M_SP_TB_1" and raised - 0.1 <= tagged <= raised + 1.0
    before = pcs.value("pcs1", "active_power_setpoint")
    assert not (yield deferToThread(_charge, master, -50.0))
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in audit if r["event"] == "refused"] == [f"interlock: {REASON} (dts1.z7_alarm = True)"]
    assert pcs.value("pcs1", "active_power_setpoint") == before != -50.0
