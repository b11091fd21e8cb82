"""Command round trips of ``gridgate dispatch-test``: send a safe value to every command IOA, and back.

For each command row of the group's table (``wiretable``, the rows ``points export`` writes):
read the target point's value (the simulator control API, else the last monitored value of that
point in the group's table), plan a safe value
(``tripcheck.plan_command``), send it the mapping's way (direct or select-before-operate,
time-tagged types tagged now in the group's wire time zone), time ACT -> ACT_CON -> ACT_TERM from
the raw frames, check what the simulated device serves, then send the previous value back the
same way, so the run leaves the site as it found it.

What the master sees is what is reported: a refusal is a negative ACT_CON at an IOA; why the
gateway refused is in its audit log, which the message points to.

Synchronous, like the rest of the tool: the master's calls block the calling thread.
"""

import time
from typing import Any, Callable, Mapping, Optional

from gateway.commissioning.dispatchcheck import CommandTrip, Verdict
from gateway.commissioning.recordingmaster import RecordingMaster
from gateway.commissioning.tripcheck import (CommandPlan, NoSafeValue, Timeline, decode, device_tolerance,
                                             monitored_value, plan_command, show_wire, switching, termination_notes,
                                             time_tagged)
from gateway.config.loader import Site
from gateway.iec104.wiretime import WireClock
from gateway.northbound.iec104.section import CommandMap, MasterGroup
from gateway.northbound.iec104.wiretable import commands, wire_rows

GAP_S = 0.05          # c104's client may refuse a command sent right after the previous one
RETRY_S = 0.1
PACE_SLACK_S = 0.05   # on top of the policy's min_interval_s
DEVICE_WAIT_S = 2.0   # the gate confirms after its read-back; the simulator is read until it agrees
STRAGGLERS_S = 0.3    # after the last command, for late (duplicate) ACT_TERMs to arrive
SimulatorValues = Callable[[], Optional[Mapping[str, Any]]]


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


class CommandTrips:
    """The round trips of one group's command IOAs over one master session."""

    def __init__(self, site: Site, group: MasterGroup, simulator_values: SimulatorValues, timeout_s: float,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self._table = wire_rows(group)
        self._commands = commands(self._table)
        self._values = simulator_values
        self._timeout_s = timeout_s
        self._clock, self._sleep = clock, sleep
        self._specs = {f"{d.name}.{p.id}": p for d in site.devices for p in d.profile.points}
        self._policies = {p.point: p for p in site.spec.command_policy}
        self._audit = site.spec.audit.path
        self._wire = WireClock(group.wire_time_zone)
        self._accepted: dict[str, float] = {}  # point -> when the gate last accepted a command to it
        self.notes: list[str] = []  # findings that do not fail a round trip (duplicate ACT_TERMs)

    def run(self, session: RecordingMaster) -> list[CommandTrip]:
        """One round trip per command IOA, in table (IOA) order."""
        trips = [self._trip(session, mapping) for mapping in self._commands]
        if self._accepted:
            self._sleep(STRAGGLERS_S)
        self.notes = termination_notes(session.command_frames(), self._commands)
        return trips

    # -- one IOA ------------------------------------------------------------------------------

    def _trip(self, session: RecordingMaster, mapping: CommandMap) -> CommandTrip:
        label = f"{mapping.point} at IOA {mapping.ioa} ({mapping.type}, {mapping.mode})"
        base = dict(point=mapping.point, ioa=mapping.ioa, type=mapping.type, mode=mapping.mode)
        values = self._values()
        simulated = values is not None and _number(values.get(mapping.point)) is not None
        if simulated:
            current, known = _number(values[mapping.point]), dict(values)
        else:  # no simulator, or one that does not simulate this device: the last monitored value
            known = {**(values or {}), **self._monitored(session)}
            current = _number(known.get(mapping.point))
        if current is None:
            where = "the simulator serves no number for it" if values is not None else "no --simulator"
            where += ", and the group's table does not monitor it"
            return CommandTrip(**base, verdict=Verdict.UNCHECKED, message=f"{label}: the current value of "
                               f"{mapping.point} is not known ({where}): nothing sent")
        try:
            plan = plan_command(mapping, self._specs.get(mapping.point), current, self._policies.get(mapping.point),
                                known)
        except NoSafeValue as exc:
            return CommandTrip(**base, verdict=Verdict.UNCHECKED, before=f"{current:g}",
                               message=f"{label}: no safe value: {exc}: nothing sent")
        sent = f"{plan.value:g} (wire {show_wire(mapping, plan.wire)})"
        first, error = self._send(session, mapping, plan.wire)
        details = dict(base, before=f"{plan.before:g}", sent=sent,
                       act_con_s=first.act_con_s if first else None, act_term_s=first.act_term_s if first else None)
        problems = [error] if error else self._answer_problems(first, sent)
        device, restored = "", ""
        if first is not None and first.confirmed and simulated:
            device, off = self._device(mapping, plan.value)
            problems += [off] if off else []
        if first is not None and first.negative is None and plan.changes:
            restored, trouble = self._restore(session, mapping, plan, simulated)
            problems += [trouble] if trouble else []
        return CommandTrip(**details, device=device, restored=restored,
                           verdict=Verdict.FAIL if problems else Verdict.PASS,
                           message=f"{label}: " + ("; ".join(problems) if problems
                                                   else self._passed(first, plan, sent, device, restored, simulated)))

    def _answer_problems(self, answer: Timeline, sent: str) -> list[str]:
        """What is wrong with the outstation's answer to the command (nothing: confirmed and terminated)."""
        if answer.negative is not None:
            return [f"negative ACT_CON ({answer.negative}) to {sent}: the gateway refused the command; "
                    f"the reason is in the gateway's audit log ({self._audit})"]
        if not answer.sent:
            return ["the command did not go out (the c104 client did not send it)"]
        if not answer.confirmed:
            return [f"no ACT_CON within {self._timeout_s:g} s"]
        if answer.act_term_s is None:
            return [f"confirmed, but no ACT_TERM within {self._timeout_s:g} s"]
        return []

    def _passed(self, answer: Timeline, plan: CommandPlan, sent: str, device: str, restored: str,
                simulated: bool) -> str:
        parts = [f"sent {sent}", f"ACT_CON {_ms(answer.act_con_s)}", f"ACT_TERM {_ms(answer.act_term_s)}"]
        if answer.select_con_s is not None:
            parts.insert(1, f"select confirmed in {_ms(answer.select_con_s)}")
        parts.append(f"device serves {device}" if simulated else "device value not checked (no --simulator)")
        parts.append(restored or "nothing to restore (the value sent is the current one)")
        return "; ".join(parts) + (f" ({plan.note})" if plan.note else "")

    def _restore(self, session: RecordingMaster, mapping: CommandMap, plan: CommandPlan,
                 simulated: bool) -> tuple[str, Optional[str]]:
        """Send the previous value back; (what happened, the problem if it did not work)."""
        back = decode(mapping, plan.restore_wire)
        answer, error = self._send(session, mapping, plan.restore_wire)
        problems = [error] if error else self._answer_problems(answer, f"{back:g}")
        if not problems and simulated:
            served, off = self._device(mapping, back)
            problems += [f"after the restore, {off}"] if off else []
        if problems:
            return "", f"could not restore {mapping.point} to {plan.before:g}: {'; '.join(problems)}"
        return f"restored {back:g} (ACT_CON {_ms(answer.act_con_s)}, ACT_TERM {_ms(answer.act_term_s)})", None

    # -- I/O ------------------------------------------------------------------------------------

    def _send(self, session: RecordingMaster, mapping: CommandMap, wire: Any) -> tuple[Optional[Timeline], str]:
        """Send once (again once if the client did not send it); (timeline, "") or (None, why not)."""
        self._pace(mapping.point)
        answer: Optional[Timeline] = None
        for _ in range(2):
            tag = self._wire.to_c104(self._clock()) if time_tagged(mapping.type) else None
            try:
                answer = session.send_command(mapping.ioa, mapping.type, wire, mapping.mode == "select_execute", tag)
            except ValueError as exc:
                return None, f"the command could not be sent: {exc}"
            if answer.sent or answer.negative is not None or answer.confirmed:
                break  # only a command the client did not send at all is sent again
            self._sleep(RETRY_S)
        if answer is not None and answer.confirmed:
            self._accepted[mapping.point] = self._clock()
        self._sleep(GAP_S)
        return answer, ""

    def _pace(self, point: str) -> None:
        """Keep the policy's min_interval_s between accepted commands to one point."""
        policy, last = self._policies.get(point), self._accepted.get(point)
        if policy is not None and last is not None:
            wait = last + policy.min_interval_s + PACE_SLACK_S - self._clock()
            if wait > 0:
                self._sleep(wait)

    def _device(self, mapping: CommandMap, expected: float) -> tuple[str, Optional[str]]:
        """(the value the simulator serves, why it is not ``expected``), read until it agrees or the time is up."""
        tol = device_tolerance(mapping, self._specs.get(mapping.point))
        deadline = self._clock() + min(self._timeout_s, DEVICE_WAIT_S)
        while True:
            values = self._values() or {}
            served = _number(values.get(mapping.point))
            if served is not None and abs(served - expected) <= tol:
                return f"{served:g}", None
            if self._clock() > deadline:
                shown = "nothing" if served is None else f"{served:g}"
                what = "state " if switching(mapping) else ""
                return ("" if served is None else f"{served:g}",
                        f"the device serves {shown}, the command carried {what}{expected:g} (±{tol:g})")
            self._sleep(0.1)

    def _monitored(self, session: RecordingMaster) -> dict[str, float]:
        """``device.point`` -> the last value received for it in the group's table."""
        by_ioa = {row.ioa: row for row in self._table if row.kind in ("monitor", "counter")}
        latest: dict[str, float] = {}
        for arrival in session.arrivals():
            row = by_ioa.get(arrival.ioa)
            if row is not None and row.mapping is not None and arrival.type in row.types:
                value = monitored_value(row.mapping, arrival.value)
                if value is not None:
                    latest[row.point] = value
        return latest
