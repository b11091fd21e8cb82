"""Command round trips of ``gridgate dispatch-test``: which value to send, how it is encoded, what came back.

Pure, like ``dispatchprobe``. For every command IOA of the group the tool sends a SAFE value, one
the CommandGate accepts and that changes little: the target point's current value moved by a
small step inside the point's ``writable`` limits and ramp (``min(ramp_per_s / 2, 5 % of the
range)``, towards zero first, never flipping the sign), snapped to the register's and the wire
type's resolution; the current value itself when no step fits. Switching commands (C_SC, C_DC)
re-assert the current state, so nothing changes physically. Then the previous value is sent back.

The timeline of one command is read from raw frames (what went out, what came in), since c104's
blocking calls only return a bool and can miss a fast reply.
"""

import math
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from gateway.commands.policy import CommandPolicy

from gateway.commissioning.dispatchcheck import Check, CommandTrip, Verdict
from gateway.commissioning.wirevalues import NORMALIZED_MAX
from gateway.config.profile import PointSpec
from gateway.metrics import percentile
from gateway.northbound.iec104.section import CommandMap, PointMap

NORMALIZED = ("C_SE_NA_1", "C_SE_TA_1")
SCALED = ("C_SE_NB_1", "C_SE_TB_1")
DOUBLE_ON, DOUBLE_OFF = 2, 1
STEP_OF_RANGE = 0.05
STEP_OF_RAMP = 0.5


class NoSafeValue(Exception):
    """No value can be sent without changing the site (or being refused for certain)."""


def time_tagged(type_name: str) -> bool:
    """Whether the command type carries a CP56Time2a (the _TA/_TB/_TC forms)."""
    return type_name.endswith(("TA_1", "TB_1", "TC_1"))


def switching(mapping: CommandMap) -> bool:
    """C_SC or C_DC: the command carries ON/OFF, written as on_value/off_value."""
    return mapping.type[:4] in ("C_SC", "C_DC")


# -- encoding: engineering value <-> what the command type carries -----------------------------

def encode(mapping: CommandMap, value: float) -> bool | int | float:
    """The wire value of a command carrying ``value``: bool (C_SC), 2/1 (C_DC ON/OFF), the
    normalized fraction (value / full_scale, on the 1/32768 grid), the scaled int16
    (round(value x multiplier)), or the float32 (C_SE_NC/TC)."""
    if mapping.type.startswith("C_SC"):
        return value == mapping.on_value
    if mapping.type.startswith("C_DC"):
        return DOUBLE_ON if value == mapping.on_value else DOUBLE_OFF
    if mapping.type in NORMALIZED:
        fraction = min(max(value / (mapping.full_scale or 1.0), -1.0), NORMALIZED_MAX)
        return round(fraction * 32768) / 32768
    if mapping.type in SCALED:
        return min(max(round(value * mapping.multiplier), -32768), 32767)
    return struct.unpack("<f", struct.pack("<f", value))[0]


def decode(mapping: CommandMap, wire: bool | int | float) -> float:
    """The engineering value the gateway takes from ``wire`` (as ``commandpoints.command_value``)."""
    if mapping.type.startswith("C_SC"):
        return mapping.on_value if wire else mapping.off_value
    if mapping.type.startswith("C_DC"):
        return mapping.on_value if wire == DOUBLE_ON else mapping.off_value
    if mapping.type in NORMALIZED:
        return float(wire) * (mapping.full_scale or 1.0)
    if mapping.type in SCALED:
        return int(wire) / mapping.multiplier
    return float(wire)


def show_wire(mapping: CommandMap, wire: bool | int | float) -> str:
    """A wire value as the reports print it."""
    if mapping.type.startswith("C_SC"):
        return "ON" if wire else "OFF"
    if mapping.type.startswith("C_DC"):
        return "ON (2)" if wire == DOUBLE_ON else "OFF (1)"
    if mapping.type in SCALED:
        return str(int(wire))
    return f"{float(wire):.6g}"


def wire_step(mapping: CommandMap) -> float:
    """The engineering size of one step of the command type (0 for floats and switches)."""
    if mapping.type in NORMALIZED:
        return (mapping.full_scale or 1.0) / 32768
    if mapping.type in SCALED:
        return 1.0 / abs(mapping.multiplier)
    return 0.0


def register_step(spec: PointSpec | None) -> float:
    """The engineering size of one count of the point's register (0 where the encoding is a float)."""
    if spec is None or spec.value_range() is None:
        return 0.0
    return abs(spec.scale)


def device_tolerance(mapping: CommandMap, spec: PointSpec | None) -> float:
    """How far the value the device serves may be from the one sent: the read-back tolerance, or
    half a register count, or one step of the wire (c104's normalized rounding), whichever is larger."""
    readback = spec.writable.readback_tolerance if spec is not None and spec.writable is not None else 0.0
    return max(readback, register_step(spec) / 2, wire_step(mapping), 1e-6)


# -- the safe value ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CommandPlan:
    """What to send to one command IOA, and what to send back afterwards."""

    mapping: CommandMap
    before: float     # the target point's value now
    value: float      # the engineering value the command carries (as the gateway decodes it)
    wire: bool | int | float
    note: str = ""

    @property
    def changes(self) -> bool:
        """Whether the command moves the point (so a second command must put it back)."""
        return abs(self.value - self.before) > 1e-9

    @property
    def restore_wire(self) -> bool | int | float:
        """The wire value that puts the point back."""
        return encode(self.mapping, self.before)


def plan_command(mapping: CommandMap, spec: PointSpec | None, current: float,
                 policy: CommandPolicy | None = None, values: Mapping[str, Any] | None = None) -> CommandPlan:
    """The safe value for ``mapping`` given the point's ``current`` value; NoSafeValue when there is none.

    ``policy`` and ``values`` (the simulator's, or the last monitored) steer the step away from a
    direction an interlock of the policy refuses right now.
    """
    if not math.isfinite(current):
        raise NoSafeValue(f"{mapping.point} has no finite value ({current})")
    if switching(mapping):
        return _switch_plan(mapping, spec, current)
    limits = spec.writable if spec is not None else None
    if limits is None:
        wire = encode(mapping, current)
        return CommandPlan(mapping, current, decode(mapping, wire), wire,
                           f"{mapping.point} has no writable limits: the current value is sent back unchanged")
    if not limits.min <= current <= limits.max:
        raise NoSafeValue(f"{mapping.point} is at {current:g}, outside its limits [{limits.min:g}, {limits.max:g}]")
    step = STEP_OF_RANGE * (limits.max - limits.min)
    if limits.ramp_per_s is not None:
        step = min(step, STEP_OF_RAMP * limits.ramp_per_s)
    blocked: list[str] = []
    for target in _directions(current, step):
        wire = encode(mapping, _snap(target, spec))
        value = decode(mapping, wire)
        if (not limits.min <= value <= limits.max or abs(value - current) <= 1e-9
                or (limits.ramp_per_s is not None and abs(value - current) > limits.ramp_per_s)):
            continue
        if reason := interlocked(policy, values or {}, value):
            blocked.append(reason)
            continue
        return CommandPlan(mapping, current, value, wire)
    wire = encode(mapping, current)
    why = f"{blocked[0]} holds now" if blocked else f"no step fits the limits and the resolution of {mapping.point}"
    return CommandPlan(mapping, current, decode(mapping, wire), wire, f"{why}: the current value is sent unchanged")


def _switch_plan(mapping: CommandMap, spec: PointSpec | None, current: float) -> CommandPlan:
    """Re-assert the current state: ON when the point is at on_value, OFF at off_value."""
    tol = max(register_step(spec) / 2, spec.writable.readback_tolerance if spec and spec.writable else 0.0, 1e-9)
    for value in (mapping.on_value, mapping.off_value):
        if abs(current - value) <= tol:
            wire = encode(mapping, value)
            return CommandPlan(mapping, current, value, wire)
    raise NoSafeValue(f"{mapping.point} is at {current:g}, neither on_value {mapping.on_value:g} nor "
                      f"off_value {mapping.off_value:g}: re-asserting its state is not possible")


def _directions(current: float, step: float) -> list[float]:
    """Towards zero first (stopping at zero rather than flipping the sign), then away from it."""
    toward = -1.0 if current > 0 else 1.0
    first = current + toward * step
    if current != 0 and (first > 0) != (current > 0):
        first = 0.0
    return [first, current - toward * step]


def _snap(value: float, spec: PointSpec | None) -> float:
    """``value`` on the register's grid (offset + k x scale)."""
    step = register_step(spec)
    if not step or spec is None:
        return value
    return round(spec.offset + round((value - spec.offset) / step) * step, 9)


def interlocked(policy: CommandPolicy | None, values: Mapping[str, Any], value: float) -> Optional[str]:
    """The interlock of ``policy`` that refuses ``value`` on ``values`` now (unknown values: none)."""
    for lock in policy.interlocks if policy is not None else ():
        if not lock.applies_to(value):
            continue
        seen = values.get(lock.point)
        if isinstance(seen, (bool, int, float)) and lock.refuses(seen):
            return f"interlock {lock.reason!r} ({lock.point} = {seen})"
    return None


def monitored_value(mapping: PointMap, wire: Any) -> Optional[float]:
    """The engineering value behind a received monitored object (the reverse of the table's encoding)."""
    if wire is None or isinstance(wire, str):
        return None
    if mapping.type.startswith("M_SP"):
        return 1.0 if wire else 0.0
    if mapping.type.startswith("M_DP"):
        return {2: 1.0, 1: 0.0}.get(int(wire))
    if mapping.type in ("M_ME_NA_1", "M_ME_TD_1"):
        return float(wire) * (mapping.full_scale or 1.0)
    if mapping.type in ("M_ME_NB_1", "M_ME_TE_1") or mapping.type.startswith("M_IT"):
        return float(wire) / (mapping.multiplier or 1.0)
    return float(wire)


# -- the timeline of one command, from raw frames ----------------------------------------------

@dataclass(frozen=True)
class CommandFrame:
    """A command frame the master sent ("out") or received ("in"), copied off c104's thread."""

    direction: str
    type: str
    cot: str
    negative: bool
    select: bool
    ioa: int
    at: float


@dataclass(frozen=True)
class Timeline:
    """What the frames of one command say: confirmed, refused, or silent, and how fast."""

    sent: bool                     # the (execute) activation went out
    confirmed: bool                # positive ACT_CON to the execute (or the direct command)
    negative: Optional[str]        # what refused it: "the select", "the command", or a cause such as UNKNOWN_IOA
    act_con_s: Optional[float]     # execute ACT -> its ACT_CON
    act_term_s: Optional[float]    # execute ACT -> ACT_TERM
    select_con_s: Optional[float] = None  # select ACT -> its ACT_CON (select-before-operate)

    @property
    def settled(self) -> bool:
        """Nothing more to wait for: refused, or confirmed and terminated."""
        return self.negative is not None or (self.confirmed and self.act_term_s is not None)


def timeline(frames: Sequence[CommandFrame], ioa: int, since: float) -> Timeline:
    """The timeline of the command to ``ioa`` sent at or after ``since``."""
    mine = [f for f in frames if f.ioa == ioa and f.at >= since]
    acts = [f for f in mine if f.direction == "out" and f.cot == "ACTIVATION"]
    selects = [f for f in acts if f.select]
    executes = [f for f in acts if not f.select]
    start = executes[0].at if executes else (acts[0].at if acts else since)
    answers = [f for f in mine if f.direction == "in"]
    select_con = next((f for f in answers if f.cot == "ACTIVATION_CON" and f.select), None)
    con = next((f for f in answers if f.cot == "ACTIVATION_CON" and not f.select and f.at >= start), None)
    # the termination follows the confirmation: an earlier one is a late one of the previous command
    term = next((f for f in answers if f.cot == "ACTIVATION_TERMINATION" and con is not None and f.at >= con.at), None)
    other = sorted({f.cot for f in answers if f.cot not in ("ACTIVATION_CON", "ACTIVATION_TERMINATION")})
    negative = None
    if select_con is not None and select_con.negative:
        negative = "the select"
    elif con is not None and con.negative:
        negative = "the command"
    if other:
        negative = ", ".join(other)
    return Timeline(bool(executes) or (bool(acts) and not selects), con is not None and not con.negative,
                    negative, None if con is None else con.at - start,
                    None if term is None else term.at - start,
                    None if select_con is None or not selects else select_con.at - selects[0].at)


def termination_notes(frames: Sequence[CommandFrame], mappings: Sequence[CommandMap]) -> list[str]:
    """Command IOAs that received more ACT_TERMs than commands were confirmed (a strict master may
    take a late one for the termination of its next command)."""
    notes = []
    for mapping in mappings:
        mine = [f for f in frames if f.ioa == mapping.ioa and f.direction == "in"]
        confirmed = sum(1 for f in mine if f.cot == "ACTIVATION_CON" and not f.select and not f.negative)
        terms = [f for f in mine if f.cot == "ACTIVATION_TERMINATION"]
        if len(terms) > confirmed:
            selected = sum(1 for f in terms if f.select)
            flagged = f", {selected} of them with the select qualifier (S/E = 1)" if selected else ""
            notes.append(f"{mapping.point} at IOA {mapping.ioa} ({mapping.mode}): {len(terms)} ACT_TERM for "
                         f"{confirmed} confirmed command(s){flagged}: a strict master may take a late one for the "
                         "termination of its next command")
    return notes


# -- verdicts -----------------------------------------------------------------------------------

def trip_check(trip: CommandTrip) -> Check:
    """The check a round trip is reported as (suite "commands", one per command IOA)."""
    return Check("commands", trip.point, trip.verdict, trip.message, trip.ioa, trip.type,
                 expected=trip.sent, received=trip.device, seconds=trip.act_term_s or trip.act_con_s or 0.0)


def unchecked_trips(mappings: Sequence[CommandMap], why: str) -> list[CommandTrip]:
    """Every command IOA "not checked", saying why (--no-commands, no connection)."""
    return [CommandTrip(m.point, m.ioa, m.type, m.mode, Verdict.UNCHECKED,
                        f"{m.point} at IOA {m.ioa} ({m.type}): {why}") for m in mappings]


def command_latency_summary(trips: Sequence[CommandTrip]) -> Optional[dict[str, float]]:
    """p50/max of ACT -> ACT_CON and ACT -> ACT_TERM over the measured round trips (None: none)."""
    cons = [t.act_con_s for t in trips if t.act_con_s is not None]
    terms = [t.act_term_s for t in trips if t.act_term_s is not None]
    if not cons:
        return None
    summary = {"act_con_p50": percentile(cons, 0.5), "act_con_max": max(cons)}
    if terms:
        summary |= {"act_term_p50": percentile(terms, 0.5), "act_term_max": max(terms)}
    return summary


def latency_text(stats: Optional[dict[str, float]]) -> str:
    """The command latencies in one line (ms)."""
    if not stats:
        return "nothing measured"
    text = f"ACT_CON p50 {stats['act_con_p50'] * 1000:.0f} ms, max {stats['act_con_max'] * 1000:.0f} ms"
    if "act_term_p50" in stats:
        text += f"; ACT_TERM p50 {stats['act_term_p50'] * 1000:.0f} ms, max {stats['act_term_max'] * 1000:.0f} ms"
    return text
