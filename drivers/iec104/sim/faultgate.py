"""The simulated station's front door: a TCP relay between each master and the c104 server behind
it, which does to the frames what c104's server cannot be told to do.

Why hand-written (the APCI framing and sequence numbers of IEC 60870-5-104 clause 5, about a
hundred lines): c104 2.2.1's server has no hook to hold a connection open without answering, to
leave out one of its own frames, or to send an IOA with a type other than its point's. So the
simulator's c104 server listens on a loopback port of its own and this relay, on the address the
station's connection names, passes every APDU through unchanged unless a fault says otherwise:

* ``stalled``: neither direction is read any more (TCP stays open, nothing is answered, TESTFR
  neither): a hung RTU. A master connecting meanwhile is accepted and left waiting too;
* ``wrong_types``: monitor-direction I-frames go out with another type of the same octet layout
  (M_SP <-> M_DP, M_ME_NA <-> M_ME_NB, M_ME_NC <-> M_IT, untagged and CP56-tagged alike);
* ``no_act_term``: a command's ACT_TERM is left out; the station's later I-frames are renumbered
  (N(S)) and the master's acknowledgements mapped back (N(R)), so both ends keep a consistent link;
* ``drop``: every connection is closed and nothing listens for a while.

The relay also counts the spontaneous information objects the oldest connection passes on: c104's
server queues at most 100 ASDUs per connection and overwrites the oldest when full, so the
simulator paces a burst by what has actually left (``in_flight``).
"""

import logging
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, ITransport
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

log = logging.getLogger(__name__)

START, APCI = 0x68, 6
SEQ_MODULO = 1 << 15
SPONTANEOUS, ACT_TERM = 3, 10
FIRST_COMMAND, LAST_COMMAND = 45, 69  # C_SC_NA_1 .. C_BO_TA_1 (IEC 60870-5-101 7.2.1.1 and -104 table S.1)
# pairs of monitor types whose information objects have the same length (IEC 60870-5-101 7.3.1)
_SAME_LAYOUT = [(1, 3), (30, 31), (9, 11), (34, 35), (13, 15), (36, 37)]
WRONG_TYPE = {a: b for a, b in _SAME_LAYOUT} | {b: a for a, b in _SAME_LAYOUT}


@dataclass
class Faults:
    """What the relay does to the frames now."""

    stalled: bool = False
    wrong_types: bool = False
    no_act_term: bool = False


def apdus(buffer: bytearray) -> Iterator[bytes]:
    """Whole APDUs taken from the front of ``buffer``; ValueError on a start octet other than 0x68."""
    while len(buffer) >= 2:
        if buffer[0] != START:
            raise ValueError(f"start octet 0x{buffer[0]:02x}")
        size = 2 + buffer[1]
        if len(buffer) < size:
            return
        frame = bytes(buffer[:size])
        del buffer[:size]
        yield frame


def is_i_frame(frame: bytes) -> bool:
    """An I-format APDU (bit 0 of the first control octet 0) with an ASDU."""
    return len(frame) > APCI and frame[2] & 1 == 0


class Renumbering:
    """N(S) and N(R) across a relay that leaves out some of the station's I-frames.

    A left-out frame sits between the forwarded frames numbered ``position - 1`` and ``position``
    (the master's numbering): a master acknowledging ``position`` has everything before it, so its
    N(R) covers the left-out frame too once mapped back to the station's numbering."""

    def __init__(self) -> None:
        self._left_out = 0
        self._positions: deque[int] = deque()
        self._covered = 0

    def leave_out(self, station_seq: int) -> int:
        """Note a left-out station frame; its position in the master's numbering."""
        position = (station_seq - self._left_out) % SEQ_MODULO
        self._positions.append(position)
        self._left_out += 1
        return position

    def to_master(self, station_seq: int) -> int:
        """A forwarded station frame's N(S) as the master counts."""
        return (station_seq - self._left_out) % SEQ_MODULO

    def to_station(self, master_ack: int) -> int:
        """The master's N(R) as the station counts."""
        while self._positions and (master_ack - self._positions[0]) % SEQ_MODULO < SEQ_MODULO // 2:
            self._positions.popleft()
            self._covered += 1
        return (master_ack + self._covered) % SEQ_MODULO


def with_send_seq(frame: bytes, seq: int) -> bytes:
    """An I-frame with its N(S) replaced."""
    return frame[:2] + struct.pack("<H", seq << 1) + frame[4:]


def with_recv_seq(frame: bytes, seq: int) -> bytes:
    """An I- or S-frame with its N(R) replaced."""
    return frame[:4] + struct.pack("<H", seq << 1) + frame[6:]


def recv_seq(frame: bytes) -> int | None:
    """N(R) of an I- or S-frame; None for a U-frame."""
    if frame[2] & 3 == 3:
        return None
    return struct.unpack_from("<H", frame, 4)[0] >> 1


class _StationSide(Protocol):
    """The relay's connection to the c104 server."""

    def __init__(self, relay: "Relay") -> None:
        self.relay = relay

    def connectionMade(self) -> None:
        self.relay.station_connected(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.relay.from_station(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.relay.station_lost()


class _StationConnector(ClientFactory):
    def __init__(self, relay: "Relay") -> None:
        self.relay = relay

    def buildProtocol(self, addr: Any) -> _StationSide:
        return _StationSide(self.relay)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        log.warning("simulated station: its c104 server did not accept: %s", reason.getErrorMessage())
        self.relay.transport.loseConnection()


class Relay(Protocol):
    """One master's connection, relayed frame by frame to the c104 server."""

    def __init__(self, gate: "FaultGate") -> None:
        self.gate = gate
        self.station: ITransport | None = None
        self._from_master = bytearray()
        self._from_station = bytearray()
        self._transparent = False  # after a framing error: bytes pass as they are (the peer closes)
        self._numbering = Renumbering()
        self._master_ack: int | None = None
        self.spontaneous_enqueued = 0  # objects c104 queued for this connection (the simulator says)
        self.spontaneous_passed = 0

    def connectionMade(self) -> None:
        self.gate.relays.append(self)
        self.transport.pauseProducing()  # until the station side is up (and while stalled)
        if not self.gate.faults.stalled:
            self.connect_station()

    def connect_station(self) -> None:
        """Open the connection to the c104 server (at once, or when a stall ends)."""
        if self.station is None and self.transport.connected:
            self.gate.reactor.connectTCP("127.0.0.1", self.gate.inner_port, _StationConnector(self))

    def station_connected(self, transport: ITransport) -> None:
        self.station = transport
        if self.gate.faults.stalled:
            transport.pauseProducing()  # type: ignore[attr-defined]
        else:
            self.transport.resumeProducing()

    def set_stalled(self, stalled: bool) -> None:
        """Stop or resume reading both sides."""
        for transport in (self.transport, self.station):
            if transport is not None:
                (transport.pauseProducing if stalled else transport.resumeProducing)()  # type: ignore[attr-defined]
        if not stalled:
            self.connect_station()

    def dataReceived(self, data: bytes) -> None:
        if self.station is None:
            return
        if self._transparent:
            self.station.write(data)
            return
        self._from_master += data
        try:
            for frame in apdus(self._from_master):
                self.station.write(self._acknowledging(frame))
        except ValueError:
            self._pass_through(self.station, self._from_master)

    def _acknowledging(self, frame: bytes) -> bytes:
        ack = recv_seq(frame)
        if ack is None:
            return frame
        self._master_ack = ack
        return with_recv_seq(frame, self._numbering.to_station(ack))

    def from_station(self, data: bytes) -> None:
        if self._transparent:
            self.transport.write(data)
            return
        self._from_station += data
        try:
            for frame in apdus(self._from_station):
                out = self._edited(frame)
                if out is not None:
                    self.transport.write(out)
        except ValueError:
            self._pass_through(self.transport, self._from_station)

    def _pass_through(self, to: ITransport, rest: bytearray) -> None:
        log.warning("simulated station: a frame broke the APCI layout; relaying bytes as they are")
        self._transparent = True
        to.write(bytes(rest))
        rest.clear()

    def _edited(self, frame: bytes) -> bytes | None:
        """The station's frame as the faults want it, or None when it is left out."""
        if not is_i_frame(frame):
            return frame
        station_seq = struct.unpack_from("<H", frame, 2)[0] >> 1
        type_id, cause = frame[APCI], frame[APCI + 2] & 0x3F
        if self.gate.faults.no_act_term and cause == ACT_TERM and FIRST_COMMAND <= type_id <= LAST_COMMAND:
            self._leave_out(station_seq)
            return None
        if self.gate.faults.wrong_types and type_id in WRONG_TYPE:
            frame = frame[:APCI] + bytes([WRONG_TYPE[type_id]]) + frame[APCI + 1:]
        if cause == SPONTANEOUS:
            self.spontaneous_passed += frame[APCI + 1] & 0x7F
            if self.gate.on_passed is not None:
                self.gate.on_passed()
        return with_send_seq(frame, self._numbering.to_master(station_seq))

    def _leave_out(self, station_seq: int) -> None:
        """Leave a frame out; if the master has acknowledged everything before it, no later
        acknowledgement of the master would cover it: acknowledge it to the station now (else
        the station closes the link at t1)."""
        position = self._numbering.leave_out(station_seq)
        if self._master_ack == position and self.station is not None:
            self.station.write(bytes([START, 4, 0x01, 0]) + struct.pack("<H", self._numbering.to_station(position) << 1))

    def station_lost(self) -> None:
        self.station = None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self in self.gate.relays:
            self.gate.relays.remove(self)
        if self.station is not None:
            self.station.loseConnection()


class FaultGate(Factory):
    """The relays of one simulated server: listening where its connection says, relaying to
    127.0.0.1:``inner_port`` where the c104 server listens."""

    def __init__(self, reactor: Any, host: str, port: int, inner_port: int) -> None:
        self.reactor, self.host, self.port, self.inner_port = reactor, host, port, inner_port
        self.faults = Faults()
        self.relays: list[Relay] = []
        self._listening: IListeningPort | None = None
        self.on_passed: Callable[[], None] | None = None  # called when spontaneous objects left

    def buildProtocol(self, addr: Any) -> Relay:
        return Relay(self)

    def listen(self) -> None:
        """Accept masters on the station's address."""
        self._listening = self.reactor.listenTCP(self.port, self, interface=self.host)

    def close(self) -> Deferred:
        """Stop listening and close every relayed connection."""
        listening, self._listening = self._listening, None
        for relay in list(self.relays):
            relay.transport.abortConnection()
        return maybeDeferred(listening.stopListening) if listening is not None else succeed(None)

    def drop(self, down_s: float) -> Deferred:
        """Every connection closed; listening again after ``down_s``."""
        d = self.close()
        d.addCallback(lambda _: deferLater(self.reactor, down_s, self.listen))
        return d

    def stall(self, stalled: bool) -> None:
        """Stop (or resume) reading every connection, present and to come."""
        self.faults.stalled = stalled
        for relay in list(self.relays):
            relay.set_stalled(stalled)

    def enqueued(self, objects: int) -> None:
        """c104 took ``objects`` spontaneous objects into the queue of every connection."""
        for relay in self.relays:
            relay.spontaneous_enqueued += objects

    def in_flight(self) -> int:
        """Spontaneous objects queued in c104 for the oldest connection and not yet passed on."""
        if not self.relays:
            return 0
        return self.relays[0].spontaneous_enqueued - self.relays[0].spontaneous_passed


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, for the c104 server behind a gate."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
