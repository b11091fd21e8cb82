"""What a control-direction ASDU may do, by the standard's rules, before the CommandGate sees it.

Pure: frames and the clock in, a verdict out; no I/O, so every rule has a unit test and the
wire tests only have to show that verdicts reach the wire unchanged.

The rules (IEC 60870-5-101 section 7.2.3 causes of transmission, 60870-5-5 section 6.8 select
and execute, 60870-5-104 section 7.7):

* an ASDU arriving with the P/N bit set is not a command: COT 45 (unknown cause), negative;
* a command with the test bit set is never executed: it is refused with a negative
  confirmation carrying the test bit (the gateway has no test mode that would leave the
  device untouched while claiming success);
* unknown common address: COT 46; unknown IOA, or a command type other than the IOA's: COT 47; any cause other than 6 (activation) or
  8 (deactivation): COT 45. Each negative, mirrored, device untouched;
* COT 6 with S/E = 1 selects. Only ``select_execute`` points can be selected. A select of an
  IOA already selected by *another* connection is refused while that selection lives; from the
  same connection it replaces the old one. The gate's checks (limits, interlocks, rate, device)
  run at select time too, so a select that could never be executed is refused at once;
* COT 6 with S/E = 0 executes. On a ``select_execute`` point it needs a live selection of the
  same IOA, type, value and qualifier from the same connection; the selection is consumed
  either way, so a mismatched execute ends the sequence. On a ``direct`` point it executes;
* COT 8 (deactivation) cancels the connection's selection of that IOA and is confirmed
  positively with COT 9; with nothing to cancel it is confirmed negatively. It never writes.
"""

from dataclasses import dataclass
from enum import Enum

ACTIVATION, ACT_CON, DEACTIVATION, DEACT_CON, ACT_TERM = 6, 7, 8, 9, 10
UNKNOWN_TYPE, UNKNOWN_CAUSE, UNKNOWN_CA, UNKNOWN_IOA = 44, 45, 46, 47


class Action(Enum):
    """What the outstation does with a control frame."""

    REFUSE = "refuse"
    SELECT = "select"  # run the gate's checks; confirm the select if they pass
    EXECUTE = "execute"  # hand to the gate; confirm, return information, terminate
    DESELECT = "deselect"  # confirmed with COT 9, nothing written


@dataclass(frozen=True)
class ControlFrame:
    """One decoded single-object command, and the connection it came on."""

    connection: int
    type: str
    cot: int
    negative: bool
    test: bool
    common_address: int
    ioa: int
    value: object
    select: bool
    qualifier: int
    originator: int = 0


@dataclass(frozen=True)
class Verdict:
    """The action and, for a refusal, the COT of the negative reply and the reason."""

    action: Action
    reply_cot: int = ACT_CON
    reason: str = ""


@dataclass(frozen=True)
class Selection:
    """A live select: who, what, until when."""

    connection: int
    type: str
    value: object
    qualifier: int
    expires: float


class ControlRules:
    """The select-before-operate state of one master group plus the COT rules."""

    def __init__(self, common_address: int, commands: dict[int, tuple[str, str]], select_timeout_s: float) -> None:
        self._ca = common_address
        self._types = {ioa: type_name for ioa, (type_name, _) in commands.items()}
        self._modes = {ioa: mode for ioa, (_, mode) in commands.items()}  # "direct" | "select_execute"
        self._timeout = select_timeout_s
        self._selected: dict[int, Selection] = {}

    def judge(self, frame: ControlFrame, now: float) -> Verdict:
        """The verdict for ``frame``; a SELECT verdict becomes a selection only via ``selected``."""
        refusal = self._refusal(frame)
        if refusal is not None:
            return refusal
        if frame.cot == DEACTIVATION:
            return self._deselect(frame, now)
        if frame.select:
            return self._select(frame, now)
        if self._modes[frame.ioa] == "direct":
            return Verdict(Action.EXECUTE)
        return self._execute_selected(frame, now)

    def selected(self, frame: ControlFrame, now: float) -> None:
        """Record the select of ``frame`` once the gate's checks passed."""
        self._selected[frame.ioa] = Selection(frame.connection, frame.type, frame.value, frame.qualifier,
                                              now + self._timeout)

    def forget_connection(self, connection: int) -> None:
        """A closed connection's selections die with it."""
        for ioa in [i for i, s in self._selected.items() if s.connection == connection]:
            del self._selected[ioa]

    def _refusal(self, frame: ControlFrame) -> Verdict | None:
        if frame.negative:
            return Verdict(Action.REFUSE, UNKNOWN_CAUSE, "P/N bit set in the control direction")
        if frame.common_address != self._ca:
            return Verdict(Action.REFUSE, UNKNOWN_CA, f"unknown common address {frame.common_address}")
        if frame.cot not in (ACTIVATION, DEACTIVATION):
            return Verdict(Action.REFUSE, UNKNOWN_CAUSE, f"cause of transmission {frame.cot} cannot command")
        if frame.ioa not in self._modes:
            return Verdict(Action.REFUSE, UNKNOWN_IOA, f"no command at IOA {frame.ioa}")
        if frame.type != self._types[frame.ioa]:
            return Verdict(Action.REFUSE, UNKNOWN_IOA, f"IOA {frame.ioa} takes {self._types[frame.ioa]}, not {frame.type}")
        if frame.test:
            return Verdict(Action.REFUSE, _confirmation(frame), "test bit set: never executed on a device")
        return None

    def _deselect(self, frame: ControlFrame, now: float) -> Verdict:
        live = self._live(frame.ioa, now)
        if live is None or live.connection != frame.connection:
            return Verdict(Action.REFUSE, DEACT_CON, "deactivation with no select of this connection to cancel")
        del self._selected[frame.ioa]
        return Verdict(Action.DESELECT, DEACT_CON)

    def _select(self, frame: ControlFrame, now: float) -> Verdict:
        if self._modes[frame.ioa] != "select_execute":
            return Verdict(Action.REFUSE, ACT_CON, f"IOA {frame.ioa} is a direct command: select not allowed")
        live = self._live(frame.ioa, now)
        if live is not None and live.connection != frame.connection:
            return Verdict(Action.REFUSE, ACT_CON, f"IOA {frame.ioa} is selected by another connection")
        return Verdict(Action.SELECT)

    def _execute_selected(self, frame: ControlFrame, now: float) -> Verdict:
        live = self._live(frame.ioa, now)
        self._selected.pop(frame.ioa, None)
        if live is None:
            return Verdict(Action.REFUSE, ACT_CON, "execute without a live select (never selected, cancelled "
                                                   "or timed out)")
        if live.connection != frame.connection:
            return Verdict(Action.REFUSE, ACT_CON, "execute from another connection than the select")
        if (live.type, live.value, live.qualifier) != (frame.type, frame.value, frame.qualifier):
            return Verdict(Action.REFUSE, ACT_CON, f"execute does not match its select (selected {live.type} "
                                                   f"{live.value!r} q{live.qualifier}, got {frame.type} "
                                                   f"{frame.value!r} q{frame.qualifier})")
        return Verdict(Action.EXECUTE)

    def _live(self, ioa: int, now: float) -> Selection | None:
        selection = self._selected.get(ioa)
        if selection is not None and now > selection.expires:
            del self._selected[ioa]
            return None
        return selection


def _confirmation(frame: ControlFrame) -> int:
    return DEACT_CON if frame.cot == DEACTIVATION else ACT_CON
