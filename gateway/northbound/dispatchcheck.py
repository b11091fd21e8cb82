"""What ``gridgate dispatch-test`` concludes, as pure functions of what arrived and what was served.

The I/O (a c104 master, the simulator control API) lives in ``dispatchtest``; this module only
turns observations into verdicts, so every rule can be tested from hand-made data:

* per table row: the IOA arrived (in the general interrogation when ``gi``; counters in the
  counter interrogation, since a station GI does not carry M_IT), always with the table's type,
  with good quality (no IV, NT, OV), with the value the simulator served while the outstation
  answered, within a tolerance, after the type's encoding;
* comm-status points are True, alarm points (buffer overflow, clock) are False when sent;
* latency probes: which points to move, by how much, and which spontaneous ASDU is the answer.

A value check that could not be made is "not checked", never "passed".
"""

import datetime
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Mapping, Sequence

from gateway.config.iec104 import TIME_TAGGED, MasterGroup, PointMap
from gateway.config.profile import PointSpec

GI_COT = "INTERROGATED_BY_STATION"
COUNTER_COT = "REQUESTED_BY_GENERAL_COUNTER"
SPONTANEOUS_COT = "SPONTANEOUS"
BAD_QUALITY = frozenset({"IV", "NT", "OV"})
DOUBLE_NAMES = {0: "INTERMEDIATE", 1: "OFF", 2: "ON", 3: "INDETERMINATE"}
NORMALIZED_MAX = 32767 / 32768
VALUE_SLACK_S = 0.5  # the after-GI read of the simulator lands this much after ACT_TERM


class Verdict(str, Enum):
    """The outcome of one check."""

    PASS = "pass"
    FAIL = "fail"
    UNCHECKED = "not checked"


@dataclass(frozen=True)
class Arrival:
    """One information object as the master received it (plain values, copied off c104's thread).

    ``accepted`` is False when c104 refused it because the IOA had arrived before with another
    type: then only type and cause are known.
    """

    ioa: int
    type: str
    cot: str
    value: Any
    quality: frozenset[str]
    recorded_at: datetime.datetime | None
    at: float
    accepted: bool = True


@dataclass(frozen=True)
class Expectation:
    """One row of the group's table as the master must see it."""

    suite: str      # the device, or "link" for group alarms
    point: str      # device.point, "<device> comm status", or the alarm's key
    ioa: int
    type: str
    gi: bool = True
    mapping: PointMap | None = None
    fixed: Any = None  # the value expected whatever the simulator says (comm status, alarms)
    required: bool = True  # alarms are checked only when the outstation sends them

    def type_ok(self, received: str) -> bool:
        """Whether ``received`` is the table's type (an alarm may be any single-point type)."""
        return received == self.type or (not self.required and received.startswith("M_SP"))


@dataclass(frozen=True)
class Check:
    """One verdict: a table row, or a link check (connect, GI, clock sync, latency...)."""

    suite: str
    name: str
    verdict: Verdict
    message: str = ""
    ioa: int | None = None
    type: str = ""
    received_type: str = ""
    expected: str = ""
    received: str = ""
    quality: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Probe:
    """One spontaneous-latency measurement."""

    point: str
    ioa: int
    type: str
    sim: str
    before: float
    target: float
    latency_s: float | None
    verdict: Verdict
    message: str = ""


@dataclass
class DispatchResult:
    """Everything a run concluded; the reports are drawn from it."""

    group: str
    target: str
    common_address: int
    started: float
    checks: list[Check] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        """How many checks ended with ``verdict``."""
        return sum(1 for c in self.checks if c.verdict is verdict)

    @property
    def passed(self) -> bool:
        """No check failed (checks not made are listed, but do not fail the run)."""
        return self.count(Verdict.FAIL) == 0

    def suites(self) -> dict[str, list[Check]]:
        """Checks by suite: "link" first, then the devices in table order."""
        suites: dict[str, list[Check]] = {"link": []}
        for check in self.checks:
            suites.setdefault(check.suite, []).append(check)
        return suites


def expectations(group: MasterGroup) -> list[Expectation]:
    """Every row the master must see: mapped points, comm status per device, group alarms."""
    rows = [Expectation(m.point.split(".", 1)[0], m.point, m.ioa, m.type, m.gi, m) for m in group.points]
    rows += [Expectation(device, f"{device} comm status", ioa, "M_SP_TB_1", fixed=True)
             for device, ioa in group.comm_status.items()]
    rows += [Expectation("link", key, ioa, "M_SP_NA_1", fixed=False, required=False)
             for key, ioa in (("buffer_overflow_ioa", group.buffer_overflow_ioa),
                              ("clock_alarm_ioa", group.clock_alarm_ioa)) if ioa]
    return rows


# -- encoding: engineering value -> what the 104 type carries --------------------------------

def wire_value(type_name: str, mapping: PointMap | None, value: Any) -> Any:
    """The value as ``type_name`` carries it (the outstation's contract); None if it cannot."""
    family = type_name[:4]
    if value is None or isinstance(value, str):
        return None
    if family == "M_SP":
        return bool(value)
    if family == "M_DP":
        return (2 if value else 1) if isinstance(value, bool) else int(value)
    number = float(value)
    if not math.isfinite(number):
        return None
    if type_name in ("M_ME_NA_1", "M_ME_TD_1"):
        return min(max(number / _full_scale(mapping), -1.0), NORMALIZED_MAX)
    if type_name in ("M_ME_NB_1", "M_ME_TE_1"):
        return min(max(round(number * _multiplier(mapping)), -32768), 32767)
    if family == "M_IT":
        return round(number)
    return number


def _full_scale(mapping: PointMap | None) -> float:
    return mapping.full_scale if mapping is not None and mapping.full_scale else 1.0


def _multiplier(mapping: PointMap | None) -> float:
    return mapping.multiplier if mapping is not None else 1.0


def wire_scale(type_name: str, mapping: PointMap | None) -> float:
    """How much one engineering unit is on the wire (to express a deadband in wire units)."""
    if type_name in ("M_ME_NA_1", "M_ME_TD_1"):
        return 1.0 / _full_scale(mapping)
    if type_name in ("M_ME_NB_1", "M_ME_TE_1"):
        return abs(_multiplier(mapping))
    return 1.0


def tolerance(exp: Expectation, wire_values: Iterable[float]) -> float:
    """max(deadband, 0.5 % of the value, 1e-3), all in wire units."""
    threshold = exp.mapping.threshold if exp.mapping is not None else 0.0
    largest = max((abs(v) for v in wire_values), default=0.0)
    return max(threshold * wire_scale(exp.type, exp.mapping), 0.005 * largest, 1e-3)


def show(type_name: str, value: Any) -> str:
    """A wire value as the reports print it."""
    if value is None:
        return "-"
    if type_name.startswith("M_DP"):
        return f"{DOUBLE_NAMES.get(int(value), '?')} ({int(value)})"
    if isinstance(value, bool):
        return "ON (1)" if value else "OFF (0)"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# -- value history from the simulator control API --------------------------------------------

class ValueHistory:
    """Timestamped reads of the simulator's values (``GET /values``)."""

    def __init__(self) -> None:
        self._reads: list[tuple[float, Mapping[str, Any]]] = []

    def add(self, at: float, values: Mapping[str, Any]) -> None:
        """Keep one read taken at ``at`` (POSIX seconds)."""
        self._reads.append((at, values))

    def latest(self) -> Mapping[str, Any]:
        """The last read (empty before any)."""
        return self._reads[-1][1] if self._reads else {}

    def during(self, point: str, start: float, end: float) -> list[Any]:
        """The values ``point`` had in [start, end]: the one in force at ``start``, then later reads."""
        before = [v for t, v in self._reads if t <= start and point in v][-1:]
        inside = [v for t, v in self._reads if start < t <= end and point in v]
        return [v[point] for v in before + inside]


# -- checking one row ------------------------------------------------------------------------

@dataclass(frozen=True)
class TagCheck:
    """Time-tag plausibility, given the wire time zone's conversion (``WireClock.from_c104``)."""

    to_posix: Callable[[datetime.datetime], float]
    tolerance_s: float = 2.0

    def iso(self, tag: datetime.datetime) -> str:
        """A time tag as UTC ISO text."""
        return datetime.datetime.fromtimestamp(self.to_posix(tag), datetime.timezone.utc).isoformat(timespec="milliseconds")

    def ahead(self, arrival: Arrival) -> str | None:
        """Why the tag is implausible (later than its own reception), or None."""
        if arrival.recorded_at is None:
            return None
        lead = self.to_posix(arrival.recorded_at) - arrival.at
        if lead > self.tolerance_s:
            return (f"time tag {self.iso(arrival.recorded_at)} is {lead:.1f} s after its reception "
                    f"(wrong wire time zone?)")
        return None

    def outside(self, arrival: Arrival, start: float, end: float) -> str | None:
        """Why the tag of an event caused in [start, end] does not fall there, or None."""
        if arrival.recorded_at is None:
            return None
        stamp = self.to_posix(arrival.recorded_at)
        if start - self.tolerance_s <= stamp <= end + self.tolerance_s:
            return None
        return (f"time tag {self.iso(arrival.recorded_at)} is {stamp - start:+.1f} s from the change "
                f"(wrong wire time zone?)")


def answer_cot(type_name: str) -> str:
    """The cause an interrogation answer carries for this type (counters: counter interrogation)."""
    return COUNTER_COT if type_name.startswith("M_IT") else GI_COT


def check_row(exp: Expectation, arrivals: Sequence[Arrival], served: list[Any] | None,
              tags: TagCheck | None = None) -> Check:
    """The verdict on one table row.

    ``served``: the simulator's values for the point during the interrogation (None: no
    simulator given; empty: the simulator does not serve the point).
    """
    problems: list[str] = []
    unchecked: list[str] = []
    wrong = sorted({a.type for a in arrivals if not exp.type_ok(a.type)})
    if wrong:
        problems.append(f"received type {', '.join(wrong)}, table says {exp.type}")
    good = [a for a in arrivals if a.accepted and exp.type_ok(a.type)]
    answered = [a for a in good if a.cot == answer_cot(exp.type)]
    shown = (answered or good or [None])[-1]
    expected, received, quality = "", "", ""
    if exp.gi and not answered and not wrong and (exp.required or good):
        what = "counter interrogation" if exp.type.startswith("M_IT") else "general interrogation"
        problems.append(f"not sent in the {what}")
    if shown is None and not problems:
        unchecked.append("not sent (optional alarm point)" if not exp.required
                         else "nothing received (gi: false, and no change was sent during the test)")
    other = [a for a in arrivals if a.accepted and not exp.type_ok(a.type)]
    if shown is None and other:  # show what came, though it cannot be judged
        received = show(other[-1].type, other[-1].value)
        quality = " ".join(sorted(other[-1].quality)) or "good"
    if shown is not None:
        received, quality = show(exp.type, shown.value), " ".join(sorted(shown.quality)) or "good"
        if shown.quality & BAD_QUALITY:
            problems.append(f"quality {quality}")
        expected, why = _value_verdict(exp, shown, served, unchecked)
        if why:
            problems.append(why)
        if tags is not None and exp.type in TIME_TAGGED and (late := tags.ahead(shown)):
            problems.append(late)
    return _row_check(exp, problems, unchecked, expected, received, quality,
                      ", ".join(sorted({a.type for a in arrivals})))


def _value_verdict(exp: Expectation, shown: Arrival, served: list[Any] | None,
                   unchecked: list[str]) -> tuple[str, str | None]:
    """(expected as printed, why the received value is wrong or None)."""
    if exp.fixed is not None:
        expected = wire_value(exp.type, None, exp.fixed)
        return show(exp.type, expected), (None if shown.value == expected else
                                          f"value {show(exp.type, shown.value)}, expected {show(exp.type, expected)}")
    if served is None:
        unchecked.append("value not checked (no --simulator)")
        return "", None
    wires = [w for w in (wire_value(exp.type, exp.mapping, v) for v in served) if w is not None]
    if not wires:
        unchecked.append("value not checked (the simulator does not serve this point)")
        return "", None
    if isinstance(wires[0], bool) or exp.type[:4] in ("M_SP", "M_DP"):
        allowed = sorted(set(wires), key=float)
        expected = " or ".join(show(exp.type, w) for w in allowed)
        ok = shown.value in allowed
    else:
        tol = tolerance(exp, wires)
        low, high = min(wires), max(wires)
        expected = (show(exp.type, low) if low == high else f"{show(exp.type, low)}..{show(exp.type, high)}") + f" ±{tol:.3g}"
        ok = isinstance(shown.value, (int, float)) and low - tol <= float(shown.value) <= high + tol
    return expected, None if ok else f"value {show(exp.type, shown.value)}, simulator served {expected}"


def _row_check(exp: Expectation, problems: list[str], unchecked: list[str], expected: str,
               received: str, quality: str, received_types: str) -> Check:
    verdict = Verdict.FAIL if problems else (Verdict.UNCHECKED if unchecked else Verdict.PASS)
    detail = "; ".join(problems) if problems else "; ".join(unchecked)
    message = f"{exp.point} at IOA {exp.ioa} ({exp.type}): {detail}" if detail else ""
    return Check(exp.suite, exp.point, verdict, message, exp.ioa, exp.type, received_types,
                 expected, received, quality)


def unexpected_ioas(rows: Sequence[Expectation], arrivals: Iterable[Arrival]) -> Check:
    """Every IOA the outstation sent must be in the table (a dispatch master rejects others)."""
    known = {r.ioa for r in rows}
    extra = sorted({(a.ioa, a.type) for a in arrivals if a.ioa not in known})
    if not extra:
        return Check("link", "no IOAs outside the table", Verdict.PASS)
    listed = ", ".join(f"{ioa} ({type_name})" for ioa, type_name in extra[:20])
    more = f" and {len(extra) - 20} more" if len(extra) > 20 else ""
    return Check("link", "no IOAs outside the table", Verdict.FAIL,
                 f"{len(extra)} IOA(s) not in the table: {listed}{more}")


# -- latency probes --------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbePlan:
    """A point to move, from ``before`` to ``target``, to time its spontaneous transmission."""

    mapping: PointMap
    sim: str
    before: float
    target: float


def probe_order(mapping: PointMap, spec: PointSpec) -> int | None:
    """Preference for probing (lower first); None when the point cannot be probed.

    Constant points keep a set value; moving ones continue from it (a sine around it), so they
    come after; ``follow`` points slew straight back to their source and are never used.
    """
    if not mapping.type.startswith("M_ME") or spec.value_kind() not in ("int", "float"):
        return None
    kind = spec.sim.kind if spec.sim is not None else "constant"
    return {"constant": 0, "integrate": 1, "random_walk": 2, "ramp": 3, "sine": 4}.get(kind)


def nudge(mapping: PointMap, spec: PointSpec, current: float, poll_s: float) -> float | None:
    """A value clearly beyond the deadband from ``current``, inside what the point carries; None if none fits.

    10 x the deadband, plus at least one unit and two steps of the wire's resolution, plus the
    distance a moving simulation covers in a poll or two, so the answer is unmistakable.
    """
    delta = 10 * mapping.threshold + max(1.0, 2 * _wire_step(mapping), 2 * abs(spec.scale))
    if spec.sim is not None:
        delta += 4 * abs(spec.sim.amplitude) + 4 * abs(spec.sim.step) * max(1.0, poll_s)
    low, high = _room(mapping, spec)
    for target in (current + delta, current - delta):
        target = round(target) if spec.value_kind() == "int" else target
        if low <= target <= high:
            return target
    return None


def _wire_step(mapping: PointMap) -> float:
    """The engineering size of one step of the wire type (0 for floats)."""
    if mapping.type in ("M_ME_NA_1", "M_ME_TD_1"):
        return _full_scale(mapping) / 32768
    if mapping.type in ("M_ME_NB_1", "M_ME_TE_1"):
        return 1.0 / abs(_multiplier(mapping) or 1.0)
    return 0.0


def _room(mapping: PointMap, spec: PointSpec) -> tuple[float, float]:
    """The engineering range a set value must stay in: encoding, simulation bounds, wire type."""
    low, high = spec.value_range() or (-math.inf, math.inf)
    if spec.sim is not None:
        low = max(low, spec.sim.min if spec.sim.min is not None else -math.inf)
        high = min(high, spec.sim.max if spec.sim.max is not None else math.inf)
    if mapping.type in ("M_ME_NA_1", "M_ME_TD_1"):
        span = _full_scale(mapping) * NORMALIZED_MAX
        low, high = max(low, -span), min(high, span)
    if mapping.type in ("M_ME_NB_1", "M_ME_TE_1"):
        span = 32767 / abs(_multiplier(mapping) or 1.0)
        low, high = max(low, -span), min(high, span)
    return low, high


def plan_probes(group: MasterGroup, specs: Mapping[str, PointSpec], poll_s: Mapping[str, float],
                values: Mapping[str, Any], limit: int) -> tuple[list[ProbePlan], list[str]]:
    """Up to ``limit`` points to move (constant ones first), and why others were left out."""
    candidates, skipped = [], []
    for mapping in group.points:
        spec, current = specs.get(mapping.point), values.get(mapping.point)
        order = probe_order(mapping, spec) if spec is not None else None
        if order is None or not isinstance(current, (int, float)) or isinstance(current, bool):
            continue
        target = nudge(mapping, spec, float(current), poll_s.get(mapping.point.split(".")[0], 1.0))
        if target is None:
            skipped.append(f"{mapping.point}: no room to move beyond the deadband")
            continue
        kind = spec.sim.kind if spec.sim is not None else "none"
        candidates.append((order, ProbePlan(mapping, kind, float(current), target)))
    candidates.sort(key=lambda c: c[0])
    return [plan for _, plan in candidates[:limit]], skipped


def answer_to(plan: ProbePlan, served: float, posted_at: float, arrivals: Iterable[Arrival]) -> Arrival | None:
    """The first spontaneous object at the probe's IOA after ``posted_at`` carrying the new value.

    "Carrying" means nearer the target than the old value: within half the step, or the tolerance.
    """
    mapping = plan.mapping
    exp = Expectation("", mapping.point, mapping.ioa, mapping.type, mapping=mapping)
    new, old = wire_value(mapping.type, mapping, served), wire_value(mapping.type, mapping, plan.before)
    window = max(tolerance(exp, [new]), abs(new - old) / 2)
    for arrival in arrivals:
        if (arrival.ioa == mapping.ioa and arrival.cot == SPONTANEOUS_COT and arrival.accepted
                and arrival.at >= posted_at and isinstance(arrival.value, (int, float))
                and abs(float(arrival.value) - new) <= window):
            return arrival
    return None


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_summary(probes: Sequence[Probe]) -> dict[str, float] | None:
    """min/p50/p95/max of the measured latencies (None when nothing was measured)."""
    measured = [p.latency_s for p in probes if p.latency_s is not None]
    if not measured:
        return None
    return {"min": min(measured), "p50": percentile(measured, 0.5),
            "p95": percentile(measured, 0.95), "max": max(measured)}


def histogram(latencies: Sequence[float], bins: int = 10) -> list[tuple[float, float, int]]:
    """(from, to, count) bins spanning 0 to the largest latency, rounded up to 0.1 s."""
    if not latencies:
        return []
    top = max(0.1, math.ceil(max(latencies) * 10) / 10)
    width = top / bins
    counts = [0] * bins
    for value in latencies:
        counts[min(bins - 1, int(value / width))] += 1
    return [(i * width, (i + 1) * width, n) for i, n in enumerate(counts)]
