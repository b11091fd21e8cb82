"""An OPC UA EMS as a device of a site, end to end on 127.0.0.1: its values in the PointTable with
the server's source time, in InfluxDB (VictoriaMetrics), in the 104 outstation's general
interrogation, and a setpoint from a 104 master through the CommandGate to the OPC UA node and
back (ACT_CON, the power following, the audit trail)."""

import json
import time
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
SOC, POWER, SETPOINT_READBACK, SETPOINT = 16385, 16386, 16387, 24833


def _site(folder: Path, influx_url: str) -> tuple[Path, int]:
    ems_port, iec_port = next_ports(2)
    init_key(folder / "audit.key")
    site = {
        "site": "ua-e2e", "spool": {"path": str(folder / "spool.db")},
        "influx": {"url": influx_url, "bucket": "b", "flush_interval_s": 0.2},
        "audit": {"path": str(folder / "audit.jsonl"), "key": str(folder / "audit.key")},
        "devices": [{"name": "ems1", "profile": "ems/gridgate-ems-opcua",
                     "connection": {"endpoint": f"opc.tcp://127.0.0.1:{ems_port}", "publishing_interval_ms": 100}}],
        "master_groups": [{
            "name": "provincial", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
            "common_address": CA, "comm_status": {"ems1": 12289},
            "points": [{"point": "ems1.soc", "ioa": SOC, "type": "M_ME_NC_1"},
                       {"point": "ems1.p_active", "ioa": POWER, "type": "M_ME_NC_1"},
                       {"point": "ems1.p_setpoint", "ioa": SETPOINT_READBACK, "type": "M_ME_NC_1"}],
            "commands": [{"ioa": SETPOINT, "type": "C_SE_NC_1", "point": "ems1.p_setpoint", "mode": "direct",
                          "related_ioa": SETPOINT_READBACK}]}],
        "command_policy": [{"point": "ems1.p_setpoint", "groups": ["provincial"], "timeout_s": "3s",
                            "interlocks": [{"point": "ems1.local_mode", "op": "==", "value": True,
                                            "reason": "EMS in local mode"}]}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, iec_port


def _send(master, value: float) -> bool:
    station = master.connection.get_station(CA)
    point = station.get_point(io_address=SETPOINT) or station.add_point(io_address=SETPOINT, type=c104.Type.C_SE_NC_1)
    point.info = c104.ShortCmd(target=value)
    return point.transmit(cause=c104.Cot.ACTIVATION)


@pytest_twisted.inlineCallbacks
def test_an_opcua_ems_reaches_influx_and_104_and_takes_a_setpoint_from_dispatch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running, master_factory,
        victoria_metrics: tsdb.TsdbProcess) -> Iterator:
    monkeypatch.chdir(tmp_path)  # the simulator keeps its certificates in .gridgate/ of the working folder
    path, iec_port = _site(tmp_path, victoria_metrics.url)
    run = yield running(path)
    yield until(run.all_good, 20)
    soc = run.gateway.table.get("ems1.soc")
    assert abs(soc.source_time - time.time()) < 5 and soc.source_time <= soc.gateway_time + 0.01
    master = master_factory(iec_port, CA)
    assert (yield deferToThread(master.connect)) is not None
    assert (yield deferToThread(master.interrogate)) is None
    gi = {a.ioa: a.value for a in master.arrivals() if a.cot == "INTERROGATED_BY_STATION"}
    assert gi[SOC] == pytest.approx(run.gateway.table.get("ems1.soc").value, abs=0.5) and gi[12289] is True
    assert (yield deferToThread(_send, master, 200.0))
    assert run.simulators[0].value("ems1", "p_setpoint") == pytest.approx(200.0)
    yield until(lambda: abs(run.gateway.table.get("ems1.p_active").value - 200.0) < 1, 10)
    yield until(lambda: any(a.ioa == SETPOINT_READBACK and a.cot == "RETURN_INFO_REMOTE" and a.value == pytest.approx(200.0)
                            for a in master.arrivals()), 5)
    audit = [json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e for e in audit if e not in ("frame", *CHAIN_EVENTS)] == ["received", "written", "read_back", "confirmed"]
    series = yield deferToThread(tsdb.vm_export, victoria_metrics.url, '{__name__="gridgate_value",device="ems1"}',
                                 lambda found: {"soc", "p_active", "p_setpoint"} <= {s["metric"]["point"] for s in found})
    assert {"soc", "p_active", "p_setpoint"} <= {s["metric"]["point"] for s in series}
    assert {s["metric"]["model"] for s in series} == {"GG-EMS-UA"}
