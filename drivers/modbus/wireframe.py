"""pymodbus' receiving side, made to keep what arrived and never to raise on what a peer sends.

Two gaps in pymodbus 3.16.1 decide this module:

* ``replycheck`` judges a reply's bytes, but pymodbus hands back decoded objects that no longer
  show the byte count, the PDU length, or the frames it skipped on the way;
* a PDU pymodbus cannot parse makes ``FramerBase.handleFrame`` raise ``ModbusIOException`` inside
  ``data_received``: asyncio logs "Fatal error: protocol.data_received() call failed", drops the
  connection, and the request still waits for its timeout.

So the link's client gets, in place of its own (``install``):

* ``KeepingDecoder``: pymodbus' decoder, which also stores each reply's PDU bytes on the object it
  returns (``wire``), and returns ``Undecodable`` instead of None or an exception;
* a framer of the same class as the client's (socket or RTU) whose ``handleFrame`` is pymodbus'
  own loop plus a record (``heard``) of every frame it skipped (other unit, other transaction,
  bad CRC) and of bytes it could not frame, so that the timeout that follows says what did
  arrive; an exception from pymodbus' frame hunting on garbage drops the buffer instead.

It replaces ``client.ctx.framer``, private API: pymodbus is pinned exactly (3.16.1).
"""

from dataclasses import dataclass, field
from typing import Any, Callable

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU


class Undecodable(ModbusPDU):
    """A reply pymodbus could not decode; ``wire`` holds its PDU bytes."""

    def __init__(self, wire: bytes) -> None:
        super().__init__()
        self.function_code = wire[0] if wire else 0
        self.wire = wire


class KeepingDecoder(DecodePDU):
    """pymodbus' client-side PDU decoder that keeps the bytes and never fails."""

    def decode(self, frame: bytes) -> ModbusPDU:
        """The decoded reply with ``wire`` set, or ``Undecodable``."""
        try:
            pdu = super().decode(frame)
        except Exception:  # pylint: disable=broad-except  # nothing a peer sends may raise
            pdu = None
        if pdu is None:
            pdu = Undecodable(bytes(frame))
        pdu.wire = bytes(frame)  # type: ignore[attr-defined]
        return pdu


@dataclass
class Heard:
    """What reached the framer during one request, besides the reply it accepted."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (cause, what)
    unframed: int = 0  # bytes left over that never made a frame

    def clear(self) -> None:
        """Forget; called before each request is sent."""
        self.skipped.clear()
        self.unframed = 0


class _Watching:
    """``FramerBase.handleFrame`` (pymodbus 3.16.1) plus the record of what it passed over."""

    decoder: DecodePDU
    decode: Callable[[bytes], tuple[int, int, int, bytes]]  # the pymodbus framer's
    dropped: tuple[str, str]  # (cause, what) when the framer consumes bytes but gives no PDU

    def __init__(self, decoder: DecodePDU) -> None:
        super().__init__(decoder)  # type: ignore[call-arg]
        self.heard = Heard()

    def handleFrame(self, data: bytes, exp_devid: int, exp_tid: int) -> tuple[int, ModbusPDU | None]:
        """(bytes used, the first frame for this unit and transaction), as pymodbus does it."""
        used = 0
        while used < len(data):
            try:
                size, dev_id, tid, pdu = self.decode(data[used:])
            except Exception:  # pylint: disable=broad-except  # pymodbus' hunting on garbage
                self.heard.skipped.append(("unframed", f"{len(data) - used} byte(s) of garbage"))
                return len(data), None
            if not size:
                break
            used += size
            if not pdu:
                self.heard.skipped.append(self.dropped)
                return used, None
            if exp_devid and dev_id != exp_devid:
                self.heard.skipped.append(("unit", f"a reply from unit {dev_id}"))
                continue
            if exp_tid and tid and tid != exp_tid:
                self.heard.skipped.append(("transaction", f"a reply for transaction {tid}"))
                continue
            reply = self.decoder.decode(pdu)
            reply.dev_id, reply.transaction_id = dev_id, tid
            self.heard.unframed = 0
            return used, reply
        self.heard.unframed = len(data) - used
        return used, None


class WatchingSocketFramer(_Watching, FramerSocket):
    """MBAP framing (pymodbus' ``FramerSocket``), watched."""

    dropped = ("length", "an MBAP frame with no PDU")


class WatchingRtuFramer(_Watching, FramerRTU):
    """RTU framing (pymodbus' ``FramerRTU``), watched."""

    dropped = ("crc", "a frame with a bad CRC")


def install(client: Any) -> WatchingSocketFramer | WatchingRtuFramer:
    """Put a watching framer with a keeping decoder into ``client``; returns the framer."""
    current = client.ctx.framer
    framer: WatchingSocketFramer | WatchingRtuFramer
    if isinstance(current, FramerRTU):
        framer = WatchingRtuFramer(KeepingDecoder(False))
    elif isinstance(current, FramerSocket):
        framer = WatchingSocketFramer(KeepingDecoder(False))
    else:
        raise TypeError(f"no watching framer for {type(current).__name__}")
    client.ctx.framer = framer
    return framer
