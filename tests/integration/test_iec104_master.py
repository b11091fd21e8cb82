"""The IEC 104 master driver (c104's client) against the simulated station (c104's server, from
the same profile) on 127.0.0.1: values from the GI after STARTDT and spontaneous ones with the
station's time tags in its wire zone, a double point's intermediate state, link loss and
recovery, a station absent at start, and the simulator's faults: a stall, wrong types, a missing
ACT_TERM and a burst of 10,000 SOE."""

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from drivers.iec104.driver import Iec104Driver
from drivers.iec104.profile import Iec104Command, Iec104Connection, Iec104Point, Iec104Profile
from drivers.iec104.sim.server import Iec104Simulator
from gateway.aio import await_deferred
from gateway.config.loader import load_site
from gateway.config.profile import Limits, SimBehaviour
from gateway.errors import CommandFailed, CommandRejected
from gateway.iec104.timers import Timers
from gateway.metrics import Metrics
from gateway.model import Command, Device, Quality
from gateway.registry import load_plugins
from tests.aio import on_asyncio, until
from tests.ports import next_ports
from tests.sinks import RecordingSink

pytestmark = pytest.mark.integration

PROFILE = Iec104Profile(model="rtu-test", kind="rtu", protocol="iec104", points=[
    Iec104Point(id="cb_closed", ioa=1, type="M_SP_TB_1", sim=SimBehaviour(value=1)),
    Iec104Point(id="cb_state", ioa=2, type="M_DP_TB_1", sim=SimBehaviour(value=2), writable=Limits(min=1, max=2),
                command=Iec104Command(ioa=24577, type="C_DC_NA_1", mode="select_execute", qualifier="short")),
    Iec104Point(id="p_set", ioa=16390, type="M_ME_NC_1", sim=SimBehaviour(value=0.0),
                writable=Limits(min=-100, max=100, readback_tolerance=0.01),
                command=Iec104Command(ioa=25001, type="C_SE_NC_1")),
    Iec104Point(id="p_line", ioa=16385, type="M_ME_TF_1", unit="MW",
                sim=SimBehaviour(kind="ramp", value=10.0, step=1.0, min=0, max=1000)),
    Iec104Point(id="u_bus", ioa=16386, type="M_ME_NB_1", scale=0.1, unit="kV", sim=SimBehaviour(value=35.2)),
    Iec104Point(id="cos_phi", ioa=16387, type="M_ME_NA_1", sim=SimBehaviour(value=0.5)),
    Iec104Point(id="energy", ioa=25601, type="M_IT_NA_1", sim=SimBehaviour(value=123456)),
])
WIRE_ZONE = "Asia/Shanghai"  # unlike the test process's zone (UTC in CI)
# t1 short: a c104 server that has just started may drop the first STARTDT, and the client waits t1
# before it connects again (its link sits in OPEN_MUTED meanwhile); t3 short: a stalled station is
# noticed by the test frame the master sends after t3 of silence, unanswered for t1
FAST = Timers(t1=3.0, t2=1.0, t3=4.0)


def device(port: int, **connection: Any) -> Device:
    model = Iec104Connection(host="127.0.0.1", port=port, common_address=1, wire_time_zone=WIRE_ZONE, clock_sync="never",
                             offline_after_s=2.0, gi_every_s=None, counter_interrogation_every_s=None,
                             timers=FAST, command_timeout_s=2.0, **connection)
    return Device("rtu1", PROFILE, Path("rtu.yaml"), model, {})


class Watching:
    """A driver publishing into a recording table; stopped at the end."""

    def __init__(self, port: int) -> None:
        self.sink, self.metrics = RecordingSink(), Metrics()
        self.driver = Iec104Driver(device(port), self.sink, reactor, self.metrics)

    def sample(self, point: str) -> Any:
        return self.sink.get(f"rtu1.{point}")

    def quality(self, *points: str) -> set[Quality]:
        return {s.quality if (s := self.sample(p)) is not None else None for p in points}

    async def __aenter__(self) -> "Watching":
        await await_deferred(self.driver.start())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await await_deferred(self.driver.stop())


@pytest_twisted.async_yield_fixture
async def station() -> AsyncIterator[tuple[Iec104Simulator, int]]:
    [port] = next_ports(1)
    simulator = Iec104Simulator([device(port)], reactor, period_s=0.2)
    await simulator.start()
    try:
        yield simulator, port
    finally:
        await simulator.stop()


ALL = [p.id for p in PROFILE.points]


@on_asyncio
async def test_the_gi_after_startdt_brings_every_point_and_changes_arrive_with_the_stations_time(
        station: tuple[Iec104Simulator, int]) -> None:
    """Every point good after the GI with the station's value and scaling; a spontaneous tagged
    value carries the station's time (sent in the wire zone, read back as the same instant)."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "every point good")
        assert watch.sample("cb_closed").value is True and watch.sample("cb_state").value == 2
        assert watch.sample("u_bus").value == pytest.approx(35.2) and watch.sample("energy").value == 123456
        assert watch.sample("cos_phi").value == pytest.approx(0.5, abs=1e-4)
        assert watch.sample("_online").value is True
        for tagged in ("cb_closed", "cb_state"):  # in the GI answer with the time they were last set
            assert abs(watch.sample(tagged).source_time - time.time()) < 5, tagged
        before = watch.sample("p_line").value
        await until(lambda: watch.sample("p_line").value > before, 5, "the ramp moves spontaneously")
        sample = watch.sample("p_line")
        assert abs(sample.source_time - time.time()) < 1.0 and sample.source_time <= sample.gateway_time + 0.01
        assert sample.value == pytest.approx(simulator.value("rtu1", "p_line"), abs=1.0)


@on_asyncio
async def test_a_double_point_keeps_its_intermediate_state_and_is_counted(station: tuple[Iec104Simulator, int],
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A breaker between positions reports state 0: published as 0, logged once, counted."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality("cb_state") == {Quality.GOOD}, 10, "cb_state good")
        simulator.set_value("rtu1", "cb_state", 0)
        await until(lambda: watch.sample("cb_state").value == 0, 5, "intermediate state arrives")
        simulator.set_value("rtu1", "cb_state", 1)
        await until(lambda: watch.sample("cb_state").value == 1, 5, "off arrives")
        assert [r.getMessage() for r in caplog.records if "intermediate" in r.getMessage()] == \
            ["rtu1.cb_state: double point intermediate (state 0)"]
        assert watch.metrics.counter("gridgate_iec104_double_transit_total", "", device="rtu1").value == 1


@on_asyncio
async def test_link_loss_turns_points_nt_then_iv_and_a_new_gi_refreshes_them(
        station: tuple[Iec104Simulator, int]) -> None:
    """The station stopped: NT at once, IV and offline after offline_after_s; back: good after the GI."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "every point good")
        await await_deferred(simulator.stop())
        lost = time.monotonic()
        await until(lambda: watch.quality(*ALL) == {Quality.NT}, 3, "NT at once")
        await until(lambda: watch.quality(*ALL) == {Quality.NT | Quality.IV}, 5, "IV when offline")
        assert time.monotonic() - lost >= 2.0 and watch.sample("_online").value is False
        assert watch.sample("energy").value == 123456  # the last value kept
        await await_deferred(simulator.start())
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "good again after reconnect and GI")
        assert watch.sample("_online").value is True


@on_asyncio
async def test_a_breaker_command_is_selected_executed_and_confirmed_by_its_return_information(
        station: tuple[Iec104Simulator, int]) -> None:
    """C_DC select then execute: confirmed, the breaker position reads back open; a direct setpoint
    reads back too; a point without a command and an out-of-limit value are refused before sending."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "every point good")
        result = await await_deferred(watch.driver.execute(Command("rtu1", "cb_state", 1, time.time() + 5)))
        assert result.readback == 1 and simulator.value("rtu1", "cb_state") == 1
        result = await await_deferred(watch.driver.execute(Command("rtu1", "p_set", -42.5, time.time() + 5)))
        assert result.readback == pytest.approx(-42.5) and watch.sample("p_set").value == pytest.approx(-42.5)
        with pytest.raises(CommandRejected, match="not writable"):
            await await_deferred(watch.driver.execute(Command("rtu1", "u_bus", 1, time.time() + 5)))
        with pytest.raises(CommandRejected, match="outside"):
            await await_deferred(watch.driver.execute(Command("rtu1", "p_set", 500, time.time() + 5)))


@on_asyncio
async def test_a_negative_confirmation_is_a_refusal_naming_what_the_station_said(
        station: tuple[Iec104Simulator, int]) -> None:
    """The station refuses commands: the SBO's execute and a direct setpoint fail as refused, nothing
    written, the point unchanged; after ``healthy`` the same command goes through."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "every point good")
        await await_deferred(simulator.fault("rtu1", "negative"))
        with pytest.raises(CommandFailed, match=r"the station refused it \(negative activation confirmation "
                                                r"of the execute\)") as refused:
            await await_deferred(watch.driver.execute(Command("rtu1", "cb_state", 1, time.time() + 5)))
        assert refused.value.written is False and simulator.value("rtu1", "cb_state") == 2
        with pytest.raises(CommandFailed, match="negative activation confirmation"):
            await await_deferred(watch.driver.execute(Command("rtu1", "p_set", 5.0, time.time() + 5)))
        await await_deferred(simulator.fault("rtu1", "healthy"))
        result = await await_deferred(watch.driver.execute(Command("rtu1", "cb_state", 1, time.time() + 5)))
        assert result.readback == 1


@on_asyncio
async def test_a_dropped_link_is_reconnected_and_refreshed(station: tuple[Iec104Simulator, int]) -> None:
    """The station drops every connection for a second: NT, then good again after the new GI."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "every point good")
        dropped = simulator.fault("rtu1", "drop", down_s=1.0)
        await until(lambda: watch.quality(*ALL) == {Quality.NT}, 3, "NT at once")
        await await_deferred(dropped)
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "good again")


@on_asyncio
async def test_a_command_while_the_link_is_down_fails_unsent() -> None:
    """No station: the command fails at once, nothing written."""
    [port] = next_ports(1)
    async with Watching(port) as watch:
        with pytest.raises(CommandFailed, match="not open") as failed:
            await await_deferred(watch.driver.execute(Command("rtu1", "p_set", 1.0, time.time() + 5)))
        assert failed.value.written is False


@on_asyncio
async def test_a_station_absent_at_start_is_a_device_offline() -> None:
    """Nobody listens: NT, then IV and offline; the driver starts and stops cleanly."""
    [port] = next_ports(1)
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.NT | Quality.IV}, 6, "IV when offline")
        assert watch.sample("_online").value is False and watch.driver.stats()["connected"] is False


@on_asyncio
async def test_the_shipped_booster_rtu_is_served_and_read_whole(tmp_path: Path) -> None:
    """rtu/gridgate-booster-rtu through the site loader: the simulator serves it, the driver reads
    every point good, counters included (a counter interrogation follows STARTDT), and a feeder
    breaker opens by select-before-operate."""
    [port] = next_ports(1)
    (tmp_path / "site.yaml").write_text(yaml.safe_dump({"site": "booster", "devices": [
        {"name": "rtu1", "profile": "rtu/gridgate-booster-rtu",
         "connection": {"host": "127.0.0.1", "port": port, "common_address": 1, "wire_time_zone": WIRE_ZONE,
                        "clock_sync": "never",
                        "timers": {"t1": "3s", "t2": "1s"}, "command_timeout_s": "2s"}}]}))
    site = load_site(tmp_path / "site.yaml", load_plugins())
    [rtu] = site.devices
    simulator = Iec104Simulator([rtu], reactor, period_s=0.2)
    await await_deferred(simulator.start())
    sink = RecordingSink()
    driver = Iec104Driver(rtu, sink, reactor)
    await await_deferred(driver.start())
    try:
        points = [p.id for p in rtu.profile.points]
        await until(lambda: all((s := sink.get(f"rtu1.{p}")) is not None and s.quality == Quality.GOOD
                                for p in points), 10, "every point good")
        assert sink.get("rtu1.cb_main_pos").value == 2 and sink.get("rtu1.e_import").value == 35000
        assert sink.get("rtu1.u_bus35").value == pytest.approx(simulator.value("rtu1", "u_bus35"), abs=0.01)
        result = await await_deferred(driver.execute(Command("rtu1", "cb_f1_pos", 1, time.time() + 5)))
        assert result.readback == 1 and simulator.value("rtu1", "cb_f1_pos") == 1
    finally:
        await await_deferred(driver.stop())
        await await_deferred(simulator.stop())


@on_asyncio
async def test_a_stalled_station_is_dropped_at_t1_and_read_whole_after_it_recovers(
        station: tuple[Iec104Simulator, int]) -> None:
    """The station stops answering with TCP open (TESTFR neither): NT once the master's test frame
    (after t3 of silence) went unanswered for t1, IV after offline_after_s; answering again, every
    point good after the new GI."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "every point good")
        await await_deferred(simulator.fault("rtu1", "stall"))
        stalled = time.monotonic()
        await until(lambda: watch.quality(*ALL) == {Quality.NT}, FAST.t3 + FAST.t1 + 3, "NT once t3 + t1 ran out")
        assert time.monotonic() - stalled >= FAST.t1  # not at once: TCP stayed open
        await until(lambda: watch.quality(*ALL) == {Quality.NT | Quality.IV}, 5, "IV when offline")
        await await_deferred(simulator.fault("rtu1", "healthy"))
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 15, "good again")


@on_asyncio
async def test_a_value_of_the_wrong_type_makes_the_point_iv_with_its_last_value(
        station: tuple[Iec104Simulator, int], caplog: pytest.LogCaptureFixture) -> None:
    """The station sends its single point as a double point (same octets, other meaning): the point
    is IV with its last value, named once in the log and counted; the right type again: good."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "every point good")
        await await_deferred(simulator.fault("rtu1", "wrong_types"))
        simulator.set_value("rtu1", "cb_closed", False)
        await until(lambda: watch.quality("cb_closed") == {Quality.IV}, 5, "IV")
        assert watch.sample("cb_closed").value is True
        simulator.set_value("rtu1", "cb_closed", True)
        await until(lambda: watch.metrics.counter("gridgate_iec104_unexpected_total", "", device="rtu1").value >= 2,
                    5, "both counted")
        named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rtu1.cb_closed: IOA 1")]
        assert named == ["rtu1.cb_closed: IOA 1 sent as M_DP_TB_1, the profile says M_SP_TB_1; point IV, last value kept"]
        await await_deferred(simulator.fault("rtu1", "healthy"))
        simulator.set_value("rtu1", "cb_closed", False)
        await until(lambda: watch.quality("cb_closed") == {Quality.GOOD} and watch.sample("cb_closed").value is False,
                    5, "good again")


@on_asyncio
async def test_an_execute_without_act_term_fails_written_and_the_link_stays_up(
        station: tuple[Iec104Simulator, int]) -> None:
    """The station confirms the breaker command but leaves its ACT_TERM out: the command fails as
    written, outcome unknown; the link (renumbered around the missing frame) carries on."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "every point good")
        await await_deferred(simulator.fault("rtu1", "no_act_term"))
        since = len(watch.sink.history)
        with pytest.raises(CommandFailed, match="execute confirmed, no activation termination") as failed:
            await await_deferred(watch.driver.execute(Command("rtu1", "cb_state", 1, time.time() + 5)))
        assert failed.value.written is True and simulator.value("rtu1", "cb_state") == 1
        await asyncio.sleep(FAST.t1 + 1)  # the station's t1 (the same timers) for the frame left out: acknowledged
        await await_deferred(simulator.fault("rtu1", "healthy"))
        result = await await_deferred(watch.driver.execute(Command("rtu1", "cb_state", 2, time.time() + 5)))
        assert result.readback == 2
        before = watch.sample("p_line").value
        await until(lambda: watch.sample("p_line").value > before, 5, "spontaneous values still arrive")
        assert not [s for s in watch.sink.history[since:] if s.quality & Quality.NT], "the link broke"


@on_asyncio
async def test_a_burst_of_10000_soe_arrives_complete_in_order_with_its_time_tags(
        station: tuple[Iec104Simulator, int]) -> None:
    """10,000 SOE on the station's single point, 1 ms apart: every one reaches the driver, in order,
    each with its own time tag (c104's queue of 100 ASDUs would have overwritten most unpaced)."""
    simulator, port = station
    async with Watching(port) as watch:
        await until(lambda: watch.quality(*ALL) == {Quality.GOOD}, 10, "every point good")
        seen = len(watch.sink.samples_of("rtu1.cb_closed"))
        start = time.time()
        sent = await await_deferred(simulator.fault("rtu1", "burst", count=10_000, step_ms=1).addTimeout(60, reactor))
        assert sent == 10_000
        await until(lambda: len(watch.sink.samples_of("rtu1.cb_closed")) >= seen + 10_000, 30, "all 10,000")
        burst = watch.sink.samples_of("rtu1.cb_closed")[seen:seen + 10_000]
        assert [s.value for s in burst] == [n % 2 == 1 for n in range(10_000)]  # True toggled first
        assert all(abs(s.source_time - (start + n * 0.001)) < 0.05 for n, s in enumerate(burst))
        assert all(s.quality == Quality.GOOD for s in burst)
