"""The IEC 104 master driver against a scripted raw-socket station (``tests/iec104_rtu.py``, written
from the standard's octets, sharing no code with c104): interrogation answered untagged and events
sent tagged on the same IOAs, time tags in the station's zone with the gateway process in another,
quality bits as sent, select-before-operate on the wire, negative confirmations, a missing ACT_TERM,
a station that stops answering (TESTFR unanswered), and a 10,000-event SOE burst complete and in
order."""

import os
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from drivers.iec104.driver import Iec104Driver
from drivers.iec104.profile import Iec104Command, Iec104Connection, Iec104Point, Iec104Profile
from gateway.aio import await_deferred
from gateway.config.profile import Limits
from gateway.errors import CommandFailed
from gateway.iec104.timers import Timers
from gateway.model import Command, Device, Quality
from tests.aio import on_asyncio, until
from tests.iec104_rtu import ScriptedRtu
from tests.sinks import RecordingSink

pytestmark = pytest.mark.integration

WIRE_ZONE = "Asia/Shanghai"
PROCESS_ZONE = "America/New_York"  # unlike the wire zone, and with DST: c104's localtime() must not matter
BREAKER, POWER, ENERGY, TRIP, BREAKER_COMMAND, SETPOINT, SETPOINT_COMMAND = 2, 16385, 25601, 17, 24577, 16390, 25002
PROFILE = Iec104Profile(model="raw-rtu", kind="rtu", protocol="iec104", points=[
    Iec104Point(id="cb", ioa=BREAKER, type="M_DP_TB_1", writable=Limits(min=1, max=2),
                command=Iec104Command(ioa=BREAKER_COMMAND, type="C_DC_NA_1", mode="select_execute")),
    Iec104Point(id="p", ioa=POWER, type="M_ME_TF_1"),
    Iec104Point(id="trip", ioa=TRIP, type="M_SP_TB_1"),
    Iec104Point(id="energy", ioa=ENERGY, type="M_IT_NA_1"),
    Iec104Point(id="sp", ioa=SETPOINT, type="M_ME_NC_1", writable=Limits(min=-100, max=100, readback_tolerance=0.01),
                command=Iec104Command(ioa=SETPOINT_COMMAND, type="C_SE_TC_1")),
])


@pytest.fixture
def process_zone() -> Iterator[None]:
    """The test process in PROCESS_ZONE (c104 converts time tags with the C library's local time)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = PROCESS_ZONE
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest_twisted.async_yield_fixture
async def rtu(process_zone: None) -> AsyncIterator[ScriptedRtu]:
    station = ScriptedRtu(common_address=1, wire_zone=WIRE_ZONE).start()
    station.set_point(BREAKER, "M_DP_TB_1", 2)
    station.set_point(POWER, "M_ME_TF_1", 10.0)
    station.set_point(TRIP, "M_SP_TB_1", False)
    station.set_point(ENERGY, "M_IT_TB_1", 5000)
    try:
        yield station
    finally:
        await threads.deferToThread(station.stop)


class Driving:
    """The driver on the scripted station, publishing into a recording table."""

    def __init__(self, port: int, waits_for: tuple[str, ...] = ("cb", "p", "trip", "energy"), **connection: Any) -> None:
        self.waits_for = waits_for
        settings: dict[str, Any] = {"offline_after_s": 3.0, "gi_every_s": None, "counter_interrogation_every_s": None,
                                    "timers": Timers(t1=2.0, t2=1.0, t3=1.0), "command_timeout_s": 1.5,
                                    "wire_time_zone": WIRE_ZONE, "clock_sync": "never", **connection}
        model = Iec104Connection(host="127.0.0.1", port=port, common_address=1, **settings)
        self.sink = RecordingSink()
        self.driver = Iec104Driver(Device("rtu1", PROFILE, Path("rtu.yaml"), model, {}), self.sink, reactor)

    def sample(self, point: str) -> Any:
        return self.sink.get(f"rtu1.{point}")

    def good(self, *points: str) -> bool:
        return all((s := self.sample(p)) is not None and s.quality == Quality.GOOD for p in points)

    async def __aenter__(self) -> "Driving":
        await await_deferred(self.driver.start())
        await until(lambda: self.good(*self.waits_for), 10, "every point good")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await await_deferred(self.driver.stop())


@on_asyncio
async def test_untagged_in_the_gi_tagged_events_on_the_same_ioa_with_the_stations_time(rtu: ScriptedRtu) -> None:
    """GI answered M_ME_NC_1, then M_ME_TF_1 on the same IOA: both taken; the event's CP56Time2a,
    written as Shanghai wall time, is the same instant in a gateway running in New York."""
    async with Driving(rtu.port) as run:
        assert run.sample("p").value == pytest.approx(10.0) and run.sample("energy").value == 5000
        at = time.time() - 1.234
        await await_deferred(threads.deferToThread(rtu.spontaneous, POWER, "M_ME_TF_1", 12.5, time=at))
        await until(lambda: run.sample("p").value == pytest.approx(12.5), 5, "the event")
        assert run.sample("p").source_time == pytest.approx(at, abs=0.002)
        assert run.sample("p").quality == Quality.GOOD


@on_asyncio
async def test_interrogations_and_clock_sync_repeat_on_their_periods(process_zone: None) -> None:
    """A station on UTC: GI, counter interrogation and clock sync after STARTDT, then every second as
    configured; the clock sync carries the gateway's time."""
    station = ScriptedRtu(common_address=1, wire_zone="UTC").start()
    station.set_point(POWER, "M_ME_TF_1", 10.0)
    try:
        async with Driving(station.port, wire_time_zone="UTC", clock_sync="on_connect", gi_every_s=1.0,
                           counter_interrogation_every_s=1.0, clock_sync_every_s=1.0, waits_for=("p",)):
            def sent(type_id: int) -> int:  # the ASDU type is the 7th octet of an I-frame
                return sum(1 for apdu in station.received if len(apdu) > 6 and apdu[6] == type_id)
            await until(lambda: sent(100) >= 3 and sent(101) >= 3 and sent(103) >= 3, 6, "GI, CI and clock sync repeated")
            assert abs(station.clock_syncs[-1].posix("UTC") - time.time()) < 2
    finally:
        await await_deferred(threads.deferToThread(station.stop))


@on_asyncio
async def test_quality_bits_arrive_as_the_station_sent_them(rtu: ScriptedRtu) -> None:
    """NT and SB on a measurand, IV on a single point, CY on a counter (as OV): carried, values kept."""
    async with Driving(rtu.port) as run:
        await await_deferred(threads.deferToThread(rtu.spontaneous, POWER, "M_ME_TF_1", 11.0, {"NT", "SB"}))
        await await_deferred(threads.deferToThread(rtu.spontaneous, TRIP, "M_SP_TB_1", True, {"IV"}))
        await await_deferred(threads.deferToThread(rtu.spontaneous, ENERGY, "M_IT_TB_1", 5100, {"CY"}))
        await until(lambda: run.sample("p").quality == Quality.NT | Quality.SB and run.sample("trip").quality == Quality.IV
                    and run.sample("energy").quality == Quality.OV, 5, "the qualities")
        assert run.sample("p").value == pytest.approx(11.0) and run.sample("energy").value == 5100


@on_asyncio
async def test_a_breaker_command_goes_out_as_select_then_execute_and_is_confirmed(rtu: ScriptedRtu) -> None:
    """On the wire: C_DC_NA_1 select (S/E 1) then execute (S/E 0), both COT 6, state 1; the station's
    return information confirms it."""
    rtu.script_command(BREAKER_COMMAND, then=lambda command: rtu.spontaneous(BREAKER, "M_DP_TB_1", 1, cause=11))
    async with Driving(rtu.port) as run:
        result = await await_deferred(run.driver.execute(Command("rtu1", "cb", 1, time.time() + 5)))
        assert result.readback == 1 and run.sample("cb").value == 1
        sent = [(c.type_name, c.ioa, c.select, c.value, c.cot, c.negative) for c in rtu.commands]
        assert sent == [("C_DC_NA_1", BREAKER_COMMAND, True, 1, 6, False), ("C_DC_NA_1", BREAKER_COMMAND, False, 1, 6, False)]


@on_asyncio
async def test_a_time_tagged_setpoint_carries_the_gateways_time_in_the_wire_zone(rtu: ScriptedRtu) -> None:
    """C_SE_TC_1 direct: on the wire its value and a CP56Time2a that is now in Shanghai wall time
    (the gateway in New York); confirmed by the station's return information."""
    rtu.script_command(SETPOINT_COMMAND, then=lambda command: rtu.spontaneous(SETPOINT, "M_ME_NC_1", command.value,
                                                                            cause=11))
    async with Driving(rtu.port) as run:
        before = time.time()
        result = await await_deferred(run.driver.execute(Command("rtu1", "sp", -12.25, time.time() + 5)))
        assert result.readback == pytest.approx(-12.25)
        [command] = [c for c in rtu.commands if c.ioa == SETPOINT_COMMAND]
        assert (command.type_name, command.select, command.value) == ("C_SE_TC_1", False, pytest.approx(-12.25))
        assert before - 0.01 <= command.time.posix(WIRE_ZONE) <= time.time() + 0.01


@on_asyncio
async def test_a_refused_select_fails_the_command_unwritten_naming_it(rtu: ScriptedRtu) -> None:
    """A negative ACT_CON to the select: the command fails as refused, no execute sent."""
    rtu.script_command(BREAKER_COMMAND, confirm=False)
    async with Driving(rtu.port) as run:
        with pytest.raises(CommandFailed, match=r"refused it \(negative activation confirmation of the select\)") as failed:
            await await_deferred(run.driver.execute(Command("rtu1", "cb", 1, time.time() + 5)))
        assert failed.value.written is False and [c.select for c in rtu.commands] == [True]


@on_asyncio
async def test_an_execute_without_act_term_fails_as_written_outcome_unknown(rtu: ScriptedRtu) -> None:
    """Select and execute confirmed, no ACT_TERM: the command fails saying so, written."""
    rtu.script_command(BREAKER_COMMAND, terminate=False)
    async with Driving(rtu.port) as run:
        with pytest.raises(CommandFailed, match="execute confirmed, no activation termination") as failed:
            await await_deferred(run.driver.execute(Command("rtu1", "cb", 1, time.time() + 5)))
        assert failed.value.written is True


@on_asyncio
async def test_a_station_that_stops_answering_goes_nt_then_iv_and_recovers(rtu: ScriptedRtu) -> None:
    """The station stalls (TESTFR unanswered, TCP open): NT within t3 + t1, IV after offline_after_s;
    answering again: good after the new GI."""
    async with Driving(rtu.port) as run:
        rtu.stall()
        stalled = time.monotonic()
        await until(lambda: run.sample("p").quality & Quality.NT, 6, "NT")
        await until(lambda: run.sample("p").quality & Quality.IV, 8, "IV")
        assert time.monotonic() - stalled >= 3.0 and run.sample("_online").value is False
        rtu.resume()
        await until(lambda: run.good("cb", "p", "trip"), 15, "good again")


@on_asyncio
async def test_a_burst_of_10000_soe_arrives_complete_and_in_order(rtu: ScriptedRtu) -> None:
    """10,000 tagged events on one IOA as fast as the k window allows: every one published, in order,
    each with its own time tag."""
    async with Driving(rtu.port) as run:
        base = time.time() - 60
        events = [(POWER, "M_ME_TF_1", float(n), (), base + n * 0.001) for n in range(10_000)]
        await await_deferred(threads.deferToThread(rtu.burst, events))
        await until(lambda: run.sample("p").value == pytest.approx(9999.0), 30, "the last event")
        burst = [s for s in run.sink.samples_of("rtu1.p") if s.source_time < base + 11]
        assert [s.value for s in burst] == [float(n) for n in range(10_000)]
        assert all(abs(s.source_time - (base + n * 0.001)) < 0.0015 for n, s in enumerate(burst))
