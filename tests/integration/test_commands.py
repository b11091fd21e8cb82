"""Secured dispatch commands end to end: c104 master -> outstation -> CommandGate -> simulated PCS."""

import datetime
import json
import time
from pathlib import Path
from typing import Any, Iterator

import c104
import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from gateway.commands.audit import CHAIN_EVENTS
from gateway.commands.auditkeys import init_key
from gateway.iec104.wiretime import WireClock
from tests.integration.sites import until
from tests.ports import next_ports

pytestmark = pytest.mark.integration
CA = 3
SETPOINT, SETPOINT_SBO, SETPOINT_TAGGED, POWER, SETPOINT_READBACK = 24833, 24834, 24835, 16385, 16386


def _site(folder: Path, extra_policy: dict | None = None, **group_extra: Any) -> tuple[Path, int, int]:
    pcs_port, bms_port, iec_port, regional_port = next_ports(4)
    policy = {"point": "pcs1.active_power_setpoint", "groups": ["provincial"], "min_interval_s": 0, "timeout_s": "3s",
              "interlocks": [{"point": "bms1.soc", "op": ">=", "value": 95, "when_command": "negative",
                              "reason": "BMS SoC >= 95 %: no charging"},
                             {"point": "pcs1.remote_mode", "op": "==", "value": False, "reason": "PCS in local mode"}],
              **(extra_policy or {})}
    group = {"name": "provincial", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
             "common_address": CA,
             "points": [{"point": "pcs1.ac_active_power", "ioa": POWER, "type": "M_ME_NC_1"},
                        {"point": "pcs1.active_power_setpoint", "ioa": SETPOINT_READBACK, "type": "M_ME_NC_1"}],
             "commands": [{"ioa": SETPOINT, "type": "C_SE_NC_1", "point": "pcs1.active_power_setpoint",
                           "mode": "direct", "related_ioa": SETPOINT_READBACK},
                          {"ioa": SETPOINT_SBO, "type": "C_SE_NC_1", "point": "pcs1.active_power_setpoint",
                           "mode": "select_execute", "related_ioa": POWER},
                          {"ioa": SETPOINT_TAGGED, "type": "C_SE_TC_1", "point": "pcs1.active_power_setpoint",
                           "mode": "direct"}],
             **group_extra}
    if not (folder / "audit.key").exists():
        init_key(folder / "audit.key")
    site = {"site": "cmd", "spool": {"path": str(folder / "spool.db")},
            "audit": {"path": str(folder / "audit.jsonl"), "key": str(folder / "audit.key")},
            "devices": [{"name": "pcs1", "profile": "pcs/gridgate-pcs-250", "poll_s": 0.2, "timeout_s": 0.3,
                         "connection": {"host": "127.0.0.1", "port": pcs_port}},
                        {"name": "bms1", "profile": "bms/gridgate-bms-tcp", "poll_s": 0.2, "timeout_s": 0.3,
                         "connection": {"host": "127.0.0.1", "port": bms_port}}],
            "master_groups": [group, {key: value for key, value in group.items() if key != "failsafe"}
                              | {"name": "regional", "port": regional_port}],
            "command_policy": [policy]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, iec_port, regional_port


def _audit(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]


def _events(folder: Path, event: str) -> list[dict]:
    return [r for r in _audit(folder) if r["event"] == event]


def _send(master: Any, ioa: int, type_: c104.Type, value: float, mode=c104.CommandMode.DIRECT,
          recorded_at: datetime.datetime | None = None) -> bool:
    """Send one setpoint from the master; True on a positive ACT_CON (blocks: run it in a thread)."""
    station = master.connection.get_station(CA)
    point = station.get_point(io_address=ioa) or station.add_point(io_address=ioa, type=type_, command_mode=mode)
    point.info = c104.ShortCmd(target=value, recorded_at=recorded_at) if recorded_at else c104.ShortCmd(target=value)
    return point.transmit(cause=c104.Cot.ACTIVATION)


@pytest.fixture
def station(tmp_path: Path, running, master_factory):
    """Factory: the site running (extra policy / group keys), a connected master; yields (run, master, folder)."""
    def start(extra_policy: dict | None = None, group: str = "provincial", **group_extra: Any):
        path, port, regional = _site(tmp_path, extra_policy, **group_extra)

        @pytest_twisted.inlineCallbacks
        def go() -> Iterator:
            run = yield running(path)
            yield until(run.all_good, 15)
            master = master_factory(port if group == "provincial" else regional, CA)
            assert (yield deferToThread(master.connect)) is not None
            return run, master
        return go()
    return start


def _setpoint(run: Any) -> float:
    return run.simulators[0].value("pcs1", "active_power_setpoint")


@pytest_twisted.inlineCallbacks
def test_setpoint_reaches_the_pcs_and_is_confirmed(station, tmp_path: Path) -> Iterator:
    """A float setpoint reaches the PCS register scaled, the power follows, ACT_CON, ACT_TERM, return info, audit."""
    run, master = yield station()
    assert (yield deferToThread(_send, master, SETPOINT, c104.Type.C_SE_NC_1, 40.0))
    assert _setpoint(run) == pytest.approx(40.0)
    assert run.simulators[0].value("pcs1", "active_power_setpoint") == pytest.approx(40.0)
    yield until(lambda: _events(tmp_path, "frame") and any(
        f["cot"] == "ACTIVATION_TERMINATION" and f["direction"] == "out" for f in _events(tmp_path, "frame")), 5)
    yield until(lambda: any(r.ioa == SETPOINT_READBACK and r.cot == "RETURN_INFO_REMOTE" for r in master.arrivals()), 5)
    yield until(lambda: abs(run.gateway.table.get("pcs1.ac_active_power").value - 40.0) < 0.5, 10)
    assert [r["event"] for r in _audit(tmp_path) if r["event"] not in ("frame", *CHAIN_EVENTS)] == ["received", "written", "read_back", "confirmed"]


@pytest_twisted.inlineCallbacks
def test_select_before_operate_setpoint(station, tmp_path: Path) -> Iterator:
    """Through select-before-operate the setpoint is written once, after select and execute, and confirmed."""
    run, master = yield station()
    yield deferToThread(_send, master, SETPOINT_SBO, c104.Type.C_SE_NC_1, 30.0, c104.CommandMode.SELECT_AND_EXECUTE)
    yield until(lambda: _setpoint(run) == pytest.approx(30.0), 5)
    frames = lambda: [(f["direction"], f["cot"], f["select"], f["negative"])
                      for f in _events(tmp_path, "frame") if f["ioa"] == SETPOINT_SBO]
    yield until(lambda: ("out", "ACTIVATION_CON", False, False) in frames(), 5)  # frames are audited from c104's thread
    assert ("in", "ACTIVATION", True, False) in frames() and ("in", "ACTIVATION", False, False) in frames()
    assert _events(tmp_path, "confirmed")


def _refused(folder: Path) -> list[str]:
    return [r["reason"] for r in _events(folder, "refused")]


@pytest_twisted.inlineCallbacks
def test_out_of_range_is_refused(station, tmp_path: Path) -> Iterator:
    """A setpoint outside the point's limits: negative ACT_CON, device untouched, refusal audited."""
    run, master = yield station()
    before = _setpoint(run)
    assert not (yield deferToThread(_send, master, SETPOINT, c104.Type.C_SE_NC_1, 400.0))
    assert _setpoint(run) == before
    assert any("outside [-250, 250]" in r for r in _refused(tmp_path))


@pytest_twisted.inlineCallbacks
def test_ramp_exceeded_is_refused(station, tmp_path: Path) -> Iterator:
    """A jump larger than the point's ramp allows is refused and audited."""
    run, master = yield station()
    before = _setpoint(run)
    assert not (yield deferToThread(_send, master, SETPOINT, c104.Type.C_SE_NC_1, 200.0))
    assert _setpoint(run) == before
    assert any("ramp exceeded" in r for r in _refused(tmp_path))


@pytest_twisted.inlineCallbacks
def test_interlock_refuses_charging_at_high_soc(station, tmp_path: Path) -> Iterator:
    """BMS SoC >= 95 %: a charge (negative) setpoint is refused, the device untouched, the reason audited."""
    run, master = yield station()
    run.simulators[0].set_value("bms1", "soc", 97.0)
    yield until(lambda: run.gateway.table.get("bms1.soc").value >= 95, 5)
    before = _setpoint(run)
    assert not (yield deferToThread(_send, master, SETPOINT, c104.Type.C_SE_NC_1, -20.0))
    assert _setpoint(run) == before
    assert any("SoC >= 95" in r for r in _refused(tmp_path))


@pytest_twisted.inlineCallbacks
def test_offline_device_is_refused_within_the_deadline(station, tmp_path: Path) -> Iterator:
    """A PCS that stopped answering: negative ACT_CON well inside t1, nothing written, failure audited."""
    run, master = yield station()
    yield run.simulators[0].fault("pcs1", "silence")
    started = time.monotonic()
    assert not (yield deferToThread(_send, master, SETPOINT, c104.Type.C_SE_NC_1, 10.0))
    assert time.monotonic() - started < 15.0
    yield run.simulators[0].clear_fault("pcs1")
    assert _setpoint(run) == 0
    assert _events(tmp_path, "failed") or any("not communicating" in r for r in _refused(tmp_path))


@pytest_twisted.inlineCallbacks
def test_execute_without_select_is_refused(station, tmp_path: Path) -> Iterator:
    """An execute on a select-before-operate IOA without a select: negative ACT_CON, device untouched, frames audited."""
    run, master = yield station()
    assert not (yield deferToThread(_send, master, SETPOINT_SBO, c104.Type.C_SE_NC_1, 20.0))
    assert _setpoint(run) == 0
    frames = lambda: [(f["direction"], f["cot"], f["negative"]) for f in _events(tmp_path, "frame") if f["ioa"] == SETPOINT_SBO]
    yield until(lambda: ("out", "ACTIVATION_CON", True) in frames(), 5)
    assert ("in", "ACTIVATION", False) in frames()
    assert not _events(tmp_path, "written")


@pytest_twisted.inlineCallbacks
def test_stale_time_tagged_command_is_refused(station, tmp_path: Path) -> Iterator:
    """A C_SE_TC_1 issued 60 s ago (max age 10 s) is refused and audited."""
    run, master = yield station()
    stale = WireClock("UTC").to_c104(time.time() - 60)
    assert not (yield deferToThread(_send, master, SETPOINT_TAGGED, c104.Type.C_SE_TC_1, 10.0,
                                    c104.CommandMode.DIRECT, stale))
    assert _setpoint(run) == 0
    assert any("stale command" in r for r in _refused(tmp_path))


@pytest_twisted.inlineCallbacks
def test_replayed_command_is_refused(station, tmp_path: Path) -> Iterator:
    """The same time-tagged command sent twice: the first is executed, the replay refused."""
    run, master = yield station()
    tag = WireClock("UTC").to_c104(time.time())
    assert (yield deferToThread(_send, master, SETPOINT_TAGGED, c104.Type.C_SE_TC_1, 10.0, c104.CommandMode.DIRECT, tag))
    assert not (yield deferToThread(_send, master, SETPOINT_TAGGED, c104.Type.C_SE_TC_1, 10.0, c104.CommandMode.DIRECT, tag))
    assert any("replayed" in r for r in _refused(tmp_path))


@pytest_twisted.inlineCallbacks
def test_group_not_allowed_is_refused(station, tmp_path: Path) -> Iterator:
    """Group "regional" maps the command IOA but the policy allows only "provincial": refused and audited."""
    run, master = yield station(group="regional")
    assert not (yield deferToThread(_send, master, SETPOINT, c104.Type.C_SE_NC_1, 10.0))
    assert _setpoint(run) == 0
    assert any("not allowed" in r for r in _refused(tmp_path))


@pytest_twisted.inlineCallbacks
def test_failsafe_fires_after_the_configured_time_and_not_before(station, tmp_path: Path) -> Iterator:
    """Every master gone: the fallback value is written through the gate after after_s, not before, and audited."""
    run, master = yield station(failsafe={"after_s": "3s", "writes": [{"point": "pcs1.active_power_setpoint", "value": 0}]})
    assert (yield deferToThread(_send, master, SETPOINT, c104.Type.C_SE_NC_1, 20.0))
    fired_before = len(_events(tmp_path, "failsafe"))
    yield deferToThread(master.close)
    gone = time.monotonic()
    yield deferLater(reactor, 2.0, lambda: None)
    assert _setpoint(run) == pytest.approx(20.0) and len(_events(tmp_path, "failsafe")) == fired_before
    yield until(lambda: _setpoint(run) == 0, 5)
    assert time.monotonic() - gone >= 3.0
    assert len(_events(tmp_path, "failsafe")) == fired_before + 1
    assert _events(tmp_path, "confirmed")[-1]["value"] == 0


@pytest_twisted.inlineCallbacks
def test_failsafe_is_reasserted_until_the_offline_device_confirms(station, tmp_path: Path) -> Iterator:
    """Device silent when the fail-safe fires: refused attempts are retried (each audited) and the value lands once it answers."""
    run, master = yield station(failsafe={"after_s": "1s", "writes": [{"point": "pcs1.active_power_setpoint", "value": 0}]},
                                failsafe_alarm_ioa=12600)
    assert (yield deferToThread(_send, master, SETPOINT, c104.Type.C_SE_NC_1, 20.0))
    yield run.simulators[0].fault("pcs1", "silence")
    yield until(lambda: run.gateway.table.get("pcs1._online").value is False, 10)
    yield deferToThread(master.close)
    outstation = run.gateway.northbound["iec104"][0].outstations[0]
    yield until(lambda: len([r for r in _events(tmp_path, "refused") if "not communicating" in r["reason"]]) >= 2, 10)
    assert outstation.stats()["failsafe_pending"] == 1 and _setpoint(run) == pytest.approx(20.0)
    yield run.simulators[0].clear_fault("pcs1")
    yield until(lambda: _setpoint(run) == 0, 45)
    yield until(lambda: outstation.stats()["failsafe_pending"] == 0, 5)


@pytest_twisted.inlineCallbacks
def test_the_audit_log_of_a_run_verifies_with_the_public_key(station, tmp_path: Path) -> Iterator:
    """After a command and a clean stop the signed log verifies (exit 0) with only the public key."""
    import subprocess
    import sys
    run, master = yield station()
    assert (yield deferToThread(_send, master, SETPOINT, c104.Type.C_SE_NC_1, 30.0))
    yield run.stop()
    result = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(tmp_path / "audit.jsonl"),
                             "--public-key", str(tmp_path / "audit.key.pub")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
