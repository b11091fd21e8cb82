"""Command round trips of ``gridgate dispatch-test``: safe values, encoding, frame timelines, reports."""

import types
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hat.drivers.iec60870.encodings import iec104 as enc

from drivers.modbus.profile import ModbusPoint
from gateway.commands.policy import CommandPolicy
from gateway.commissioning.commandtrips import CommandTrips
from gateway.commissioning.dispatchcheck import Arrival, CommandTrip, DispatchResult, Verdict
from gateway.commissioning.report import html_page, junit_tree, summary_text
from gateway.commissioning.tripcheck import (CommandFrame, NoSafeValue, Timeline, command_latency_summary, decode,
                                             device_tolerance, encode, monitored_value, plan_command,
                                             termination_notes, timeline, trip_check, unchecked_trips)
from gateway.config.profile import Limits
from gateway.northbound.iec104.commandpoints import command_value
from gateway.northbound.iec104.section import CommandMap, MasterGroup, PointMap

SETPOINT = ModbusPoint(id="p_set", address=2001, type="int16", scale=0.1,
                       writable=Limits(min=-250, max=250, ramp_per_s=50, readback_tolerance=0.1))
RUN = ModbusPoint(id="run", address=2000, type="uint16", writable=Limits(min=0, max=1))


def command(type_name: str = "C_SE_NC_1", **extra: Any) -> CommandMap:
    return CommandMap(ioa=24833, type=type_name, point="pcs1.p_set", **extra)


# -- the safe value -----------------------------------------------------------------------------

def test_setpoint_moves_by_half_the_ramp_or_five_percent_of_the_range() -> None:
    """From 0 the step is min(ramp/2, 5 % of the range): +25 of [-250, 250] at 50/s; a slower ramp gives a smaller step."""
    plan = plan_command(command(), SETPOINT, 0.0)
    assert (plan.before, plan.value, plan.wire, plan.changes) == (0.0, 25.0, 25.0, True)
    slow = SETPOINT.model_copy(update={"writable": Limits(min=-250, max=250, ramp_per_s=4)})
    assert plan_command(command(), slow, 0.0).value == 2.0
    no_ramp = SETPOINT.model_copy(update={"writable": Limits(min=0, max=100)})
    assert plan_command(command(), no_ramp, 50.0).value == 45.0


def test_setpoint_steps_towards_zero_without_flipping_the_sign() -> None:
    """A discharging PCS is stepped down, a charging one up; a small value stops at 0 rather than change sign."""
    assert plan_command(command(), SETPOINT, 100.0).value == 75.0
    assert plan_command(command(), SETPOINT, -100.0).value == -75.0
    assert plan_command(command(), SETPOINT, 10.0).value == 0.0


def test_setpoint_stays_inside_the_limits() -> None:
    """At a limit the step goes the other way; a current value outside the limits has no safe value."""
    at_min = SETPOINT.model_copy(update={"writable": Limits(min=0, max=250, ramp_per_s=50)})
    assert plan_command(command(), at_min, 0.0).value == 12.5
    with pytest.raises(NoSafeValue, match="outside its limits"):
        plan_command(command(), SETPOINT, 300.0)


def test_setpoint_resends_the_current_value_when_no_step_fits() -> None:
    """A step below the register's resolution (or a ramp too slow for it) sends the current value unchanged, saying why."""
    plan = plan_command(command(), RUN.model_copy(update={"writable": Limits(min=0, max=1)}), 1.0)
    assert (plan.value, plan.changes) == (1.0, False)
    assert "no step fits" in plan.note
    crawling = RUN.model_copy(update={"writable": Limits(min=0, max=100, ramp_per_s=0.4)})
    assert plan_command(command(), crawling, 50.0).changes is False


def test_setpoint_snaps_to_the_register_and_the_wire() -> None:
    """The value sent is on the register's grid and what the command type carries exactly (scaled: int16)."""
    odd = SETPOINT.model_copy(update={"writable": Limits(min=-250, max=250, ramp_per_s=0.53)})
    assert plan_command(command(), odd, 0.0).value == pytest.approx(0.3)  # 0.265 snapped to 0.1 kW counts
    scaled = plan_command(command("C_SE_NB_1", multiplier=10), SETPOINT, 0.0)
    assert (scaled.wire, scaled.value) == (250, 25.0)
    coarse = plan_command(command("C_SE_NB_1", multiplier=0.1), SETPOINT, 0.0)
    assert (coarse.wire, coarse.value) == (2, 20.0)  # 25 is not on the wire's 10 kW grid


def test_interlocked_direction_is_avoided() -> None:
    """An interlock refusing positive values now (per the simulator) makes the step go negative; both refused: unchanged."""
    policy = CommandPolicy(point="pcs1.p_set", groups=["g"], interlocks=[
        {"point": "bms1.soc", "op": "<=", "value": 5, "when_command": "positive", "reason": "SoC <= 5 %: no discharge"}])
    assert plan_command(command(), SETPOINT, 0.0, policy, {"bms1.soc": 3}).value == -25.0
    assert plan_command(command(), SETPOINT, 0.0, policy, {"bms1.soc": 50}).value == 25.0
    both = policy.model_copy(update={"interlocks": [*policy.interlocks, *CommandPolicy(
        point="pcs1.p_set", groups=["g"], interlocks=[{"point": "bms1.soc", "op": "<=", "value": 5,
                                                     "when_command": "negative", "reason": "no charge"}]).interlocks]})
    plan = plan_command(command(), SETPOINT, 0.0, both, {"bms1.soc": 3})
    assert plan.changes is False and "SoC <= 5 %" in plan.note


def test_point_without_limits_gets_its_current_value() -> None:
    """Without writable limits nothing is known to be safe: the current value goes out unchanged."""
    plan = plan_command(command(), ModbusPoint(id="p_set", address=0, type="int16"), 7.0)
    assert (plan.value, plan.changes) == (7.0, False) and "no writable limits" in plan.note


def test_switching_commands_reassert_the_current_state() -> None:
    """C_SC/C_DC send the state the point is in (ON at on_value, OFF at off_value); anything else is not sent."""
    on = plan_command(command("C_SC_NA_1"), RUN, 1.0)
    assert (on.wire, on.value, on.changes) == (True, 1.0, False)
    assert plan_command(command("C_SC_TA_1"), RUN, 0.0).wire is False
    assert plan_command(command("C_DC_NA_1", on_value=5, off_value=0), None, 5.0).wire == 2
    assert plan_command(command("C_DC_NA_1"), RUN, 0.0).wire == 1
    with pytest.raises(NoSafeValue, match="neither on_value"):
        plan_command(command("C_SC_NA_1", on_value=2, off_value=0), None, 1.0)


# -- encoding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("type_name, extra, value, wire", [
    ("C_SE_NC_1", {}, 12.3, pytest.approx(12.3, abs=1e-6)),
    ("C_SE_TC_1", {}, -40.0, -40.0),
    ("C_SE_NA_1", {"full_scale": 250}, 25.0, 3277 / 32768),
    ("C_SE_TA_1", {"full_scale": 100}, 100.0, 32767 / 32768),  # clamped to the largest normalized value
    ("C_SE_NB_1", {"multiplier": 10}, 25.04, 250),
    ("C_SE_TB_1", {"multiplier": 1000}, 40.0, 32767),  # clamped to int16
    ("C_SC_NA_1", {"on_value": 1, "off_value": 0}, 1.0, True),
    ("C_DC_TA_1", {"on_value": 1, "off_value": 0}, 0.0, 1),
])
def test_encoding_per_command_type(type_name: str, extra: dict, value: float, wire: Any) -> None:
    """Each command type carries the value its way; the gateway's decoder reads back what decode() says."""
    mapping = command(type_name, **extra)
    encoded = encode(mapping, value)
    assert encoded == wire
    assert decode(mapping, encoded) == pytest.approx(command_value(mapping, _element(type_name, encoded)))


def _element(type_name: str, wire: Any) -> Any:
    """The information element the outstation decodes for ``wire`` (hat-drivers' types, as ``commandpoints`` reads them)."""
    if type_name.startswith("C_SC"):
        return enc.IoElement_C_SC_NA(enc.SingleValue.ON if wire else enc.SingleValue.OFF, False, 0)
    if type_name.startswith("C_DC"):
        return enc.IoElement_C_DC_NA(enc.DoubleValue.ON if wire == 2 else enc.DoubleValue.OFF, False, 0)
    value = {"C_SE_NA": enc.NormalizedValue, "C_SE_TA": enc.NormalizedValue, "C_SE_NB": enc.ScaledValue,
             "C_SE_TB": enc.ScaledValue}.get(type_name[:7], enc.FloatingValue)(wire)
    return enc.IoElement_C_SE_NC(value, False)


def test_device_tolerance_is_the_readback_the_register_or_the_wire() -> None:
    """The device may differ by the read-back tolerance, half a register count, or a normalized step."""
    assert device_tolerance(command(), SETPOINT) == 0.1
    assert device_tolerance(command(), RUN) == 0.5
    assert device_tolerance(command("C_SE_NA_1", full_scale=32768), None) == 1.0


def test_monitored_value_reverses_the_table_encoding() -> None:
    """A received object's engineering value: normalized x full_scale, scaled and counters / multiplier, states as 1/0."""
    normalized = PointMap(point="pcs1.p_set", ioa=1, type="M_ME_NA_1", full_scale=250)
    assert monitored_value(normalized, 0.1) == pytest.approx(25.0)
    assert monitored_value(PointMap(point="pcs1.p_set", ioa=1, type="M_ME_NB_1", multiplier=10), 250) == 25.0
    assert monitored_value(PointMap(point="pcs1.run", ioa=1, type="M_DP_NA_1"), 2) == 1.0
    assert monitored_value(PointMap(point="pcs1.run", ioa=1, type="M_SP_NA_1"), False) == 0.0
    assert monitored_value(PointMap(point="m.e", ioa=1, type="M_IT_NA_1", multiplier=100), 500060) == 5000.6


# -- timelines from raw frames ------------------------------------------------------------------

def frame(direction: str, cot: str, at: float, select: bool = False, negative: bool = False,
          ioa: int = 24833) -> CommandFrame:
    return CommandFrame(direction, "C_SE_NC_1", cot, negative, select, ioa, at)


def test_timeline_of_a_direct_command() -> None:
    """ACT -> ACT_CON -> ACT_TERM, timed from the activation sent."""
    line = timeline([frame("out", "ACTIVATION", 10.0), frame("in", "ACTIVATION_CON", 10.006),
                     frame("in", "ACTIVATION_TERMINATION", 10.1)], 24833, 9.9)
    assert line.sent and line.confirmed and line.negative is None and line.settled
    assert line.act_con_s == pytest.approx(0.006) and line.act_term_s == pytest.approx(0.1)


def test_timeline_of_select_before_operate_ignores_a_late_termination() -> None:
    """SBO: latencies from the execute; the select's own confirmation is timed apart; an ACT_TERM before the ACT_CON is not this command's."""
    line = timeline([frame("out", "ACTIVATION", 10.0, select=True), frame("in", "ACTIVATION_CON", 10.001, select=True),
                     frame("in", "ACTIVATION_TERMINATION", 10.0015),  # the previous command's, late
                     frame("out", "ACTIVATION", 10.002), frame("in", "ACTIVATION_CON", 10.010),
                     frame("in", "ACTIVATION_TERMINATION", 10.012, select=True)], 24833, 9.9)
    assert line.confirmed and line.select_con_s == pytest.approx(0.001)
    assert line.act_con_s == pytest.approx(0.008) and line.act_term_s == pytest.approx(0.010)
    assert not timeline([frame("out", "ACTIVATION", 10.0), frame("in", "ACTIVATION_TERMINATION", 10.001)],
                        24833, 9.9).settled


def test_timeline_of_refusals() -> None:
    """A negative ACT_CON, to the select or the execute, or an unknown-IOA answer, is a refusal."""
    refused = timeline([frame("out", "ACTIVATION", 1.0), frame("in", "ACTIVATION_CON", 1.01, negative=True)], 24833, 0)
    assert (refused.confirmed, refused.negative, refused.settled) == (False, "the command", True)
    select = timeline([frame("out", "ACTIVATION", 1.0, select=True),
                       frame("in", "ACTIVATION_CON", 1.01, select=True, negative=True)], 24833, 0)
    assert select.negative == "the select" and not select.sent
    unknown = timeline([frame("out", "ACTIVATION", 1.0), frame("in", "UNKNOWN_IOA", 1.01, negative=True)], 24833, 0)
    assert unknown.negative == "UNKNOWN_IOA"
    assert timeline([frame("out", "ACTIVATION", 1.0, ioa=5)], 24833, 0).sent is False  # another IOA


def test_termination_notes_name_duplicate_act_terms() -> None:
    """More ACT_TERMs than confirmed commands at an IOA is noted with the point; one each is not."""
    frames = [frame("in", "ACTIVATION_CON", 1.0), frame("in", "ACTIVATION_TERMINATION", 1.01, select=True),
              frame("in", "ACTIVATION_TERMINATION", 1.05)]
    notes = termination_notes(frames, [command(mode="select_execute")])
    assert notes == ["pcs1.p_set at IOA 24833 (select_execute): 2 ACT_TERM for 1 confirmed command(s), 1 of them with "
                     "the select qualifier (S/E = 1): a strict master may take a late one for the termination of its "
                     "next command"]
    assert termination_notes(frames[:2], [command()]) == []


# -- the round trip, with a scripted master -------------------------------------------------------

class ScriptedMaster:
    """Answers every command with a prepared timeline; the values the "device" serves follow accepted commands."""

    def __init__(self, served: dict[str, Any], refuse: bool = False) -> None:
        self.served, self.refuse, self.sent = served, refuse, []

    def send_command(self, ioa: int, type_name: str, wire: Any, select: bool, recorded_at: Any = None) -> Timeline:
        self.sent.append((ioa, wire, select, recorded_at is not None))
        if self.refuse:
            return Timeline(True, False, "the command", None, None)
        self.served["pcs1.p_set"] = float(wire)
        return Timeline(True, True, None, 0.005, 0.1)

    def command_frames(self) -> list:
        return []

    def arrivals(self) -> list:
        return []


class FakeClock:
    def __init__(self) -> None:
        self.now, self.slept = 1_800_000_000.0, []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def site(min_interval_s: float = 0.0) -> Any:
    device = types.SimpleNamespace(name="pcs1", profile=types.SimpleNamespace(points=[SETPOINT]))
    policy = CommandPolicy(point="pcs1.p_set", groups=["g"], min_interval_s=min_interval_s)
    return types.SimpleNamespace(devices=[device], spec=types.SimpleNamespace(
        command_policy=[policy], audit=types.SimpleNamespace(path="/var/log/gridgate-audit.jsonl")))


def group(*commands: CommandMap, points: list[dict] | None = None) -> MasterGroup:
    return MasterGroup(name="g", bind="127.0.0.1", allowed_masters=["127.0.0.1"], common_address=1,
                       commands=list(commands), points=points or [])


def test_round_trip_sends_the_safe_value_then_the_old_one_pacing_the_policy() -> None:
    """Safe value, device checked, old value back the same way (SBO, tagged), min_interval_s kept between them."""
    served, clock = {"pcs1.p_set": 0.0}, FakeClock()
    master = ScriptedMaster(served)
    runner = CommandTrips(site(min_interval_s=2.0), group(command("C_SE_TC_1", mode="select_execute")),
                          lambda: dict(served), 5.0, clock.time, clock.sleep)
    [trip] = runner.run(master)
    assert trip.verdict is Verdict.PASS, trip.message
    assert master.sent == [(24833, 25.0, True, True), (24833, 0.0, True, True)]
    assert served["pcs1.p_set"] == 0.0 and trip.device == "25" and trip.restored.startswith("restored 0")
    assert any(s >= 2.0 for s in clock.slept)  # the policy's min_interval_s before the restore


def test_refused_command_fails_naming_the_point_and_is_not_restored() -> None:
    """A negative ACT_CON fails the IOA, names point and IOA, points to the audit log; no second command is sent."""
    served = {"pcs1.p_set": 0.0}
    master = ScriptedMaster(served, refuse=True)
    clock = FakeClock()
    [trip] = CommandTrips(site(), group(command(mode="direct")), lambda: dict(served), 5.0, clock.time,
                          clock.sleep).run(master)
    assert trip.verdict is Verdict.FAIL and len(master.sent) == 1
    assert trip.message.startswith("pcs1.p_set at IOA 24833 (C_SE_NC_1, direct): negative ACT_CON (the command)")
    assert "audit log (/var/log/gridgate-audit.jsonl)" in trip.message


def test_unknown_current_value_sends_nothing() -> None:
    """No simulator and no monitored value of the point: "not checked", nothing sent."""
    master, clock = ScriptedMaster({}), FakeClock()
    [trip] = CommandTrips(site(), group(command()), lambda: None, 5.0, clock.time, clock.sleep).run(master)
    assert trip.verdict is Verdict.UNCHECKED and not master.sent
    assert "current value of pcs1.p_set is not known" in trip.message


def test_without_simulator_the_last_monitored_value_is_the_start() -> None:
    """No simulator: the point's last monitored value (scaled back) is where the step starts; the device is not checked."""
    master, clock = ScriptedMaster({}), FakeClock()
    master.arrivals = lambda: [Arrival(16390, "M_ME_NB_1", "INTERROGATED_BY_STATION", 1000, frozenset(), None, 1.0)]
    table = group(command(mode="direct"), points=[{"point": "pcs1.p_set", "ioa": 16390, "type": "M_ME_NB_1",
                                                   "multiplier": 10}])
    [trip] = CommandTrips(site(), table, lambda: None, 5.0, clock.time, clock.sleep).run(master)
    assert trip.verdict is Verdict.PASS and [wire for _, wire, _, _ in master.sent] == [75.0, 100.0]
    assert "device value not checked (no --simulator)" in trip.message


# -- reports ------------------------------------------------------------------------------------

def command_result() -> DispatchResult:
    run = DispatchResult("dispatch", "127.0.0.1:2404", 7, 1_800_000_000.0)
    run.commands = [
        CommandTrip("pcs1.p_set", 24833, "C_SE_NC_1", "direct", Verdict.PASS, "pcs1.p_set at IOA 24833: sent 25",
                    "0", "25 (wire 25)", 0.006, 0.105, "25", "restored 0"),
        CommandTrip("pcs1.p_set", 24834, "C_SE_NC_1", "select_execute", Verdict.FAIL,
                    "pcs1.p_set at IOA 24834 (C_SE_NC_1, select_execute): negative ACT_CON (the command)",
                    "0", "25 (wire 25)", 0.004, None),
        *unchecked_trips([command("C_SC_NA_1").model_copy(update={"ioa": 24835})], "not checked (--no-commands)"),
    ]
    run.checks = [trip_check(t) for t in run.commands]
    return run


def test_reports_carry_the_commands() -> None:
    """JUnit: a "commands" suite, a testcase per IOA with value and latencies; HTML: the table; summary: p50/max."""
    root = junit_tree(command_result()).getroot()
    [suite] = [s for s in root.iter("testsuite") if s.get("name") == "commands"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    passed = cases["pcs1.p_set (IOA 24833)"].find("system-out").text
    assert "value sent: 25 (wire 25)" in passed and "ACT_CON: 6 ms" in passed and "ACT_TERM: 105 ms" in passed
    assert "device value: 25" in passed
    assert "negative ACT_CON" in cases["pcs1.p_set (IOA 24834)"].find("failure").get("message")
    assert cases["pcs1.p_set (IOA 24835)"].find("skipped") is not None
    page = html_page(command_result())
    assert "<h2>Commands</h2>" in page and page.count("<h2>commands</h2>") == 0
    assert '<td class="num">24833</td><td>C_SE_NC_1</td><td>direct</td><td>pcs1.p_set</td><td>25 (wire 25)</td>' \
           '<td class="num">6</td><td class="num">105</td><td>25</td><td>pass</td>' in page
    assert "commands: ACT_CON p50 4 ms, max 6 ms; ACT_TERM p50 105 ms, max 105 ms" in page
    assert "commands (3 IOAs): ACT_CON p50 4 ms, max 6 ms" in summary_text(command_result())
    assert command_latency_summary(unchecked_trips([command()], "x")) is None
    ET.fromstring(ET.tostring(root))  # well-formed
