"""Is this reply the answer to that request? Pure: the bytes of both in, a typed failure or None out.

A Modbus reply is only worth decoding once it is known to answer the request that was sent
(convention 9). pymodbus 3.16.1 checks part of that itself; this module adds what it lacks and
judges the PDU bytes as they arrived, not pymodbus' decoded objects (``wireframe`` keeps them).

What pymodbus checks (read in ``.venv/lib/python3.11/site-packages/pymodbus``):

* ``framer/rtu.py`` ``FramerRTU.decode``: the CRC. A frame with a bad CRC is dropped and the
  request waits for its timeout.
* ``framer/base.py`` ``FramerBase.handleFrame``: a frame from another unit id is skipped, *unless
  the request went to unit 0*; a frame for another transaction id is skipped, *unless either id is
  0*. Skipped frames leave the request waiting for its timeout (so a late reply for an earlier
  transaction is ignored on MBAP, while RTU, which has no transaction id, cannot tell).
* ``transaction/transaction.py`` ``TransactionManager.execute``: the same two comparisons again,
  with the same exemptions (raises ``ModbusIOException``).
* ``framer/socket.py`` ``FramerSocket.decode``: the MBAP protocol id must be 0 (else the frame
  is never taken: timeout); the MBAP length delimits the frame, nothing compares it with the PDU.
* ``pdu/decoders.py`` ``DecodePDU.decode``: picks the response class from the *reply's* function
  code, never the request's: an FC3 reply to FC4 decodes as holding registers, an FC1 bit reply
  as bits. An exception reply (FC | 0x80) becomes ``ExceptionResponse`` whatever FC it names.
  A PDU it cannot parse gives None, and ``handleFrame`` then raises out of ``data_received``.
* ``pdu/register_message.py`` ``ReadHoldingRegistersResponse.decode``: only that the byte count
  is below the PDU length; it never compares it with the count asked for, and an odd byte count
  silently loses its last byte. ``pdu/bit_message.py`` ``ReadCoilsResponse.decode`` ignores the
  byte count altogether. Write replies (FC5, 6, 15, 16) are decoded, never compared with the write.

What this module adds:

* function code: the request's, or the request's | 0x80 with exactly one exception-code byte;
* unit id equal to the request's, unit 0 included; on MBAP the transaction id equal, 0 included;
* reads (FC1-4): byte count equal to 2 x count (registers) or ceil(count / 8) (bits), and exactly
  that many data bytes after it;
* writes: FC5 and FC6 echo the request PDU exactly; FC15 and FC16 echo its address and quantity.

The CRC and the skipping of frames for other units or transactions stay pymodbus'; ``wireframe``
notes what it skipped so that the timeout that follows is counted under the right cause.
"""

from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import BadReply

_READS_REGISTERS = (3, 4)
_READS_BITS = (1, 2)
_ECHOES_WHOLE = (5, 6)
_ECHOES_HEAD = (15, 16)


@dataclass(frozen=True, slots=True)
class Frame:
    """One Modbus message as it was on the wire."""

    unit: int
    transaction: int  # MBAP transaction id; RTU has none (0)
    pdu: bytes  # function code, then data


def check_reply(device: str, request: Frame, reply: Frame, mbap: bool) -> BadReply | None:
    """None if ``reply`` answers ``request``; else a ``BadReply`` naming the check that failed.

    An exception reply that passes is the device's own answer (the caller raises
    ``DeviceException``); for function codes other than 1-6, 15 and 16 only the function code,
    unit and transaction are checked.
    """
    fc = request.pdu[0]

    def bad(cause: str, detail: str) -> BadReply:
        return BadReply(device, cause, f"reply to FC{fc} (unit {request.unit}, address "
                                       f"{_address(request.pdu)}): {detail}")

    if reply.unit != request.unit:
        return bad("unit", f"unit id {reply.unit}, expected {request.unit}")
    if mbap and reply.transaction != request.transaction:
        return bad("transaction", f"transaction id {reply.transaction}, expected {request.transaction}")
    pdu = reply.pdu
    if not pdu:
        return bad("length", "empty PDU")
    if pdu[0] == fc | 0x80:
        return None if len(pdu) == 2 else bad("length", f"exception reply of {len(pdu)} bytes, expected 2")
    if pdu[0] != fc:
        got = f"exception reply for FC{pdu[0] & 0x7F}" if pdu[0] & 0x80 else f"FC{pdu[0]}"
        return bad("function_code", f"{got}, expected FC{fc}")
    if fc in _READS_REGISTERS or fc in _READS_BITS:
        return _check_read(request.pdu, pdu, bad)
    if fc in _ECHOES_WHOLE and pdu != request.pdu[:5]:
        return bad("echo", f"echo {pdu.hex(' ')}, expected {request.pdu[:5].hex(' ')}")
    if fc in _ECHOES_HEAD and pdu != request.pdu[:5]:
        return bad("echo", f"{pdu.hex(' ')}, expected address and quantity {request.pdu[:5].hex(' ')}")
    return None


def _check_read(request: bytes, pdu: bytes, bad: Callable[[str, str], BadReply]) -> BadReply | None:
    count = int.from_bytes(request[3:5], "big")
    registers = request[0] in _READS_REGISTERS
    expected = 2 * count if registers else (count + 7) // 8
    what = f"{count} {'register' if registers else 'bit'}{'s' if count != 1 else ''}"
    if len(pdu) < 2:
        return bad("length", "no byte count")
    if pdu[1] != expected:
        return bad("byte_count", f"byte count {pdu[1]}, expected {expected} for {what}")
    if len(pdu) != 2 + expected:
        return bad("length", f"{len(pdu) - 2} data bytes after byte count {expected}")
    return None


def _address(pdu: bytes) -> int | str:
    return int.from_bytes(pdu[1:3], "big") if len(pdu) >= 3 else "?"
