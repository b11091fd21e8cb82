"""Commands to a downstream station: C_SC, C_DC and C_SE (untagged and time-tagged), direct or
select-before-operate, each confirmed by the station's return information.

c104's ``Point.transmit`` blocks (so it runs in a thread) until the ACT_CON of a direct command,
or the select's ACT_CON and then the execute's ACT_CON and ACT_TERM, or until the client's command
timeout (the connection's ``command_timeout_s``, kept inside t1); it says only True or False.
What the station actually answered is read from the raw frames both ways (``confirmations``), so
a refusal names it: a negative confirmation of the select or of the execute (written: no), an
execute confirmed without ACT_TERM (written: yes, outcome unknown), or silence (written: maybe).

The frames, not c104's answer, decide, because c104 2.2.1's answer is wrong both ways: it waits
on a condition variable without first looking whether the answer came already
(``Connection::awaitCommandSuccess``), so a confirmation that arrives before its thread waits is
missed and the wait runs to its timeout; and a message arriving after a negative confirmation
(the ACT_TERM some stations still send) turns the command's failure into success
(``setCommandSuccess``, its ``default`` branch). Both were seen on loopback, about once in ten
SBO commands. So a command is confirmed only by a positive ACT_CON of its execute (and its
ACT_TERM, after a select), refused by any negative confirmation, and a select c104 missed, whose
execute it then never sent, is tried once more while the command's deadline allows.
After the confirmations, the command's point must show the commanded value (its return
information, or the next value the station sends) before the command's deadline; a station that
does not send an unchanged state again is taken at its current value.
"""

import asyncio
import datetime
import logging
from typing import Any, Callable

import c104
from twisted.internet import threads

from drivers.iec104.codec import normalized, scaled, to_raw
from drivers.iec104.confirmations import ACT_CON, ACT_TERM, Confirmation, confirmation
from drivers.iec104.profile import Iec104Connection, Iec104Point, Iec104Profile
from gateway.aio import await_deferred
from gateway.errors import CommandFailed, CommandRejected
from gateway.iec104.wiretime import WireClock
from gateway.model import Command, CommandResult, Quality, Value
from gateway.writecheck import writable_point

log = logging.getLogger(__name__)

QUALIFIERS = {"none": c104.Qoc.NONE, "short": c104.Qoc.SHORT_PULSE, "long": c104.Qoc.LONG_PULSE,
              "persistent": c104.Qoc.PERSISTENT}
SETTLE_S = 0.5  # how long the frames of a command c104 has answered for may take to reach the reactor


def command_info(point: Iec104Point, value: Any, recorded_at: datetime.datetime | None) -> c104.Information:
    """The c104 command information for an engineering value; ValueError when the type cannot carry it."""
    assert point.command is not None
    kind, qualifier = point.command.type[:4], QUALIFIERS[point.command.qualifier]
    if kind == "C_SC":
        return c104.SingleCmd(on=bool(value), qualifier=qualifier, recorded_at=recorded_at)
    if kind == "C_DC":
        return c104.DoubleCmd(state=c104.Double(int(value)), qualifier=qualifier, recorded_at=recorded_at)
    if point.command.type in ("C_SE_NA_1", "C_SE_TA_1"):
        return c104.NormalizedCmd(target=c104.NormalizedFloat(normalized(point, value)), recorded_at=recorded_at)
    if point.command.type in ("C_SE_NB_1", "C_SE_TB_1"):
        return c104.ScaledCmd(target=c104.Int16(scaled(point, value)), recorded_at=recorded_at)
    return c104.ShortCmd(target=to_raw(point, value), recorded_at=recorded_at)


class Commander:
    """The command points of one station, the confirmations it sent, and the read-backs awaited."""

    def __init__(self, profile: Iec104Profile, connection: Iec104Connection, stations: dict[int, c104.Station],
                 reactor: Any) -> None:
        self._profile, self._connection = profile, connection
        self._reactor = reactor
        self._clock = WireClock(connection.wire_time_zone)
        self._targets: dict[str, c104.Point] = {}
        for point in (p for p in profile.points if p.command is not None):
            assert point.command is not None
            mode = c104.CommandMode.SELECT_AND_EXECUTE if point.command.mode == "select_execute" \
                else c104.CommandMode.DIRECT
            station = stations[point.common_address or connection.common_address]
            self._targets[point.id] = station.add_point(io_address=point.command.ioa,
                                                        type=getattr(c104.Type, point.command.type), command_mode=mode)
        self._answers: list[tuple[float, Confirmation]] = []  # from the station
        self._sent: list[tuple[float, Confirmation]] = []  # to it (activations: cause 6)
        self._latest: dict[str, tuple[Value, Quality]] = {}  # point -> its last value and quality
        self._waiters: dict[str, list[tuple[Callable[[Value, Quality], bool], asyncio.Future]]] = {}

    # ---- what the station sends ----------------------------------------------------------------

    def c104_raw(self, connection: c104.Connection, data: bytes) -> None:
        """c104's thread, a frame received: a command confirmation is handed to the reactor."""
        found = confirmation(data)
        if found is not None:
            self._reactor.callFromThread(self._record, self._answers, found)

    def c104_sent_raw(self, connection: c104.Connection, data: bytes) -> None:
        """c104's thread, a frame sent: a command activation is handed to the reactor."""
        found = confirmation(data)
        if found is not None:
            self._reactor.callFromThread(self._record, self._sent, found)

    def _record(self, frames: list[tuple[float, Confirmation]], found: Confirmation) -> None:
        now = self._reactor.seconds()
        horizon = now - self._connection.command_timeout_s * 4
        frames[:] = [(at, c) for at, c in frames if at >= horizon] + [(now, found)]

    def arrived(self, point: str, value: Value, quality: Quality) -> None:
        """A value of ``point`` was published: it may be a read-back awaited."""
        self._latest[point] = (value, quality)
        for waiter in list(self._waiters.get(point, [])):
            matches, future = waiter
            if matches(value, quality) and not future.done():
                future.set_result(value)

    # ---- commands -------------------------------------------------------------------------------

    async def execute(self, command: Command, link_open: bool) -> CommandResult:
        """Send the command, check what the station answered, await the point's return information."""
        spec: Iec104Point = writable_point(self._profile, command)  # type: ignore[assignment]
        if spec.command is None:
            raise CommandRejected(f"{command.device}.{command.point}: its profile names no command for it")
        if not link_open:
            raise CommandFailed(f"{command.device}.{command.point}: the link to the station is not open", False)
        now = self._reactor.seconds()
        remaining = command.deadline - now
        if remaining <= 0:
            raise CommandRejected(f"{command.device}.{command.point}: deadline passed before sending")
        tagged = spec.command.type.endswith(("TA_1", "TB_1", "TC_1"))
        try:
            self._targets[spec.id].info = command_info(spec, command.value, self._clock.to_c104(now) if tagged else None)
        except ValueError as exc:
            raise CommandRejected(str(exc)) from exc
        await self._send(command, spec, now, remaining)
        return await self._read_back(command, spec, now)

    async def _send(self, command: Command, spec: Iec104Point, sent: float, remaining: float) -> None:
        """Transmit through c104, then judge by the frames (module docstring)."""
        for attempt in (1, 2):
            try:
                await asyncio.wait_for(await_deferred(self._transmit(spec)), remaining)
            except asyncio.TimeoutError:
                raise CommandFailed(f"{command.device}.{command.point}: {spec.command.type} to IOA "  # type: ignore[union-attr]
                                    f"{spec.command.ioa} not confirmed before the command's deadline", None) from None  # type: ignore[union-attr]
            verdict = await self._settled(spec, sent)
            if verdict == "confirmed":
                return
            remaining = command.deadline - self._reactor.seconds()
            if verdict is None and attempt == 1 and self._select_missed(spec, sent) and remaining > 0:
                log.info("%s.%s: c104 missed the select's confirmation; selecting again", command.device, command.point)
                sent = self._reactor.seconds()
                continue
            raise self._refusal(command, spec, sent)

    async def _settled(self, spec: Iec104Point, sent: float) -> str | None:
        """"refused", "confirmed" or None (neither), from the frames; c104 hands a frame to Python
        after it woke the transmitting thread, so the frames get a moment to arrive."""
        deadline = self._reactor.seconds() + SETTLE_S
        while True:
            answers = self._frames(self._answers, spec, sent)
            if any(c.negative for c in answers):
                return "refused"
            if self._confirmed_by(spec, answers):
                return "confirmed"
            if self._reactor.seconds() >= deadline:
                return None
            await asyncio.sleep(0.01)

    def _transmit(self, spec: Iec104Point) -> Any:
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._targets[spec.id].transmit,
                                         cause=c104.Cot.ACTIVATION)

    def _frames(self, frames: list[tuple[float, Confirmation]], spec: Iec104Point, since: float) -> list[Confirmation]:
        """This command's frames (its IOA, type and common address) since ``since``."""
        assert spec.command is not None
        address = spec.common_address or self._connection.common_address
        return [c for at, c in frames if at >= since and c.ioa == spec.command.ioa
                and c.common_address == address and c.type_name == spec.command.type]

    @staticmethod
    def _confirmed_by(spec: Iec104Point, answers: list[Confirmation]) -> bool:
        """The execute confirmed positively, and terminated after a select."""
        executed = any(c.cause == ACT_CON and not c.select for c in answers)
        return executed and (spec.command.mode == "direct" or any(c.cause == ACT_TERM for c in answers))  # type: ignore[union-attr]

    def _select_missed(self, spec: Iec104Point, sent: float) -> bool:
        """A select the station confirmed, whose execute c104 never sent."""
        answers, sent_frames = self._frames(self._answers, spec, sent), self._frames(self._sent, spec, sent)
        return spec.command.mode == "select_execute" and not any(c.negative for c in answers) \
            and any(c.select and c.cause == ACT_CON for c in answers) and not any(not c.select for c in sent_frames)  # type: ignore[union-attr]

    def _refusal(self, command: Command, spec: Iec104Point, sent: float) -> CommandFailed:
        """What the station answered to a command c104 reports as failed, as a typed failure."""
        assert spec.command is not None
        answers = self._frames(self._answers, spec, sent)
        what = f"{command.device}.{command.point}: {spec.command.type} to IOA {spec.command.ioa}"
        timeout = f"{self._connection.command_timeout_s:g} s"
        refused = next((c for c in answers if c.negative), None)
        if refused is not None:
            return CommandFailed(f"{what}: the station refused it ({refused.describe()})", False)
        executed = [c for c in answers if not c.select and c.cause == ACT_CON]
        if executed and spec.command.mode == "select_execute" and not any(c.cause == ACT_TERM for c in answers):
            return CommandFailed(f"{what}: execute confirmed, no activation termination within {timeout}", True)
        if any(c.select and c.cause == ACT_CON for c in answers) and not executed:
            return CommandFailed(f"{what}: select confirmed, the execute not confirmed within {timeout}", None)
        return CommandFailed(f"{what}: no activation confirmation within {timeout}", None)

    async def _read_back(self, command: Command, spec: Iec104Point, sent: float) -> CommandResult:
        """The point's value after the command: one that arrives equal to it, or the current one
        when it is equal already (a station need not send an unchanged state again)."""
        tolerance = spec.writable.readback_tolerance if spec.writable else 0.0

        def matches(value: Value, quality: Quality) -> bool:
            return not quality & Quality.IV and value is not None and \
                abs(float(value) - float(command.value)) <= tolerance  # type: ignore[arg-type]
        latest = self._latest.get(spec.id)
        if latest is not None and matches(latest[0], latest[1]):
            return CommandResult(command, latest[0], self._reactor.seconds())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        waiter = (matches, future)
        self._waiters.setdefault(spec.id, []).append(waiter)
        try:
            value = await asyncio.wait_for(future, max(0.0, command.deadline - self._reactor.seconds()))
        except asyncio.TimeoutError:
            shown = self._latest.get(spec.id, (None,))[0]
            raise CommandFailed(f"{command.device}.{command.point}: confirmed, but the station shows {shown!r}, "
                                f"not {command.value}, at the deadline", True, read_back=True, readback=shown) from None
        finally:
            self._waiters[spec.id].remove(waiter)
        return CommandResult(command, value, self._reactor.seconds())
