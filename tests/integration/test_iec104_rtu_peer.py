"""Self-test of ``tests/iec104_rtu.py``, the scripted IEC 104 outstation, against the c104 client.

The peer is the independent other side for the gateway's 104 master driver, so these tests show
that a real master (c104 2.2.1 on lib60870-C) reads what the peer sends as the standard means it:
interrogation answers, a time tag in a wire zone unlike the process TZ, select-before-operate with
return information and ACT_TERM, a 10,000-event burst paced by the k window, a hung RTU.
What c104 saw is read from its own callbacks and its own frame explanation (``explain_bytes_dict``),
not from the peer's code.

c104 callbacks run on c104's threads: ``Master`` copies what they report under a condition that
the test waits on. c104 checks callback annotations as real objects: no ``from __future__ import
annotations`` here.
"""

import datetime
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from zoneinfo import ZoneInfo

import c104
import pytest

from tests.iec104_rtu import RETURN_INFO_REMOTE, ScriptedRtu

pytestmark = pytest.mark.integration

CA = 1
OPEN_TIMEOUT_S = 10.0  # Init.ALL runs GI and clock sync before OPEN, each may wait command_timeout_ms
UNMUTE_AFTER_S = 0.5
STARTDT_ACT = bytes([0x68, 0x04, 0x07, 0x00, 0x00, 0x00])
REPLY_TIMEOUT_S = 5.0
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Update:
    """One on_receive of a monitored c104 point, values copied on c104's thread."""

    ioa: int
    value: Any
    quality: Any
    recorded_at: Optional[datetime.datetime]
    cot: c104.Cot


class Master:
    """A c104 client with one connection to the peer; its callbacks record under ``self._changed``."""

    def __init__(self, port: int, init: c104.Init) -> None:
        self.client = c104.Client(tick_rate_ms=50, command_timeout_ms=2000)
        self.connection = self.client.add_connection(ip="127.0.0.1", port=port, init=init)
        self.station = self.connection.add_station(common_address=CA)
        self._changed = threading.Condition(threading.RLock())
        self.updates: list[Update] = []
        self.frames_in: list[dict] = []  # c104.explain_bytes_dict of every APDU received
        self.frames_out: list[tuple[float, bytes]] = []  # monotonic time, APDU sent
        self.states: list[tuple[float, str]] = []
        self.connection.on_receive_raw(callable=self._on_raw_in)
        self.connection.on_send_raw(callable=self._on_raw_out)
        self.connection.on_state_change(callable=self._on_state)

    def _on_point(self, point: c104.Point, previous_info: c104.Information,
                  message: c104.IncomingMessage) -> c104.ResponseState:
        with self._changed:
            self.updates.append(Update(point.io_address, point.value, point.quality, point.recorded_at, message.cot))
            self._changed.notify_all()
        return c104.ResponseState.NONE

    def _on_raw_in(self, connection: c104.Connection, data: bytes) -> None:
        with self._changed:
            self.frames_in.append(c104.explain_bytes_dict(apdu=data))
            self._changed.notify_all()

    def _on_raw_out(self, connection: c104.Connection, data: bytes) -> None:
        with self._changed:
            self.frames_out.append((time.monotonic(), bytes(data)))
            self._changed.notify_all()

    def _on_state(self, connection: c104.Connection, state: c104.ConnectionState) -> None:
        with self._changed:
            self.states.append((time.monotonic(), state.name))
            self._changed.notify_all()

    def asdus(self) -> list[dict]:
        """c104's explanation of each I-frame received, in order (U- and S-frames left out)."""
        with self._changed:
            return [frame for frame in self.frames_in if frame["format"] == "I"]

    def watch(self, ioa: int, point_type: c104.Type) -> None:
        """Add a monitored point whose updates land in ``self.updates``."""
        self.station.add_point(io_address=ioa, type=point_type).on_receive(callable=self._on_point)

    def expect(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait until ``condition`` (checked under the lock at each callback) holds, else fail."""
        with self._changed:
            if not self._changed.wait_for(condition, timeout_s):
                pytest.fail(f"c104 did not report {what} within {timeout_s} s: states {[s for _, s in self.states]}, "
                            f"{len(self.updates)} updates, {len(self.asdus())} ASDUs received")

    def open(self) -> None:
        """Start the client and wait for OPEN (STARTDT confirmed, and with Init.ALL the GI and clock sync
        done). c104 2.2.1 often (1 in 15 to 1 in 3 connects here) stays OPEN_MUTED without sending STARTDT:
        its connect schedules the unmute before it sets OPEN_MUTED, and the unmute finds the link not
        open. It is unmuted once then: each further STARTDT con would run the Init again."""
        self.client.start()
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        nudged = False
        while not self._wait(lambda: bool(self.states) and self.states[-1][1] == "OPEN", UNMUTE_AFTER_S):
            if time.monotonic() > deadline:
                pytest.fail(f"c104 connection still {self.connection.state.name} after {OPEN_TIMEOUT_S} s")
            if not nudged and self.connection.state == c104.ConnectionState.OPEN_MUTED and not self._sent(STARTDT_ACT):
                nudged = self.connection.unmute()

    def _sent(self, frame: bytes) -> bool:
        with self._changed:
            return any(sent == frame for _, sent in self.frames_out)

    def _wait(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(condition, timeout_s)

    def close(self) -> None:
        self.client.stop()


@pytest.fixture
def rtu_factory() -> Iterator[Callable[..., ScriptedRtu]]:
    """Factory of started peers (``ScriptedRtu`` options as keywords); all stopped afterwards."""
    peers: list[ScriptedRtu] = []

    def make(**options: Any) -> ScriptedRtu:
        peers.append(ScriptedRtu(common_address=CA, **options).start())
        return peers[-1]

    yield make
    for peer in peers:
        peer.stop()


@pytest.fixture
def master_factory() -> Iterator[Callable[..., Master]]:
    """Factory of c104 masters on a peer's port; all stopped afterwards (before the peers)."""
    masters: list[Master] = []

    def make(port: int, init: c104.Init = c104.Init.NONE) -> Master:
        masters.append(Master(port, init))
        return masters[-1]

    yield make
    for master in masters:
        master.close()


# -- (1) interrogations ----------------------------------------------------------------------------

FLOATS = {1000 + n: n * 0.25 for n in range(40)}  # 40 tagged floats: GI packs 30 + 10 untagged per ASDU
OVERFLOW_IOA, SINGLE_IOA, DOUBLE_IOA, COUNTER_IOA = 1001, 2000, 3000, 4000


def _table(rtu: ScriptedRtu) -> None:
    for ioa, value in FLOATS.items():
        rtu.set_point(ioa, "M_ME_TF_1", value, quality={"OV"} if ioa == OVERFLOW_IOA else ())
    rtu.set_point(SINGLE_IOA, "M_SP_TB_1", True, quality={"NT"})
    rtu.set_point(DOUBLE_IOA, "M_DP_NA_1", 2, quality={"IV", "SB"})
    rtu.set_point(COUNTER_IOA, "M_IT_TB_1", 123456, quality={"CY"})


def test_interrogations_return_the_point_table(rtu_factory: Callable[..., ScriptedRtu],
                                               master_factory: Callable[..., Master]) -> None:
    """c104's STARTDT, GI, clock sync and counter interrogation get every point back untagged, values and quality intact, in as few ASDUs as fit."""
    rtu = rtu_factory()
    _table(rtu)
    master = master_factory(rtu.port, c104.Init.ALL)  # GI and clock sync after STARTDT
    for ioa in FLOATS:
        master.watch(ioa, c104.Type.M_ME_NC_1)
    master.watch(SINGLE_IOA, c104.Type.M_SP_NA_1)
    master.watch(DOUBLE_IOA, c104.Type.M_DP_NA_1)
    master.watch(COUNTER_IOA, c104.Type.M_IT_NA_1)
    master.open()
    master.expect(lambda: len(master.updates) == len(FLOATS) + 2 and len(rtu.clock_syncs) == 1, REPLY_TIMEOUT_S,
                  "the GI answer and the clock sync")
    assert master.connection.counter_interrogation(common_address=CA)
    # raw-frame and point callbacks come on different c104 threads, after the blocking call returned
    master.expect(lambda: len(master.updates) == len(FLOATS) + 3 and len(master.asdus()) == 10, REPLY_TIMEOUT_S,
                  "the counter and the ten ASDUs")

    got = {update.ioa: update for update in master.updates}
    assert {ioa: got[ioa].value for ioa in FLOATS} == FLOATS
    assert got[OVERFLOW_IOA].quality == c104.Quality.Overflow
    assert (got[SINGLE_IOA].value, got[SINGLE_IOA].quality) == (True, c104.Quality.NonTopical)
    assert (got[DOUBLE_IOA].value, got[DOUBLE_IOA].quality) == \
        (c104.Double.ON, c104.Quality.Invalid | c104.Quality.Substituted)
    assert {(u.cot, u.recorded_at) for ioa, u in got.items() if ioa != COUNTER_IOA} == \
        {(c104.Cot.INTERROGATED_BY_STATION, None)}
    counter = got[COUNTER_IOA]
    assert (counter.value, counter.cot, counter.recorded_at) == (123456, c104.Cot.REQUESTED_BY_GENERAL_COUNTER, None)
    assert counter.quality.value == 0x20  # CY, the standard's bit 6; c104 2.2.1 names this bit "Adjusted"

    answers = [(f["type"].name, f["cot"].name, f["numberOfObjects"], f["negative"]) for f in master.asdus()]
    assert answers == [
        ("C_IC_NA_1", "ACTIVATION_CON", 1, False),
        ("M_ME_NC_1", "INTERROGATED_BY_STATION", 30, False),
        ("M_ME_NC_1", "INTERROGATED_BY_STATION", 10, False),
        ("M_SP_NA_1", "INTERROGATED_BY_STATION", 1, False),
        ("M_DP_NA_1", "INTERROGATED_BY_STATION", 1, False),
        ("C_IC_NA_1", "ACTIVATION_TERMINATION", 1, False),
        ("C_CS_NA_1", "ACTIVATION_CON", 1, False),
        ("C_CI_NA_1", "ACTIVATION_CON", 1, False),
        ("M_IT_NA_1", "REQUESTED_BY_GENERAL_COUNTER", 1, False),
        ("C_CI_NA_1", "ACTIVATION_TERMINATION", 1, False),
    ]
    assert {f["commonAddress"] for f in master.asdus()} == {CA}  # c104's Init GI and clock sync go to CA 0xFFFF
    assert abs(rtu.clock_syncs[0].posix("UTC") - time.time()) < 2.0  # c104 sends its clock as UTC fields
    assert rtu.errors == []


# -- (2) a tagged spontaneous value, process TZ and wire zone unlike each other --------------------

WIRE_ZONE = "Asia/Shanghai"
PROCESS_TZ = "America/New_York"
TAGGED_IOA = 6001
# 18:34:56.789 UTC is 02:34:56.789 the next day in Shanghai: the wire date rolls over as well as the hour
TS = datetime.datetime(2026, 3, 1, 18, 34, 56, 789000, tzinfo=datetime.timezone.utc).timestamp()


def tagged_time_probe(out: str) -> None:
    """Run in a subprocess under TZ=PROCESS_TZ: one M_ME_TF_1 from a peer on WIRE_ZONE; report to ``out`` (JSON)."""
    rtu = ScriptedRtu(common_address=CA, wire_zone=WIRE_ZONE).start()
    master = Master(rtu.port, c104.Init.NONE)
    try:
        master.watch(TAGGED_IOA, c104.Type.M_ME_TF_1)
        master.open()
        rtu.spontaneous(TAGGED_IOA, "M_ME_TF_1", 42.5, quality={"NT"}, time=TS)
        master.expect(lambda: len(master.updates) == 1, REPLY_TIMEOUT_S, "the tagged value")
        update = master.updates[0]
        Path(out).write_text(json.dumps({
            "utc_offset_s": time.localtime(TS).tm_gmtoff, "value": update.value, "cot": update.cot.name,
            "quality": update.quality.value, "recorded_at": update.recorded_at.isoformat(timespec="milliseconds")}))
    finally:
        master.close()
        rtu.stop()


def test_tagged_value_carries_the_wire_zone_wall_time(tmp_path: Path) -> None:
    """An M_ME_TF_1 sent with wire zone Asia/Shanghai reaches a c104 master under TZ=America/New_York with the Shanghai wall-time fields."""
    out = tmp_path / "report.json"
    code = ("import sys; from tests.integration.test_iec104_rtu_peer import tagged_time_probe; "
            "tagged_time_probe(sys.argv[1])")
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, env={**os.environ, "TZ": PROCESS_TZ},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"probe failed:\n{done.stdout}\n{done.stderr}"
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["utc_offset_s"] == -5 * 3600, "TZ=America/New_York not in effect (tz database missing?)"

    wire_fields = datetime.datetime.fromtimestamp(TS, ZoneInfo(WIRE_ZONE)).replace(tzinfo=None)
    assert wire_fields == datetime.datetime(2026, 3, 2, 2, 34, 56, 789000)
    # c104 reads the fields as UTC and hands back that instant as naive process-local time
    c104_view = wire_fields.replace(tzinfo=datetime.timezone.utc).astimezone(ZoneInfo(PROCESS_TZ)).replace(tzinfo=None)
    assert report == {"utc_offset_s": -5 * 3600, "value": 42.5, "cot": "SPONTANEOUS",
                      "quality": c104.Quality.NonTopical.value,
                      "recorded_at": c104_view.isoformat(timespec="milliseconds")}


# -- (3) commands ----------------------------------------------------------------------------------

SWITCH_IOA, STATUS_IOA, REFUSED_IOA, UNKNOWN_IOA = 5001, 5002, 5003, 5004


def test_select_before_operate_and_negative_confirmations(rtu_factory: Callable[..., ScriptedRtu],
                                                          master_factory: Callable[..., Master]) -> None:
    """c104's SBO single command is recorded as select then execute, confirmed, answered with return information and ACT_TERM; refused and unknown IOAs make transmit return False."""
    rtu = rtu_factory()
    rtu.script_command(SWITCH_IOA, then=lambda command: rtu.spontaneous(STATUS_IOA, "M_SP_NA_1", command.value,
                                                                         cause=RETURN_INFO_REMOTE))
    rtu.script_command(REFUSED_IOA, confirm=False)
    master = master_factory(rtu.port)
    switch = master.station.add_point(io_address=SWITCH_IOA, type=c104.Type.C_SC_NA_1,
                                      command_mode=c104.CommandMode.SELECT_AND_EXECUTE)
    refused = master.station.add_point(io_address=REFUSED_IOA, type=c104.Type.C_SC_NA_1)
    unknown = master.station.add_point(io_address=UNKNOWN_IOA, type=c104.Type.C_SC_NA_1)
    master.watch(STATUS_IOA, c104.Type.M_SP_NA_1)
    master.open()

    switch.info = c104.SingleCmd(on=True, qualifier=c104.Qoc.SHORT_PULSE)
    assert switch.transmit(cause=c104.Cot.ACTIVATION)
    assert [(c.ioa, c.type_name, c.select, c.value, c.qualifier, c.cot, c.negative, c.test) for c in rtu.commands] == [
        (SWITCH_IOA, "C_SC_NA_1", True, True, 1, 6, False, False),
        (SWITCH_IOA, "C_SC_NA_1", False, True, 1, 6, False, False),
    ]
    master.expect(lambda: any(f["cot"] == c104.Cot.ACTIVATION_TERMINATION for f in master.asdus()),
                  REPLY_TIMEOUT_S, "ACT_TERM")
    assert [(f["type"].name, f["cot"].name, f["negative"]) for f in master.asdus()] == [
        ("C_SC_NA_1", "ACTIVATION_CON", False),  # select
        ("C_SC_NA_1", "ACTIVATION_CON", False),  # execute
        ("M_SP_NA_1", "RETURN_INFO_REMOTE", False),
        ("C_SC_NA_1", "ACTIVATION_TERMINATION", False),
    ]
    assert [(u.ioa, u.value, u.cot) for u in master.updates] == [(STATUS_IOA, True, c104.Cot.RETURN_INFO_REMOTE)]

    refused.info = c104.SingleCmd(on=True)
    unknown.info = c104.SingleCmd(on=True)
    assert not refused.transmit(cause=c104.Cot.ACTIVATION)
    assert not unknown.transmit(cause=c104.Cot.ACTIVATION)
    master.expect(lambda: len(master.asdus()) == 6, REPLY_TIMEOUT_S, "the two negative confirmations")
    replies = master.asdus()[-2:]
    assert [(f["firstInformationObjectAddress"], f["cot"].name, f["negative"]) for f in replies] == [
        (REFUSED_IOA, "ACTIVATION_CON", True), (UNKNOWN_IOA, "UNKNOWN_IOA", True)]
    assert rtu.errors == []


# -- (4) sequence-of-events burst ------------------------------------------------------------------

SOE_IOA = 7001
SOE_EVENTS = 10_000
SOE_T0 = datetime.datetime(2026, 5, 1, tzinfo=datetime.timezone.utc).timestamp()


def test_soe_burst_arrives_complete_and_in_order(rtu_factory: Callable[..., ScriptedRtu],
                                                 master_factory: Callable[..., Master]) -> None:
    """10,000 M_SP_TB_1 events sent as fast as the k = 12 window allows all reach c104, in order, within 30 s."""
    rtu = rtu_factory()  # wire zone UTC: c104's process-local recorded_at is the sample instant
    master = master_factory(rtu.port)
    master.watch(SOE_IOA, c104.Type.M_SP_TB_1)
    master.open()
    rtu.burst((SOE_IOA, "M_SP_TB_1", n % 2 == 1, (), SOE_T0 + n / 1000) for n in range(SOE_EVENTS))
    master.expect(lambda: len(master.updates) == SOE_EVENTS, 30.0, f"{SOE_EVENTS} events")

    assert [round(u.recorded_at.timestamp() * 1000) for u in master.updates] == \
        [round(SOE_T0 * 1000) + n for n in range(SOE_EVENTS)]
    assert [u.value for u in master.updates] == [n % 2 == 1 for n in range(SOE_EVENTS)]
    assert {u.cot for u in master.updates} == {c104.Cot.SPONTANEOUS}
    assert rtu.max_in_flight == 12  # the window was filled, never overrun
    assert rtu.errors == []


# -- (5) a hung RTU --------------------------------------------------------------------------------

T1_S, T2_S, T3_S = 2, 1, 3
TESTFR_ACT = bytes([0x68, 0x04, 0x43, 0x00, 0x00, 0x00])


def test_unanswered_testfr_closes_the_connection_after_t1(rtu_factory: Callable[..., ScriptedRtu],
                                                         master_factory: Callable[..., Master]) -> None:
    """With TESTFR act left unanswered, c104's connection leaves OPEN t1 after its first TESTFR act (t1 < t3)."""
    rtu = rtu_factory(answer_testfr=False)
    master = master_factory(rtu.port)
    parameters = master.connection.protocol_parameters
    parameters.message_timeout, parameters.confirm_interval, parameters.keep_alive_interval = T1_S, T2_S, T3_S
    master.open()
    opened = len(master.states)
    master.expect(lambda: len(master.states) > opened, T3_S + T1_S + 2.0, "the connection leaving OPEN")

    opened_at, closed_at, state = master.states[opened - 1][0], *master.states[opened]
    testfr_at = next(at for at, frame in master.frames_out if frame == TESTFR_ACT)
    assert state == "CLOSED_AWAIT_RECONNECT"
    assert T3_S - 0.2 < testfr_at - opened_at < T3_S + 0.5
    assert T1_S - 0.2 < closed_at - testfr_at < T1_S + 0.5
    assert TESTFR_ACT in rtu.received
