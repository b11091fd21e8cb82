"""What ``gridgate dispatch-test`` concludes, as pure functions of what arrived and what was served.

The I/O (a c104 master, the simulator control API) lives in ``dispatchtest``; this module only
turns observations into verdicts, so every rule can be tested from hand-made data:

* per table row (``wiretable``, the rows ``points export`` writes): the IOA arrived in the
  interrogation that carries it (general interrogation unless ``gi: false``; counters only in
  the counter interrogation), each object with the type the table gives for its cause (the
  untagged ``gi_type`` at COT 20, ``ci_type`` at COT 37, ``event_type`` spontaneously and as
  return information), never with a cause the row is not sent with, with good quality (no IV,
  NT, OV), with the value the simulator served while the outstation answered, within a
  tolerance, after the type's encoding;
* comm-status points are True, alarm points (buffer overflow, clock) are False;
* latency probes (planned in ``dispatchprobe``) are judged there; their results are kept here;
* command round trips (planned in ``tripcheck``) likewise.

A value check that could not be made is "not checked", never "passed".
"""

import datetime
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Mapping, Sequence

from gateway.iec104.types import TIME_TAGGED

from gateway.commissioning.wirevalues import show, wire_scale, wire_value
from gateway.northbound.iec104.section import PointMap
from gateway.northbound.iec104.wiretable import WireRow

GI_COT = "INTERROGATED_BY_STATION"
COUNTER_COT = "REQUESTED_BY_GENERAL_COUNTER"
SPONTANEOUS_COT = "SPONTANEOUS"
BAD_QUALITY = frozenset({"IV", "NT", "OV"})
VALUE_SLACK_S = 0.5  # the after-GI read of the simulator lands this much after ACT_TERM


class Verdict(str, Enum):
    """The outcome of one check."""

    PASS = "pass"
    FAIL = "fail"
    UNCHECKED = "not checked"


@dataclass(frozen=True)
class Arrival:
    """One information object as the master received it (decoded from the frame, ``monitorframes``)."""

    ioa: int
    type: str
    cot: str
    value: Any
    quality: frozenset[str]
    recorded_at: datetime.datetime | None
    at: float


@dataclass(frozen=True)
class Expectation:
    """One monitored row of the group's table as the master must see it."""

    suite: str      # the device, or "link" for group alarms
    point: str      # device.point, or the name of a status or alarm row
    ioa: int
    type: str       # as configured
    gi_type: str | None = None
    ci_type: str | None = None
    event_type: str | None = None
    mapping: PointMap | None = None  # device points: the value is checked against the simulator
    fixed: Any = None  # the value expected whatever the simulator says (comm status, alarms)
    device_deadband: float = 0.0  # change the device keeps to itself before reporting (engineering units)

    def type_for(self, cot: str) -> str | None:
        """The type the table says arrives with cause ``cot``; None when the row is never sent with it."""
        if cot == GI_COT:
            return self.gi_type
        if cot == COUNTER_COT:
            return self.ci_type
        return self.event_type

    @property
    def interrogation(self) -> str | None:
        """The interrogation cause that must carry the row (GI, counter interrogation), if any."""
        return GI_COT if self.gi_type else COUNTER_COT if self.ci_type else None

    @property
    def types(self) -> str:
        """The types the row arrives with, as the reports print them."""
        return ", ".join(sorted({t for t in (self.gi_type, self.ci_type, self.event_type) if t}))

    def sent_as(self) -> str:
        """How the table says the row is sent, in words."""
        ways = [way for way, sent in (("in the general interrogation", self.gi_type),
                                      ("in the counter interrogation", self.ci_type),
                                      ("spontaneously", self.event_type)) if sent]
        return " and ".join(ways) or "never"


@dataclass(frozen=True)
class Check:
    """One verdict: a table row, or a link check (connect, GI, clock sync, latency...)."""

    suite: str
    name: str
    verdict: Verdict
    message: str = ""
    ioa: int | None = None
    type: str = ""                  # the types the table gives the row, comma-separated
    received_type: str = ""         # the types that arrived, likewise
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


@dataclass(frozen=True)
class CommandTrip:
    """One command round trip: a safe value to a command IOA, and back (``tripcheck``)."""

    point: str
    ioa: int
    type: str
    mode: str                       # direct | select_execute
    verdict: Verdict
    message: str = ""
    before: str = ""                # the target point's value before, as printed
    sent: str = ""                  # the value the command carried (engineering units, wire value)
    act_con_s: float | None = None  # ACT -> ACT_CON (the execute's, for select-before-operate)
    act_term_s: float | None = None  # ACT -> ACT_TERM
    device: str = ""                # what the simulated device served afterwards
    restored: str = ""              # how the second command putting the value back went


@dataclass
class DispatchResult:
    """Everything a run concluded; the reports are drawn from it."""

    group: str
    target: str
    common_address: int
    started: float
    checks: list[Check] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    commands: list[CommandTrip] = field(default_factory=list)
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


def expectations(rows: Sequence[WireRow]) -> list[Expectation]:
    """Every monitored row of the group's wire table: device points, comm status (True), alarms (False)."""
    fixed = {"status": True, "alarm": False}
    return [Expectation(row.device or "link", row.point, row.ioa, row.type, row.gi_type, row.ci_type, row.event_type,
                        row.mapping if row.kind in ("monitor", "counter") else None, fixed.get(row.kind))
            for row in rows if row.kind != "command"]


def tolerance(exp: Expectation, wire_values: Iterable[float]) -> float:
    """max(deadband, 0.5 % of the value, 1e-3), all in wire units; the deadband is the table's or
    the device's own, whichever is larger."""
    threshold = max(exp.mapping.threshold if exp.mapping is not None else 0.0, exp.device_deadband)
    largest = max((abs(v) for v in wire_values), default=0.0)
    return max(threshold * wire_scale(exp.type, exp.mapping), 0.005 * largest, 1e-3)


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


def check_row(exp: Expectation, arrivals: Sequence[Arrival], served: list[Any] | None,
              tags: TagCheck | None = None) -> Check:
    """The verdict on one table row.

    ``served``: the simulator's values for the point during the interrogation (None: no
    simulator given; empty: the simulator does not serve the point).
    """
    shown = _judged(exp, arrivals)
    problems, unchecked = _arrival_problems(exp, arrivals, shown)
    expected, judge = _expectation(exp, served, unchecked if shown is not None else [])
    if shown is not None:
        problems += _shown_problems(exp, shown, expected, judge)
    problems += _tag_problems(exp, arrivals, tags)
    received, quality = _displayed(exp, arrivals, shown)
    return _row_check(exp, problems, unchecked, expected, received, quality,
                      ", ".join(sorted({a.type for a in arrivals})))


def _fits(exp: Expectation, arrival: Arrival) -> bool:
    """Whether the object has the type the table gives for its cause."""
    return arrival.type == exp.type_for(arrival.cot)


def _judged(exp: Expectation, arrivals: Sequence[Arrival]) -> Arrival | None:
    """The object the row is judged on: the last interrogation answer, else the last object that fits."""
    good = [a for a in arrivals if _fits(exp, a)]
    answered = [a for a in good if a.cot == exp.interrogation]
    return (answered or good or [None])[-1]


def _arrival_problems(exp: Expectation, arrivals: Sequence[Arrival],
                      shown: Arrival | None) -> tuple[list[str], list[str]]:
    """(problems, things not checked) about what arrived: types per cause, causes, interrogation, nothing at all."""
    problems: list[str] = []
    for cot in sorted({a.cot for a in arrivals if not _fits(exp, a)}):
        wrong = ", ".join(sorted({a.type for a in arrivals if a.cot == cot and not _fits(exp, a)}))
        expected = exp.type_for(cot)
        problems.append(f"received type {wrong}, table says {expected} with cause {cot}" if expected else
                        f"sent with cause {cot} ({wrong}); the table sends it only {exp.sent_as()}")
    if exp.interrogation and not any(a.cot == exp.interrogation for a in arrivals):
        what = "counter interrogation" if exp.interrogation == COUNTER_COT else "general interrogation"
        problems.append(f"not sent in the {what}")
    if shown is None and not problems:
        return [], ["nothing received (gi: false, and no change was sent during the test)"]
    return problems, []


def _shown_problems(exp: Expectation, shown: Arrival, expected: str, judge: Callable[[Any], bool] | None) -> list[str]:
    """Quality and value of the judged object."""
    problems = []
    if shown.quality & BAD_QUALITY:
        problems.append(f"quality {' '.join(sorted(shown.quality))}")
    if judge is not None and not judge(shown.value):
        source = "expected" if exp.fixed is not None else "simulator served"
        problems.append(f"value {show(exp.type, shown.value)}, {source} {expected}")
    return problems


def _tag_problems(exp: Expectation, arrivals: Sequence[Arrival], tags: TagCheck | None) -> list[str]:
    """The time tag of the last time-tagged object of the row (interrogation answers carry none)."""
    tagged = [a for a in arrivals if _fits(exp, a) and a.type in TIME_TAGGED]
    late = tags.ahead(tagged[-1]) if tags is not None and tagged else None
    return [late] if late else []


def _displayed(exp: Expectation, arrivals: Sequence[Arrival], shown: Arrival | None) -> tuple[str, str]:
    """(received value, quality) as the reports print them; a wrong-typed object is shown too."""
    other = [a for a in arrivals if not _fits(exp, a)]
    item = shown or (other[-1] if other else None)
    if item is None:
        return "", ""
    return show(item.type, item.value), " ".join(sorted(item.quality)) or "good"


def _expectation(exp: Expectation, served: list[Any] | None,
                 unchecked: list[str]) -> tuple[str, Callable[[Any], bool] | None]:
    """(expected value as printed, a judge of received values); no judge when it cannot be checked."""
    if exp.fixed is not None:
        fixed = wire_value(exp.type, None, exp.fixed)
        return show(exp.type, fixed), lambda value: value == fixed
    if served is None:
        unchecked.append("value not checked (no --simulator)")
        return "", None
    wires = [w for w in (wire_value(exp.type, exp.mapping, v) for v in served) if w is not None]
    if not wires:
        unchecked.append("value not checked (the simulator does not serve this point)")
        return "", None
    if exp.type[:4] in ("M_SP", "M_DP"):
        allowed = sorted(set(wires), key=float)
        return " or ".join(show(exp.type, w) for w in allowed), lambda value: value in allowed
    tol, low, high = tolerance(exp, wires), min(wires), max(wires)
    text = (show(exp.type, low) if low == high else f"{show(exp.type, low)}..{show(exp.type, high)}") + f" ±{tol:.3g}"
    return text, lambda value: (isinstance(value, (int, float)) and not isinstance(value, bool)
                                and low - tol <= float(value) <= high + tol)


def _row_check(exp: Expectation, problems: list[str], unchecked: list[str], expected: str,
               received: str, quality: str, received_types: str) -> Check:
    verdict = Verdict.FAIL if problems else (Verdict.UNCHECKED if unchecked else Verdict.PASS)
    detail = "; ".join(problems) if problems else "; ".join(unchecked)
    message = f"{exp.point} at IOA {exp.ioa} ({exp.types}): {detail}" if detail else ""
    return Check(exp.suite, exp.point, verdict, message, exp.ioa, exp.types, received_types,
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
