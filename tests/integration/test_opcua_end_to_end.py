"""Each shipped OPC UA profile (the container EMS, the PV plant controller) as a device of a site,
end to end on 127.0.0.1: its values in the PointTable with
the server's source time, in InfluxDB (VictoriaMetrics), in the 104 outstation's general
interrogation, and a setpoint from a 104 master through the CommandGate to the OPC UA node and
back (ACT_CON, the power following, the audit trail)."""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import c104
import pytest
import pytest_twisted
import yaml
from twisted.internet.threads import deferToThread

from gateway.commands.audit import CHAIN_EVENTS
from gateway.commands.auditkeys import init_key
from tests import tsdb
from tests.integration.sites import until
from tests.ports import next_ports

pytestmark = pytest.mark.integration
CA = 7
MEASURED, FOLLOWER, SETPOINT_READBACK, SETPOINT = 16385, 16386, 16387, 24833


@dataclass(frozen=True)
class Shipped:
    """A shipped OPC UA profile: a measured point, a setpoint and the point that follows it."""

    profile: str
    model: str
    measured: str
    setpoint: str
    follower: str
    value: float


SHIPPED = [Shipped("ems/gridgate-ems-opcua", "GG-EMS-UA", "soc", "p_setpoint", "p_active", 200.0),
           Shipped("pv/gridgate-ppc-opcua", "GG-PPC-UA", "irradiance", "q_setpoint", "q_reactive", -300.0)]


def _site(folder: Path, influx_url: str, shipped: Shipped) -> tuple[Path, int]:
    port, iec_port = next_ports(2)
    init_key(folder / "audit.key")
    site = {
        "site": "ua-e2e", "spool": {"path": str(folder / "spool.db")},
        "influx": {"url": influx_url, "bucket": "b", "flush_interval_s": 0.2},
        "audit": {"path": str(folder / "audit.jsonl"), "key": str(folder / "audit.key")},
        "devices": [{"name": "ua1", "profile": shipped.profile,
                     "connection": {"endpoint": f"opc.tcp://127.0.0.1:{port}", "publishing_interval_ms": 100}}],
        "master_groups": [{
            "name": "provincial", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
            "common_address": CA, "comm_status": {"ua1": 12289},
            "points": [{"point": f"ua1.{shipped.measured}", "ioa": MEASURED, "type": "M_ME_NC_1"},
                       {"point": f"ua1.{shipped.follower}", "ioa": FOLLOWER, "type": "M_ME_NC_1"},
                       {"point": f"ua1.{shipped.setpoint}", "ioa": SETPOINT_READBACK, "type": "M_ME_NC_1"}],
            "commands": [{"ioa": SETPOINT, "type": "C_SE_NC_1", "point": f"ua1.{shipped.setpoint}", "mode": "direct",
                          "related_ioa": SETPOINT_READBACK}]}],
        "command_policy": [{"point": f"ua1.{shipped.setpoint}", "groups": ["provincial"], "timeout_s": "3s"}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, iec_port


def _send(master, value: float) -> bool:
    station = master.connection.get_station(CA)
    point = station.get_point(io_address=SETPOINT) or station.add_point(io_address=SETPOINT, type=c104.Type.C_SE_NC_1)
    point.info = c104.ShortCmd(target=value)
    return point.transmit(cause=c104.Cot.ACTIVATION)


@pytest.mark.parametrize("shipped", SHIPPED, ids=[s.model for s in SHIPPED])
@pytest_twisted.inlineCallbacks
def test_a_shipped_opcua_device_reaches_influx_and_104_and_takes_a_setpoint_from_dispatch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running, master_factory,
        victoria_metrics: tsdb.TsdbProcess, shipped: Shipped) -> Iterator:
    monkeypatch.chdir(tmp_path)  # the simulator keeps its certificates in .gridgate/ of the working folder
    path, iec_port = _site(tmp_path, victoria_metrics.url, shipped)
    run = yield running(path)
    yield until(run.all_good, 20)
    table = run.gateway.table
    measured = table.get(f"ua1.{shipped.measured}")
    assert abs(measured.source_time - time.time()) < 5 and measured.source_time <= measured.gateway_time + 0.01
    master = master_factory(iec_port, CA)
    assert (yield deferToThread(master.connect)) is not None
    assert (yield deferToThread(master.interrogate)) is None
    gi = {a.ioa: a.value for a in master.arrivals() if a.cot == "INTERROGATED_BY_STATION"}
    assert gi[MEASURED] == pytest.approx(table.get(f"ua1.{shipped.measured}").value, abs=5) and gi[12289] is True
    assert (yield deferToThread(_send, master, shipped.value))
    assert run.simulators[0].value("ua1", shipped.setpoint) == pytest.approx(shipped.value)
    spec = run.site.devices[0].profile
    close = spec.reporting_deadband(spec.point(shipped.follower)) + 1  # a change under the deadband stays on the server
    yield until(lambda: abs(table.get(f"ua1.{shipped.follower}").value - shipped.value) < close, 10)
    yield until(lambda: any(a.ioa == SETPOINT_READBACK and a.cot == "RETURN_INFO_REMOTE"
                            and a.value == pytest.approx(shipped.value) for a in master.arrivals()), 5)
    audit = [json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e for e in audit if e not in ("frame", *CHAIN_EVENTS)] == ["received", "written", "read_back", "confirmed"]
    wanted = {shipped.measured, shipped.follower, shipped.setpoint}
    series = yield deferToThread(tsdb.vm_export, victoria_metrics.url, '{__name__="gridgate_value",device="ua1"}',
                                 lambda found: wanted <= {s["metric"]["point"] for s in found})
    assert wanted <= {s["metric"]["point"] for s in series}
    assert {s["metric"]["model"] for s in series} == {shipped.model}
