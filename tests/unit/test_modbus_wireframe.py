"""wireframe: pymodbus' framers fed hand-built frames keep the reply's bytes, note what they skip, never raise."""

import pytest
from pymodbus.framer import FramerRTU

from drivers.modbus.wireframe import KeepingDecoder, Undecodable, WatchingRtuFramer, WatchingSocketFramer
from tests.hostile_modbus import mbap_frame, rtu_frame

READ_REPLY = bytes.fromhex("04 04 00e6 0001")  # FC4, 2 registers


def _socket() -> WatchingSocketFramer:
    return WatchingSocketFramer(KeepingDecoder(False))


def _rtu() -> WatchingRtuFramer:
    return WatchingRtuFramer(KeepingDecoder(False))


def test_accepted_reply_carries_its_pdu_bytes() -> None:
    """The decoded reply keeps the PDU exactly as it arrived, for replycheck to judge."""
    used, reply = _socket().handleFrame(mbap_frame(7, 1, READ_REPLY), 1, 7)
    assert used == 6 + 1 + len(READ_REPLY)
    assert reply is not None and reply.wire == READ_REPLY and reply.registers == [230, 1]
    assert (reply.dev_id, reply.transaction_id) == (1, 7)


def test_late_reply_is_skipped_and_the_right_one_taken() -> None:
    """A reply for an earlier transaction ahead of the right one is noted and passed over."""
    framer = _socket()
    stale = mbap_frame(6, 1, bytes.fromhex("04 04 7777 7777"))
    _, reply = framer.handleFrame(stale + mbap_frame(7, 1, READ_REPLY), 1, 7)
    assert reply is not None and reply.wire == READ_REPLY
    assert framer.heard.skipped == [("transaction", "a reply for transaction 6")]


def test_reply_from_another_unit_is_noted() -> None:
    """A frame from another unit id is skipped (pymodbus' rule) and recorded under ``unit``."""
    framer = _socket()
    assert framer.handleFrame(mbap_frame(7, 2, READ_REPLY), 1, 7)[1] is None
    assert framer.heard.skipped == [("unit", "a reply from unit 2")]


def test_undecodable_pdu_is_returned_not_raised() -> None:
    """A PDU pymodbus cannot parse (byte count beyond the frame) comes back as Undecodable instead of raising."""
    pdu = bytes.fromhex("04 08 0001")
    _, reply = _socket().handleFrame(mbap_frame(7, 1, pdu), 1, 7)
    assert isinstance(reply, Undecodable) and reply.wire == pdu and reply.function_code == 4


def test_incomplete_frame_counts_unframed_bytes() -> None:
    """A frame cut short leaves its bytes counted as unframed until more arrive."""
    framer = _socket()
    frame = mbap_frame(7, 1, READ_REPLY)
    assert framer.handleFrame(frame[:-3], 1, 7) == (0, None)
    assert framer.heard.unframed == len(frame) - 3


def test_rtu_bad_crc_is_noted() -> None:
    """An RTU frame with a bad CRC is dropped (pymodbus' check) and recorded under ``crc``."""
    framer = _rtu()
    frame = rtu_frame(1, READ_REPLY)
    assert framer.handleFrame(frame[:-1] + bytes([frame[-1] ^ 0xFF]), 1, 0)[1] is None
    assert framer.heard.skipped == [("crc", "a frame with a bad CRC")]


def test_rtu_reply_from_another_slave_is_noted() -> None:
    """An RTU frame with a good CRC from another slave address is skipped and recorded under ``unit``."""
    framer = _rtu()
    assert framer.handleFrame(rtu_frame(2, READ_REPLY), 1, 0)[1] is None
    assert framer.heard.skipped == [("unit", "a reply from unit 2")]
    _, reply = framer.handleFrame(rtu_frame(1, READ_REPLY), 1, 0)
    assert reply is not None and reply.wire == READ_REPLY


def test_an_exception_in_frame_hunting_drops_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever pymodbus' frame decoding raises on garbage is contained: the buffer is dropped and noted."""
    def explode(self: FramerRTU, data: bytes) -> tuple[int, int, int, bytes]:
        raise IndexError("garbage")

    monkeypatch.setattr(FramerRTU, "decode", explode)
    framer = _rtu()
    assert framer.handleFrame(b"\x01\x02\x03\x04\x05", 1, 0) == (5, None)
    assert framer.heard.skipped == [("unframed", "5 byte(s) of garbage")]
