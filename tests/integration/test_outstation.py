"""The IEC 104 outstation of `gridgate run` against a real c104 master, devices simulated on 127.0.0.1."""

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from gateway.commissioning.dispatchcheck import Arrival
from gateway.commissioning.recordingmaster import RecordingMaster
from gateway.iec104.wiretime import WireClock
from gateway.model import Quality, Sample
from tests.integration.sites import until
from tests.ports import next_port, next_ports

pytestmark = pytest.mark.integration
CA = 7
GOOD, NT, IV_NT = frozenset(), frozenset({"NT"}), frozenset({"IV", "NT"})


def received(master: RecordingMaster, where: Callable[[Arrival], bool] = lambda r: True) -> list[Arrival]:
    """What ``master`` received so far that matches ``where``, oldest first."""
    return [r for r in master.arrivals() if where(r)]


def _profile(points: int) -> dict:
    return {"model": "OUT", "kind": "other", "protocol": "modbus", "points": [
        {"id": f"r{i:03d}", "address": i, "type": "uint16", "sim": {"kind": "constant", "value": i}}
        for i in range(points)]}


def _site(folder: Path, devices: int, points: int, groups: list[dict]) -> Path:
    (folder / "out.yaml").write_text(yaml.safe_dump(_profile(points)))
    ports = next_ports(devices)
    site = {"site": "out", "spool": {"path": str(folder / "spool.db")},
            "devices": [{"name": f"d{n}", "profile": "out", "poll_s": 0.2, "timeout_s": 0.2, "offline_after": 2,
                         "connection": {"host": "127.0.0.1", "port": port}} for n, port in enumerate(ports)],
            "master_groups": groups}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def _group(name: str, port: int, points: list[dict], **extra: Any) -> dict:
    return {"name": name, "bind": "127.0.0.1", "port": port, "allowed_masters": ["127.0.0.1"],
            "common_address": CA, "points": points, **extra}


def _all_points(devices: int, points: int, type_: str = "M_ME_NC_1", base: int = 1) -> list[dict]:
    return [{"point": f"d{n}.r{i:03d}", "ioa": base + n * points + i, "type": type_}
            for n in range(devices) for i in range(points)]


@pytest_twisted.inlineCallbacks
def test_gi_returns_every_point_with_value_and_quality(tmp_path: Path, running, master_factory) -> Iterator:
    """GI of 1,000 mapped points (10 devices x 100): every IOA arrives once, right type, value and good quality."""
    port = next_port()
    status = {f"d{n}": 5001 + n for n in range(10)}
    run = yield running(_site(tmp_path, 10, 100, [_group("dispatch", port, _all_points(10, 100), comm_status=status)]))
    yield until(run.all_good)
    master = master_factory(port, CA)
    assert (yield deferToThread(master.connect))
    assert (yield deferToThread(master.interrogate)) is None
    yield deferToThread(master.wait_for, lambda: len(received(master, lambda r: r.cot == "INTERROGATED_BY_STATION")) >= 1010, 10)
    gi = {r.ioa: r for r in received(master, lambda r: r.cot == "INTERROGATED_BY_STATION")}
    assert len(gi) == 1010
    for n in range(10):
        for i in range(100):
            got = gi[1 + n * 100 + i]
            assert (got.type, got.value, got.quality) == ("M_ME_NC_1", float(i), GOOD), (n, i)
        assert (gi[5001 + n].type, gi[5001 + n].value) == ("M_SP_NA_1", True)  # untagged at COT 20


@pytest_twisted.inlineCallbacks
def test_offline_device_goes_nt_then_iv_and_recovers(tmp_path: Path, running, master_factory) -> Iterator:
    """A silent device: its points go NT then IV spontaneously, comm status off; good again on recovery."""
    port = next_port()
    run = yield running(_site(tmp_path, 2, 3, [_group("dispatch", port, _all_points(2, 3, "M_ME_TF_1"),
                                                      comm_status={"d0": 101, "d1": 102})]))
    yield until(run.all_good)
    master = master_factory(port, CA)
    assert (yield deferToThread(master.connect))
    yield run.simulators[0].fault("d0", "silence")
    spont = lambda ioa: [r.quality for r in _spontaneous(master, ioa)]
    status = lambda: [r.value for r in received(master, lambda r: r.ioa == 101)]
    yield deferToThread(master.wait_for, lambda: IV_NT in spont(1) and False in status(), 10)
    qualities = spont(1)
    nt = qualities.index(NT)
    assert qualities[nt - 1:nt + 2] == [GOOD, NT, IV_NT], qualities
    assert all(q == GOOD for q in spont(4)), "the other device is untouched"
    yield run.simulators[0].clear_fault("d0")
    yield deferToThread(master.wait_for, lambda: spont(1)[-1] == GOOD and status()[-1] is True, 15)


@pytest_twisted.inlineCallbacks
def test_burst_of_10000_changes_arrives_complete_and_in_order(tmp_path: Path, running, master_factory) -> Iterator:
    """10,000 changes published at once all reach the master, in order, each with its own time tag."""
    port = next_port()
    run = yield running(_site(tmp_path, 1, 1, [_group("dispatch", port, [{"point": "d0.r000", "ioa": 900, "type": "M_ME_TF_1"}])]))
    yield until(run.all_good)
    master = master_factory(port, CA)
    assert (yield deferToThread(master.connect))
    start = time.time() - 100
    burst = [Sample("d0.r000", float(i), Quality.GOOD, start + i / 100, start + i / 100) for i in range(1, 10_001)]
    run.gateway.table.publish(burst)
    yield deferToThread(master.wait_for, lambda: 10_000.0 in [r.value for r in _spontaneous(master, 900)], 30)
    events = _spontaneous(master, 900)
    first = [r.value for r in events].index(1.0)
    run_of_burst = events[first:first + 10_000]
    assert [r.value for r in run_of_burst] == [s.value for s in burst]
    wire = WireClock("UTC")
    assert [round(wire.from_c104(r.recorded_at) * 1000) for r in run_of_burst] == [round(s.source_time * 1000) for s in burst]


def _spontaneous(master: RecordingMaster, ioa: int) -> list:
    return received(master, lambda r: r.ioa == ioa and r.cot == "SPONTANEOUS")


@pytest_twisted.inlineCallbacks
def test_master_away_30s_gets_every_buffered_event_in_order(tmp_path: Path, running, master_factory) -> Iterator:
    """A 30 s master disconnect with changes meanwhile: every buffered event replayed in order with its time tag."""
    port = next_port()
    run = yield running(_site(tmp_path, 1, 1, [_group("dispatch", port, [{"point": "d0.r000", "ioa": 900, "type": "M_ME_TF_1"}])]))
    yield until(run.all_good)
    master = master_factory(port, CA)
    assert (yield deferToThread(master.connect))
    yield deferToThread(master.close)
    away = []
    for second in range(30):
        sample = Sample("d0.r000", 1000.0 + second, Quality.GOOD, time.time(), time.time())
        run.gateway.table.publish([sample])
        away.append(sample)
        yield deferLater(reactor, 1.0, lambda: None)
    again = master_factory(port, CA)
    assert (yield deferToThread(again.connect))
    yield deferToThread(again.wait_for, lambda: 1029.0 in [r.value for r in _spontaneous(again, 900)], 15)
    replay = [r for r in _spontaneous(again, 900) if r.value >= 1000.0]
    assert [r.value for r in replay] == [s.value for s in away]
    wire = WireClock("UTC")
    assert [round(wire.from_c104(r.recorded_at) * 1000) for r in replay] == [round(s.source_time * 1000) for s in away]


@pytest_twisted.inlineCallbacks
def test_restart_while_master_away_loses_no_buffered_event(tmp_path: Path, running, master_factory) -> Iterator:
    """Events buffered while no master is connected survive a gateway restart and are sent afterwards."""
    port = next_port()
    run = yield running(_site(tmp_path, 1, 1, [_group("dispatch", port, [{"point": "d0.r000", "ioa": 900, "type": "M_ME_TF_1"}])]))
    yield until(run.all_good)
    now = time.time()
    away = [Sample("d0.r000", 2000.0 + i, Quality.GOOD, now + i / 10, now + i / 10) for i in range(50)]
    run.gateway.table.publish(away)
    yield run.gateway.stopService()
    yield run.start_gateway()
    master = master_factory(port, CA)
    assert (yield deferToThread(master.connect))
    yield deferToThread(master.wait_for, lambda: 2049.0 in [r.value for r in _spontaneous(master, 900)], 15)
    assert [r.value for r in _spontaneous(master, 900) if r.value >= 2000.0] == [s.value for s in away]


@pytest_twisted.inlineCallbacks
def test_two_groups_each_see_only_their_own_table(tmp_path: Path, running, master_factory) -> Iterator:
    """Two master groups on two ports: each GI returns exactly its own IOAs."""
    port_a, port_b = next_ports(2)
    run = yield running(_site(tmp_path, 1, 4, [
        _group("provincial", port_a, [{"point": "d0.r000", "ioa": 16385, "type": "M_ME_NC_1"},
                                      {"point": "d0.r001", "ioa": 16386, "type": "M_ME_NC_1"}]),
        _group("regional", port_b, [{"point": "d0.r002", "ioa": 100, "type": "M_ME_NB_1", "multiplier": 0.4},
                                    {"point": "d0.r003", "ioa": 101, "type": "M_ME_NC_1"}])]))
    yield until(run.all_good)
    seen = {}
    for name, port in (("provincial", port_a), ("regional", port_b)):
        master = master_factory(port, CA)
        assert (yield deferToThread(master.connect))
        assert (yield deferToThread(master.interrogate)) is None
        gi = lambda: received(master, lambda r: r.cot == "INTERROGATED_BY_STATION")
        yield deferToThread(master.wait_for, lambda: len(gi()) >= 2, 5)  # both points: a GI answer is 2 objects
        seen[name] = {(r.ioa, r.type, r.value) for r in gi()}
    assert seen["provincial"] == {(16385, "M_ME_NC_1", 0.0), (16386, "M_ME_NC_1", 1.0)}
    assert seen["regional"] == {(100, "M_ME_NB_1", 1), (101, "M_ME_NC_1", 3.0)}  # 2 x 0.4 rounds to 1


@pytest_twisted.inlineCallbacks
def test_counter_interrogation_and_clock_sync(tmp_path: Path, running, master_factory) -> Iterator:
    """Counters answer counter interrogation; clock sync is confirmed and a master clock far off raises the alarm."""
    port = next_port()
    run = yield running(_site(tmp_path, 1, 2, [_group("dispatch", port, [
        {"point": "d0.r000", "ioa": 25601, "type": "M_IT_NA_1"}, {"point": "d0.r001", "ioa": 16385, "type": "M_ME_NC_1"}],
        clock_alarm_ioa=12546, clock_sync={"alarm_offset_s": "1s"})]))
    yield until(run.all_good)
    master = master_factory(port, CA)
    assert (yield deferToThread(master.connect))
    assert (yield deferToThread(master.counter_interrogate)) is None
    counters = received(master, lambda r: r.ioa == 25601 and r.cot.startswith("REQUESTED_BY_GENERAL_COUNTER"))
    assert counters and counters[-1].value == 0
    assert (yield deferToThread(master.clock_sync)) is None
    yield until(lambda: run.gateway.northbound["iec104"][0].outstations[0].stats()["clock_syncs"] == 1)
    alarm = run.gateway.northbound["iec104"][0].outstations[0]
    alarm._clock_synced("127.0.0.1", time.time() + 30, time.time())  # a master 30 s ahead
    yield deferToThread(master.wait_for, lambda: any(r.ioa == 12546 and r.value is True for r in master.arrivals()), 5)


@pytest_twisted.inlineCallbacks
def test_a_group_whose_port_is_taken_fails_the_start_naming_group_and_address(tmp_path: Path, running) -> Iterator:
    """Another program on the group's port: the gateway does not start, the error names group and address."""
    import socket
    from gateway.northbound.iec104.outstation import ListenError
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        with pytest.raises(ListenError, match=f"104 group dispatch: cannot listen on 127.0.0.1:{port}"):
            yield running(_site(tmp_path, 1, 1, [_group("dispatch", port, [{"point": "d0.r000", "ioa": 1,
                                                                              "type": "M_ME_NC_1"}])]))
    finally:
        squatter.close()
