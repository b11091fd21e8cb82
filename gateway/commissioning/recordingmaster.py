"""A c104 dispatch master that records everything it receives, for ``gridgate dispatch-test``.

What arrived is read from the raw frames (``on_receive_raw``), decoded by ``monitorframes``:
every object with its own type, cause, value, quality and time tag. c104's point model cannot
record it: it keeps one type per IOA and drops the rest of an ASDU after an object of another
type, while a correct outstation answers interrogations with the untagged twin of a tagged
type. c104 still creates a point for every new IOA (``on_new_point``) so that it does not report
them as unknown; what it flags is kept in ``unexpected``. Frames that break the standard's
layout are kept in ``undecodable``.
Command confirmations (GI, counter interrogation, clock sync) are read from the raw frames
(``on_receive_raw`` + ``c104.explain_bytes_dict``), since c104's calls return only a bool. So are
the round trips of process commands (C_SC/C_DC/C_SE): the frames sent (``on_send_raw``) and
received for them, with the S/E bit, give ACT -> ACT_CON -> ACT_TERM (``tripcheck.timeline``).

c104 callbacks run on c104's threads: they copy plain values under a lock and wake waiters. The
blocking calls (start, GI, clock sync, stop) run in the calling thread.
This module must not use ``from __future__ import annotations``: c104 checks callback
annotations as real objects.
"""

import datetime
import socket
import threading
import time
from typing import Any, Callable, Optional

import c104

from gateway.commissioning.dispatchcheck import Arrival
from gateway.commissioning.tripcheck import NORMALIZED, SCALED, CommandFrame, Timeline, timeline
from gateway.iec104.monitorframes import FrameError, monitor_objects

PROCESS_COMMANDS = frozenset({"C_SC_NA_1", "C_SC_TA_1", "C_DC_NA_1", "C_DC_TA_1", "C_SE_NA_1", "C_SE_TA_1",
                              "C_SE_NB_1", "C_SE_TB_1", "C_SE_NC_1", "C_SE_TC_1"})


def _select_bit(type_name: str, apdu: bytes) -> bool:
    """The S/E bit of a single-object command: bit 7 of its qualifier, the last octet or the one
    before the 7-octet CP56Time2a (c104's explanation does not carry it for setpoints; the
    outstation side reads it the same way in ``commandpoints``)."""
    qualifier = apdu[-8] if type_name.endswith(("TA_1", "TB_1", "TC_1")) else apdu[-1]
    return bool(qualifier & 0x80)


def _command_info(type_name: str, wire: Any, recorded_at: Optional[datetime.datetime]) -> c104.Information:
    """The c104 command object carrying ``wire`` (as ``tripcheck.encode`` made it)."""
    tag = {"recorded_at": recorded_at} if recorded_at is not None else {}
    if type_name.startswith("C_SC"):
        return c104.SingleCmd(on=bool(wire), **tag)
    if type_name.startswith("C_DC"):
        return c104.DoubleCmd(state=c104.Double.ON if wire == 2 else c104.Double.OFF, **tag)
    if type_name in NORMALIZED:
        return c104.NormalizedCmd(target=c104.NormalizedFloat(float(wire)), **tag)
    if type_name in SCALED:
        return c104.ScaledCmd(target=c104.Int16(int(wire)), **tag)
    return c104.ShortCmd(target=float(wire), **tag)


class RecordingMaster:
    """A c104 client on one connection, recording every information object it receives."""

    def __init__(self, host: str, port: int, common_address: int, timeout_s: float) -> None:
        self.host, self.port, self.common_address = socket.gethostbyname(host), port, common_address
        self._timeout_s = timeout_s
        self._changed = threading.Condition(threading.RLock())
        self._arrivals: list[Arrival] = []
        self._commands: list[tuple[str, str, bool, float]] = []  # type, cot, negative, at
        self._frames: list[CommandFrame] = []  # process commands, both directions
        self.foreign_cas: set[int] = set()
        self.unexpected: dict[tuple[str, str, str], set[int]] = {}  # (cause, type, cot) -> IOAs
        self.undecodable: list[str] = []  # why, and the frame's octets
        self._client = c104.Client(tick_rate_ms=50, command_timeout_ms=int(timeout_s * 1000))
        self._client.on_new_point(callable=self._on_new_point)
        self._client.on_new_station(callable=self._on_new_station)
        self.connection = self._client.add_connection(ip=self.host, port=port, init=c104.Init.NONE)
        self.connection.add_station(common_address=common_address)
        self.connection.on_unexpected_message(callable=self._on_unexpected)
        self.connection.on_receive_raw(callable=self._on_raw)
        self.connection.on_send_raw(callable=self._on_sent_raw)

    # -- c104 threads: copy plain values, wake waiters ------------------------------------------

    def _on_new_point(self, client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type) -> None:
        station.add_point(io_address=io_address, type=point_type)

    def _on_new_station(self, client: c104.Client, connection: c104.Connection, common_address: int) -> None:
        with self._changed:
            self.foreign_cas.add(common_address)

    def _on_unexpected(self, connection: c104.Connection, message: c104.IncomingMessage, cause: c104.Umc) -> None:
        with self._changed:
            key = (cause.name, message.type.name, message.cot.name)
            self.unexpected.setdefault(key, set()).add(message.io_address)

    def _on_raw(self, connection: c104.Connection, data: bytes) -> None:
        self._record_objects(data)
        frame = c104.explain_bytes_dict(apdu=data)
        kind = frame.get("type")
        if isinstance(kind, c104.Type) and kind.name in ("C_IC_NA_1", "C_CI_NA_1", "C_CS_NA_1"):
            with self._changed:
                self._commands.append((kind.name, frame["cot"].name, bool(frame.get("negative")), time.time()))
                self._changed.notify_all()
        self._command_frame("in", data, frame)

    def _on_sent_raw(self, connection: c104.Connection, data: bytes) -> None:
        self._command_frame("out", data, c104.explain_bytes_dict(apdu=data))

    def _command_frame(self, direction: str, data: bytes, frame: dict) -> None:
        kind = frame.get("type")
        if not isinstance(kind, c104.Type) or kind.name not in PROCESS_COMMANDS:
            return
        recorded = CommandFrame(direction, kind.name, frame["cot"].name, bool(frame.get("negative")),
                                _select_bit(kind.name, data), int(frame.get("firstInformationObjectAddress") or 0),
                                time.time())
        with self._changed:
            self._frames.append(recorded)
            self._changed.notify_all()

    def _record_objects(self, data: bytes) -> None:
        """Every monitored object of the frame, as an Arrival (none when the frame is malformed)."""
        at = time.time()
        try:
            arrivals = [Arrival(o.ioa, o.type, o.cot, o.value, o.quality, o.recorded_at, at)
                        for o in monitor_objects(bytes(data)) if o.common_address == self.common_address]
        except FrameError as exc:
            with self._changed:
                self.undecodable.append(f"{exc}: {bytes(data).hex()}")
            return
        with self._changed:
            self._arrivals.extend(arrivals)
            self._changed.notify_all()

    # -- the calling thread -------------------------------------------------------------------

    def arrivals(self) -> list[Arrival]:
        """Everything received so far, oldest first."""
        with self._changed:
            return list(self._arrivals)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``condition()`` holds (checked at each arrival) or the time is up."""
        with self._changed:
            return self._changed.wait_for(condition, timeout_s)

    def connect(self) -> Optional[float]:
        """Open the link and STARTDT; seconds it took, or None when it did not open in time."""
        started = time.monotonic()
        self._client.start()
        deadline = started + self._timeout_s
        muted_since: Optional[float] = None
        while self.connection.state != c104.ConnectionState.OPEN:
            now = time.monotonic()
            if now > deadline:
                return None
            muted_since = (muted_since or now) if self.connection.state == c104.ConnectionState.OPEN_MUTED else None
            if muted_since is not None and now - muted_since > 0.5:
                # Init.NONE sometimes stays muted: send STARTDT ourselves, but only on a link that has
                # been up a while: unmute() on a link the outstation is refusing crashes c104 2.2.1.
                self.connection.unmute()
                muted_since = None
            time.sleep(0.01)
        return time.monotonic() - started

    def command(self, name: str, send: Callable[[], bool], terminated: bool = True) -> Optional[str]:
        """Send a command; None when confirmed positively (and terminated), else what went wrong."""
        started = time.time()
        answered = send()

        def seen(cot: Optional[str] = None) -> list[tuple[str, str, bool, float]]:
            return [c for c in self._commands if c[0] == name and c[3] >= started and cot in (None, c[1])]

        def settled() -> bool:
            if any(c[2] for c in seen()):
                return True
            return bool(seen("ACTIVATION_CON")) and (not terminated or bool(seen("ACTIVATION_TERMINATION")))
        # c104 hands the raw frame to Python after it handled it: wait for the record, not only the call
        self.wait_for(settled, self._timeout_s if answered else 0.5)
        causes = lambda: [c[1] for c in seen() if c[1] not in ("ACTIVATION_CON", "ACTIVATION_TERMINATION")]
        negative = any(c[2] for c in seen())
        if negative:  # the reason (UNKNOWN_CA, UNKNOWN_TYPE...) may follow in a frame of its own
            self.wait_for(lambda: bool(causes()), 0.2)
        with self._changed:
            confirmed, terminations, reasons = seen("ACTIVATION_CON"), seen("ACTIVATION_TERMINATION"), causes()
        if negative or reasons:
            return f"negative confirmation of {name}" + (f" ({', '.join(reasons)})" if reasons else "")
        if not confirmed:
            return f"no confirmation of {name} within {self._timeout_s:g} s"
        if terminated and not terminations:
            return f"{name} confirmed but not terminated (ACT_TERM) within {self._timeout_s:g} s"
        return None

    def command_frames(self) -> list[CommandFrame]:
        """Every process-command frame sent and received so far, oldest first."""
        with self._changed:
            return list(self._frames)

    def send_command(self, ioa: int, type_name: str, wire: Any, select: bool,
                     recorded_at: Optional[datetime.datetime] = None) -> Timeline:
        """Send one process command (select-before-operate when ``select``) and wait until it is
        refused, or confirmed and terminated, or the time is up; its timeline from the raw frames.

        Raises ValueError (c104) when the command cannot be built or sent at all.
        """
        station = self.connection.get_station(self.common_address)
        point = station.get_point(io_address=ioa)
        if point is None:
            mode = c104.CommandMode.SELECT_AND_EXECUTE if select else c104.CommandMode.DIRECT
            point = station.add_point(io_address=ioa, type=getattr(c104.Type, type_name), command_mode=mode)
        if point is None:
            raise ValueError(f"c104 cannot add command point {type_name} at IOA {ioa}")
        point.info = _command_info(type_name, wire, recorded_at)
        since = time.time()
        answered = point.transmit(cause=c104.Cot.ACTIVATION)
        now = lambda: timeline(self._frames, ioa, since)
        # the client may miss a fast reply (False after its timeout): the frames decide, not the bool
        self.wait_for(lambda: now().confirmed or now().negative is not None, self._timeout_s if answered else 0.5)
        with self._changed:
            first = now()
        if first.confirmed:
            self.wait_for(lambda: now().settled, self._timeout_s)
        elif first.negative is not None:  # a cause (UNKNOWN_IOA...) may follow in a frame of its own
            self.wait_for(lambda: now().negative not in (None, "the command", "the select"), 0.2)
        with self._changed:
            return now()

    def interrogate(self) -> Optional[str]:
        """Station general interrogation; None once confirmed and terminated."""
        return self.command("C_IC_NA_1", lambda: self.connection.interrogation(
            common_address=self.common_address, cause=c104.Cot.ACTIVATION, qualifier=c104.Qoi.STATION))

    def counter_interrogate(self) -> Optional[str]:
        """General counter interrogation (read); None once confirmed and terminated."""
        return self.command("C_CI_NA_1", lambda: self.connection.counter_interrogation(
            common_address=self.common_address, cause=c104.Cot.ACTIVATION, qualifier=c104.Rqt.GENERAL,
            freeze=c104.Frz.READ))

    def clock_sync(self) -> Optional[str]:
        """C_CS_NA_1 with this machine's clock; None on a positive confirmation."""
        return self.command("C_CS_NA_1", lambda: self.connection.clock_sync(common_address=self.common_address),
                            terminated=False)

    def close(self) -> None:
        """Close the link and stop c104's threads."""
        self._client.stop()
