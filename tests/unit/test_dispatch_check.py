"""The verdicts of ``gridgate dispatch-test`` from hand-made observations (no sockets, no c104 peer)."""

import datetime
import time

import pytest

from drivers.modbus.profile import ModbusPoint
from gateway.commissioning.dispatchcheck import (Arrival, Expectation, Probe, TagCheck, ValueHistory, Verdict,
                                                 check_row, expectations, unexpected_ioas)
from gateway.commissioning.dispatchprobe import ProbePlan, answer_to, histogram, latency_summary, nudge, plan_probes
from gateway.commissioning.wirevalues import wire_value
from gateway.config.profile import Limits, SimBehaviour
from gateway.metrics import percentile
from gateway.northbound.iec104.section import MasterGroup, PointMap
from gateway.northbound.iec104.wiretable import wire_rows

NOW = 1_800_000_000.0


def row(point: str = "pcs1.p", ioa: int = 16385, type_: str = "M_ME_NC_1", **mapping: object) -> Expectation:
    """The expectation of one mapped point, built from the group's wire table."""
    [exp] = expectations(wire_rows(group(points=[{"point": point, "ioa": ioa, "type": type_, **mapping}])))
    return exp


def got(value: object, type_: str = "M_ME_NC_1", cot: str = "INTERROGATED_BY_STATION", ioa: int = 16385,
        quality: frozenset[str] = frozenset(), at: float = NOW,
        recorded_at: datetime.datetime | None = None) -> Arrival:
    """One received object."""
    return Arrival(ioa, type_, cot, value, quality, recorded_at, at)


def group(**extra: object) -> MasterGroup:
    """A master group with a small table."""
    spec = {"name": "dispatch", "bind": "127.0.0.1", "allowed_masters": ["127.0.0.1"], "common_address": 1,
            "points": [{"point": "pcs1.p", "ioa": 16385, "type": "M_ME_NC_1", "deadband": 5},
                       {"point": "pcs1.run", "ioa": 1, "type": "M_SP_NA_1"}]}
    return MasterGroup.model_validate({**spec, **extra})


def test_value_within_tolerance_passes() -> None:
    """A float within max(deadband, 0.5 %, 1e-3) of the served value passes and shows both."""
    check = check_row(row(deadband=2), [got(101.5)], [100.0])
    assert check.verdict is Verdict.PASS, check.message
    assert check.expected == "100 ±2" and check.received == "101.5" and check.quality == "good"


def test_value_outside_tolerance_fails_naming_point_ioa_and_both_values() -> None:
    """A value beyond the tolerance fails; the message names point, IOA, received and served."""
    check = check_row(row(deadband=2), [got(103.0)], [100.0])
    assert check.verdict is Verdict.FAIL
    assert check.message == "pcs1.p at IOA 16385 (M_ME_NC_1): value 103, simulator served 100 ±2"


def test_moving_value_is_judged_against_the_range_served_during_the_interrogation() -> None:
    """A simulated value that moved is accepted anywhere between the lowest and highest served, plus tolerance."""
    assert check_row(row(), [got(230.9)], [229.0, 231.0]).verdict is Verdict.PASS
    assert check_row(row(), [got(233.0)], [229.0, 231.0]).verdict is Verdict.FAIL


def test_wrong_type_fails_and_shows_what_came() -> None:
    """An IOA arriving with another type fails, naming both types, and the received value is still shown."""
    check = check_row(row(), [got(1000, type_="M_ME_NB_1")], [1000.0])
    assert check.verdict is Verdict.FAIL
    assert "received type M_ME_NB_1, table says M_ME_NC_1 with cause INTERROGATED_BY_STATION" in check.message
    assert check.received == "1000" and check.received_type == "M_ME_NB_1" and check.expected == "1000 ±5"


def test_a_later_object_of_another_type_still_fails() -> None:
    """A spontaneous object with a type the table does not give fails the row, after a right GI answer."""
    check = check_row(row(), [got(10.0), got(10.0, type_="M_ME_TF_1", cot="SPONTANEOUS")], [10.0])
    assert check.verdict is Verdict.FAIL and "received type M_ME_TF_1, table says M_ME_NC_1" in check.message


def test_tagged_row_is_untagged_in_gi_and_tagged_spontaneously() -> None:
    """M_ME_TF_1: M_ME_NC_1 at COT 20 and M_ME_TF_1 at COT 3 pass; the tagged type in the GI fails."""
    tagged = row(type_="M_ME_TF_1")
    assert (tagged.gi_type, tagged.event_type, tagged.types) == ("M_ME_NC_1", "M_ME_TF_1", "M_ME_NC_1, M_ME_TF_1")
    fine = check_row(tagged, [got(10.0), got(11.0, type_="M_ME_TF_1", cot="SPONTANEOUS")], [10.0])
    assert fine.verdict is Verdict.PASS and fine.received == "10", fine.message
    check = check_row(tagged, [got(10.0, type_="M_ME_TF_1")], [10.0])
    assert check.verdict is Verdict.FAIL
    assert check.message == ("pcs1.p at IOA 16385 (M_ME_NC_1, M_ME_TF_1): received type M_ME_TF_1, table says "
                             "M_ME_NC_1 with cause INTERROGATED_BY_STATION")


def test_gi_false_row_must_not_answer_the_gi() -> None:
    """gi: false: spontaneous only passes, an answer in the GI fails, nothing at all is "not checked"."""
    quiet = row(gi=False)
    assert check_row(quiet, [got(10.0, cot="SPONTANEOUS")], [10.0]).verdict is Verdict.PASS
    check = check_row(quiet, [got(10.0)], [10.0])
    assert check.verdict is Verdict.FAIL
    assert "sent with cause INTERROGATED_BY_STATION (M_ME_NC_1); the table sends it only spontaneously" in check.message
    assert check_row(quiet, [], [10.0]).verdict is Verdict.UNCHECKED


def test_point_missing_from_gi_fails() -> None:
    """A gi point that only arrived spontaneously is reported as missing from the general interrogation."""
    check = check_row(row(), [got(10.0, cot="SPONTANEOUS")], [10.0])
    assert check.verdict is Verdict.FAIL and "not sent in the general interrogation" in check.message
    assert "not sent in the general interrogation" in check_row(row(), [], [10.0]).message


def test_invalid_or_not_topical_quality_fails() -> None:
    """IV or NT on the interrogation answer fails the row even when the value matches."""
    check = check_row(row(), [got(10.0, quality=frozenset({"NT", "IV"}))], [10.0])
    assert check.verdict is Verdict.FAIL and "quality IV NT" in check.message
    assert check_row(row(), [got(10.0, quality=frozenset({"SB"}))], [10.0]).verdict is Verdict.PASS


def test_without_simulator_the_value_is_not_checked() -> None:
    """No --simulator: the row is "not checked", never "passed", and says why."""
    check = check_row(row(), [got(10.0)], None)
    assert check.verdict is Verdict.UNCHECKED
    assert "value not checked (no --simulator)" in check.message


def test_comm_status_must_be_true() -> None:
    """A comm-status point (M_SP_NA_1 in GI, M_SP_TB_1 spontaneously) reporting False fails without any simulator."""
    status = next(r for r in expectations(wire_rows(group(comm_status={"pcs1": 100}))) if r.ioa == 100)
    assert (status.point, status.type, status.gi_type, status.event_type) == (
        "pcs1 communication status", "M_SP_TB_1", "M_SP_NA_1", "M_SP_TB_1")
    arrivals = [got(True, type_="M_SP_NA_1", ioa=100), got(True, "M_SP_TB_1", "SPONTANEOUS", 100)]
    assert check_row(status, arrivals, None).verdict is Verdict.PASS
    check = check_row(status, [got(False, type_="M_SP_NA_1", ioa=100)], None)
    assert check.verdict is Verdict.FAIL and "value OFF (0), expected ON (1)" in check.message


def test_alarm_points_must_be_in_the_gi_and_off() -> None:
    """Group alarms are link rows: missing from the GI fails, on fails, off passes."""
    alarm = next(r for r in expectations(wire_rows(group(clock_alarm_ioa=900))) if r.ioa == 900)
    assert (alarm.suite, alarm.point) == ("link", "clock alarm")
    assert "not sent in the general interrogation" in check_row(alarm, [], None).message
    assert check_row(alarm, [got(False, type_="M_SP_NA_1", ioa=900)], None).verdict is Verdict.PASS
    assert check_row(alarm, [got(True, type_="M_SP_NA_1", ioa=900)], None).verdict is Verdict.FAIL


def test_counters_are_expected_in_the_counter_interrogation_only() -> None:
    """M_IT rows pass when answered at REQUESTED_BY_GENERAL_COUNTER (value x multiplier, rounded); spontaneous fails."""
    counter = row("meter1.e", 25601, "M_IT_TB_1", multiplier=100)
    assert (counter.gi_type, counter.ci_type, counter.event_type) == (None, "M_IT_NA_1", None)
    ok = check_row(counter, [got(500060, "M_IT_NA_1", "REQUESTED_BY_GENERAL_COUNTER", 25601)], [5000.6])
    assert ok.verdict is Verdict.PASS, ok.message
    missing = check_row(counter, [got(500060, "M_IT_TB_1", "SPONTANEOUS", 25601)], [5000.6])
    assert "not sent in the counter interrogation" in missing.message
    assert "sent with cause SPONTANEOUS (M_IT_TB_1); the table sends it only in the counter interrogation" in (
        missing.message)


@pytest.mark.parametrize("type_, mapping, value, wire", [
    ("M_ME_NA_1", {"full_scale": 250}, 62.5, 0.25),
    ("M_ME_TD_1", {"full_scale": 100}, 150.0, 32767 / 32768),
    ("M_ME_NB_1", {"multiplier": 10}, 23.04, 230),
    ("M_ME_NB_1", {"multiplier": 1000}, 50.0, 32767),
    ("M_SP_NA_1", {}, 1, True),
    ("M_DP_NA_1", {}, True, 2),
    ("M_IT_NA_1", {}, 12.6, 13),
    ("M_IT_NA_1", {"multiplier": 100}, 12.3456, 1235),
])
def test_wire_value_follows_the_outstation_encoding(type_: str, mapping: dict, value: float, wire: object) -> None:
    """Normalized = value / full_scale (clipped), scaled = round(value x multiplier) (clipped), counters likewise unclipped."""
    pm = PointMap(point="d.p", ioa=1, type=type_, **mapping)
    assert wire_value(type_, pm, value) == pytest.approx(wire)


def test_scaled_tolerance_is_the_deadband_in_wire_units() -> None:
    """On a scaled type the deadband counts multiplied: deadband 0.5 x 10 tolerates 5 counts."""
    scaled = row(type_="M_ME_NB_1", multiplier=10, deadband=0.5)
    assert check_row(scaled, [got(235, "M_ME_NB_1")], [23.0]).verdict is Verdict.PASS
    assert check_row(scaled, [got(236, "M_ME_NB_1")], [23.0]).verdict is Verdict.FAIL


def test_ioas_outside_the_table_fail_the_link() -> None:
    """Objects at IOAs the table does not have are listed in a failing link check."""
    rows = expectations(wire_rows(group()))
    assert unexpected_ioas(rows, [got(1.0)]).verdict is Verdict.PASS
    check = unexpected_ioas(rows, [got(1.0), got(2.0, ioa=4242)])
    assert check.verdict is Verdict.FAIL and "4242 (M_ME_NC_1)" in check.message


def test_value_history_includes_the_value_in_force_at_the_start() -> None:
    """The window's values are the last read before it plus every read inside it."""
    history = ValueHistory()
    for at, value in ((1.0, 10), (2.0, 11), (3.0, 12), (4.0, 13)):
        history.add(at, {"d.p": value})
    assert history.during("d.p", 2.5, 3.5) == [11, 12]
    assert history.during("d.x", 0.0, 9.0) == []


def test_time_tag_ahead_of_reception_fails() -> None:
    """A spontaneous time tag hours after its own reception (wrong wire zone) fails the row; one just before passes."""
    tags = TagCheck(lambda tag: tag.replace(tzinfo=datetime.timezone.utc).timestamp(), 2.0)
    at = time.time()
    stamp = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).replace(tzinfo=None)
    status = next(r for r in expectations(wire_rows(group(comm_status={"pcs1": 100}))) if r.ioa == 100)
    answer = got(True, "M_SP_NA_1", ioa=100, at=at)
    fine = got(True, "M_SP_TB_1", "SPONTANEOUS", 100, at=at, recorded_at=stamp - datetime.timedelta(seconds=1))
    ahead = got(True, "M_SP_TB_1", "SPONTANEOUS", 100, at=at, recorded_at=stamp + datetime.timedelta(hours=8))
    assert check_row(status, [answer, fine], None, tags).verdict is Verdict.PASS
    check = check_row(status, [answer, ahead], None, tags)
    assert check.verdict is Verdict.FAIL and "after its reception (wrong wire time zone?)" in check.message


# -- latency probes ---------------------------------------------------------------------------

SOC = ModbusPoint(id="soc", address=0, type="uint16", scale=0.1, sim=SimBehaviour(kind="constant", value=55))


def test_nudge_goes_beyond_ten_deadbands_inside_the_register() -> None:
    """The set value is 10 x deadband + margin away, and turns downwards when the register's top is near."""
    mapping = PointMap(point="bms1.soc", ioa=2, type="M_ME_NC_1", deadband=0.5)
    assert nudge(mapping, SOC, 55.0, 1.0) == pytest.approx(61.0)
    assert nudge(mapping, SOC, 55.0, 1.0, device_deadband=2.0) == pytest.approx(76.0)  # 10 x the device's 2.0 + 1
    assert nudge(mapping, SOC, 6550.0, 1.0) == pytest.approx(6544.0)
    tight = ModbusPoint(id="soc", address=0, type="uint16", scale=0.1,
                        sim=SimBehaviour(kind="constant", value=1, min=0, max=2))
    assert nudge(mapping, tight, 1.0, 1.0) is None


def test_plan_prefers_constant_points_and_skips_followers_and_non_measurands() -> None:
    """Constant points are probed first; follow points and single points are never moved."""
    specs = {"pcs1.p": ModbusPoint(id="p", address=0, type="int32", sim=SimBehaviour(kind="sine", value=10, amplitude=1)),
             "pcs1.q": ModbusPoint(id="q", address=2, type="int32", sim=SimBehaviour(kind="follow", source="p")),
             "pcs1.s": ModbusPoint(id="s", address=4, type="int32"),
             "pcs1.run": ModbusPoint(id="run", table="coil", address=0, type="bool")}
    table = group(points=[{"point": "pcs1.p", "ioa": 10, "type": "M_ME_NC_1"},
                          {"point": "pcs1.q", "ioa": 11, "type": "M_ME_NC_1"},
                          {"point": "pcs1.s", "ioa": 12, "type": "M_ME_NC_1"},
                          {"point": "pcs1.run", "ioa": 1, "type": "M_SP_NA_1"}])
    values = {"pcs1.p": 10, "pcs1.q": 10, "pcs1.s": 0, "pcs1.run": True}
    plans, _ = plan_probes(table, specs, {"pcs1": 1.0}, values, limit=20)
    assert [(p.mapping.point, p.sim) for p in plans] == [("pcs1.s", "none"), ("pcs1.p", "sine")]
    assert len(plan_probes(table, specs, {"pcs1": 1.0}, values, limit=1)[0]) == 1


def test_answer_is_the_first_spontaneous_object_carrying_the_new_value() -> None:
    """Older objects, objects with the old value, GI answers and other types are not the answer."""
    plan = ProbePlan(PointMap(point="pcs1.p", ioa=10, type="M_ME_NC_1", deadband=1), "none", 100.0, 111.0)
    arrivals = [got(111.0, cot="SPONTANEOUS", ioa=10, at=NOW - 1),
                got(100.5, cot="SPONTANEOUS", ioa=10, at=NOW + 0.1),
                got(111.0, cot="INTERROGATED_BY_STATION", ioa=10, at=NOW + 0.2),
                got(111.0, type_="M_ME_TF_1", cot="SPONTANEOUS", ioa=10, at=NOW + 0.25),
                got(110.9, cot="SPONTANEOUS", ioa=10, at=NOW + 0.3)]
    answer = answer_to(plan, 111.0, NOW, arrivals)
    assert answer is not None and answer.at == NOW + 0.3
    assert answer_to(plan, 111.0, NOW + 1, arrivals) is None


def test_latency_statistics_and_histogram() -> None:
    """Nearest-rank percentiles; the histogram spans 0 to the largest latency in equal half-open bins."""
    values = [0.1, 0.2, 0.3, 0.4, 1.0]
    assert percentile(values, 0.5) == 0.3 and percentile(values, 0.95) == 1.0
    probes = [Probe("d.p", 1, "M_ME_NC_1", "none", 0, 1, v, Verdict.PASS) for v in values]
    probes.append(Probe("d.q", 2, "M_ME_NC_1", "none", 0, 1, None, Verdict.FAIL, "no answer"))
    assert latency_summary(probes) == {"min": 0.1, "p50": 0.3, "p95": 1.0, "max": 1.0}
    bins = histogram(values, bins=5)
    assert [n for _, _, n in bins] == [1, 2, 1, 0, 1] and bins[-1][1] == pytest.approx(1.0)
    assert latency_summary([]) is None and histogram([]) == []


def test_plan_spreads_probes_over_devices_read_only_first() -> None:
    """Probes are taken from each device in turn; within a device read-only points come before setpoints."""
    limits = Limits(min=-100, max=100)
    specs = {f"{d}.{p}": ModbusPoint(id=p, address=i, type="int16", writable=limits if p == "set" else None)
             for d in ("a", "b") for i, p in enumerate(("set", "m1", "m2"))}
    table = group(points=[{"point": point, "ioa": 10 + i, "type": "M_ME_NC_1"} for i, point in enumerate(specs)])
    plans, _ = plan_probes(table, specs, {}, {point: 0 for point in specs}, limit=4)
    assert [p.mapping.point for p in plans] == ["a.m1", "b.m1", "a.m2", "b.m2"]
