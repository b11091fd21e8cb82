"""规约转换 end to end on 127.0.0.1: a downstream station (the shipped booster RTU, simulated on
c104's server, time tags in Asia/Shanghai; or the scripted raw-socket station of tests/iec104_rtu.py) read by the gateway as its master, its points forwarded
to the gateway's own outstation under new IOAs, and a dispatch master (c104's client, frames
decoded by ``monitorframes``) that sees an RTU change spontaneously with the RTU's time tag and
operates an RTU breaker by select-before-operate through the CommandGate."""

import datetime
import json
import time
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted
import yaml
from twisted.internet.threads import deferToThread

from gateway.commands.auditkeys import init_key
from tests.iec104_rtu import ScriptedRtu
from tests.integration.sites import Running, until
from tests.ports import next_ports

pytestmark = pytest.mark.integration
CA, RTU_CA = 7, 1
BREAKER, POWER, BREAKER_COMMAND = 101, 16501, 24601  # the dispatch centre's IOAs, not the RTU's


def _site(folder: Path) -> tuple[Path, int]:
    rtu_port, iec_port = next_ports(2)
    init_key(folder / "audit.key")
    site = {
        "site": "conversion", "spool": {"path": str(folder / "spool.db")},
        "audit": {"path": str(folder / "audit.jsonl"), "key": str(folder / "audit.key")},
        "devices": [{"name": "rtu1", "profile": "rtu/gridgate-booster-rtu",
                     "connection": {"host": "127.0.0.1", "port": rtu_port, "common_address": RTU_CA,
                                    "wire_time_zone": "Asia/Shanghai", "clock_sync": "never", "offline_after_s": "3s",
                                    "timers": {"t1": "3s", "t2": "1s"}, "command_timeout_s": "2s"}}],
        "master_groups": [{
            "name": "provincial", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
            "common_address": CA, "comm_status": {"rtu1": 12289},
            "points": [{"point": "rtu1.cb_f1_pos", "ioa": BREAKER, "type": "M_DP_TB_1"},
                       {"point": "rtu1.p_main", "ioa": POWER, "type": "M_ME_TF_1"}],
            "commands": [{"ioa": BREAKER_COMMAND, "type": "C_DC_NA_1", "point": "rtu1.cb_f1_pos",
                          "mode": "select_execute", "related_ioa": BREAKER, "on_value": 2, "off_value": 1}]}],
        "command_policy": [{"point": "rtu1.cb_f1_pos", "groups": ["provincial"], "timeout_s": "5s"}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, iec_port


@pytest_twisted.inlineCallbacks
def test_an_rtu_change_reaches_dispatch_with_its_time_tag_and_dispatch_operates_an_rtu_breaker(
        tmp_path: Path, running, master_factory) -> Iterator:
    """RTU breaker opens → dispatch gets M_DP_TB_1 at its own IOA, spontaneously, with the RTU's SOE
    time; dispatch selects and executes close → the RTU's breaker closes, dispatch sees ACT_CON,
    ACT_TERM and the new position; the audit holds the whole command."""
    path, iec_port = _site(tmp_path)
    run = yield running(path)
    yield until(run.all_good, 20)
    master = master_factory(iec_port, CA)
    assert (yield deferToThread(master.connect)) is not None
    assert (yield deferToThread(master.interrogate)) is None
    gi = {a.ioa: a for a in master.arrivals() if a.cot == "INTERROGATED_BY_STATION"}
    assert gi[BREAKER].value == 2 and gi[BREAKER].type == "M_DP_NA_1"  # the untagged twin in a GI
    assert gi[12289].value is True

    changed_at = time.time()
    run.simulators[0].set_value("rtu1", "cb_f1_pos", 1)
    def opened() -> list:  # events buffered while no master was connected come too: not these
        return [a for a in master.arrivals() if a.ioa == BREAKER and a.cot == "SPONTANEOUS" and a.value == 1]
    yield until(lambda: bool(opened()), 5)
    [event] = opened()
    assert event.type == "M_DP_TB_1" and not event.quality
    tagged = event.recorded_at.replace(tzinfo=datetime.timezone.utc).timestamp()  # the group's wire zone: UTC
    assert abs(tagged - changed_at) < 0.5, (event.recorded_at, changed_at)

    timeline = yield deferToThread(master.send_command, BREAKER_COMMAND, "C_DC_NA_1", 2, True)
    assert timeline.confirmed and timeline.act_term_s is not None and timeline.negative is None, timeline
    assert run.simulators[0].value("rtu1", "cb_f1_pos") == 2
    yield until(lambda: any(a.ioa == BREAKER and a.value == 2 and a.cot in ("RETURN_INFO_REMOTE", "SPONTANEOUS")
                            and a.at > event.at for a in master.arrivals()), 5)
    audit = [json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert "confirmed" in audit and "failed" not in audit


@pytest_twisted.inlineCallbacks
def test_the_rtu_link_lost_shows_at_dispatch_nt_then_iv(tmp_path: Path, running, master_factory) -> Iterator:
    """The RTU stops: dispatch gets the forwarded points NT at once and IV with the comm-status
    point off once offline_after_s (3 s) has passed; back: good again."""
    path, iec_port = _site(tmp_path)
    run = yield running(path)
    yield until(run.all_good, 20)
    master = master_factory(iec_port, CA)
    assert (yield deferToThread(master.connect)) is not None
    lost = time.time()
    yield run.simulators[0].stop()

    def latest(ioa: int):
        return [a for a in master.arrivals() if a.ioa == ioa and a.at >= lost][-1:]
    yield until(lambda: any("NT" in a.quality for a in latest(POWER)), 3)
    yield until(lambda: any({"NT", "IV"} <= a.quality for a in latest(POWER)), 8)
    assert time.time() - lost >= 3.0
    yield until(lambda: any(a.value is False for a in latest(12289)), 3)
    yield run.simulators[0].start()
    yield until(lambda: any(not a.quality for a in latest(POWER)) and any(a.value is True for a in latest(12289)), 10)


@pytest_twisted.inlineCallbacks
def test_a_dispatch_sbo_reaches_a_raw_station_as_select_and_execute(tmp_path: Path, master_factory) -> Iterator:
    """The station is the scripted raw-socket one (tests/iec104_rtu.py): dispatch's select and
    execute arrive there, on the wire, as the station's own C_DC select then execute; its return
    information and ACT_TERM bring dispatch ACT_CON, ACT_TERM and the new position."""
    station = ScriptedRtu(common_address=RTU_CA, wire_zone="Asia/Shanghai").start()
    station.set_point(2, "M_DP_TB_1", 2)
    station.script_command(24578, then=lambda command: station.spontaneous(2, "M_DP_TB_1", command.value, cause=11))
    (tmp_path / "station.yaml").write_text(yaml.safe_dump({
        "model": "RAW", "kind": "rtu", "protocol": "iec104", "points": [
            {"id": "cb_f1_pos", "ioa": 2, "type": "M_DP_TB_1", "writable": {"min": 1, "max": 2},
             "command": {"ioa": 24578, "type": "C_DC_NA_1", "mode": "select_execute"}}]}))
    path, iec_port = _site(tmp_path)
    site = yaml.safe_load(path.read_text())
    site["devices"][0]["profile"] = "station.yaml"
    site["devices"][0]["connection"]["port"] = station.port
    site["master_groups"][0]["points"] = [site["master_groups"][0]["points"][0]]  # the breaker only
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    run = Running(path)
    try:
        yield run.start_gateway()
        yield until(run.all_good, 20)
        master = master_factory(iec_port, CA)
        assert (yield deferToThread(master.connect)) is not None
        timeline = yield deferToThread(master.send_command, BREAKER_COMMAND, "C_DC_NA_1", 1, True)
        assert timeline.confirmed and timeline.act_term_s is not None and timeline.negative is None, timeline
        assert [(c.ioa, c.select, c.value, c.cot) for c in station.commands] == [(24578, True, 1, 6), (24578, False, 1, 6)]
        yield until(lambda: any(a.ioa == BREAKER and a.value == 1 for a in master.arrivals()), 5)
    finally:
        yield run.stop()
        yield deferToThread(station.stop)
