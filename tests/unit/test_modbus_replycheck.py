"""replycheck: which replies answer which requests, judged on bytes written here by hand from the spec."""

import pytest

from drivers.modbus.replycheck import Frame, check_reply

READ_FC4 = Frame(1, 7, bytes.fromhex("04 0000 0005"))  # 5 input registers from 0
READ_FC1 = Frame(1, 7, bytes.fromhex("01 0010 000a"))  # 10 coils from 16: 2 data bytes
WRITE_FC6 = Frame(1, 7, bytes.fromhex("06 000a 01f4"))
WRITE_FC5 = Frame(1, 7, bytes.fromhex("05 0003 ff00"))
WRITE_FC16 = Frame(1, 7, bytes.fromhex("10 000a 0002 04 0001 0002"))
TEN = bytes(range(10))

GOOD = [
    ("fc4", READ_FC4, Frame(1, 7, b"\x04\x0a" + TEN)),
    ("fc1", READ_FC1, Frame(1, 7, bytes.fromhex("01 02 ff 03"))),
    ("exception", READ_FC4, Frame(1, 7, bytes.fromhex("84 02"))),
    ("fc6 echo", WRITE_FC6, Frame(1, 7, WRITE_FC6.pdu)),
    ("fc5 echo", WRITE_FC5, Frame(1, 7, WRITE_FC5.pdu)),
    ("fc16 head", WRITE_FC16, Frame(1, 7, WRITE_FC16.pdu[:5])),
]

BAD = [
    ("fc3 reply to fc4", READ_FC4, Frame(1, 7, b"\x03\x0a" + TEN), "function_code"),
    ("fc1 bits to fc4", READ_FC4, Frame(1, 7, bytes.fromhex("01 01 77")), "function_code"),
    ("exception for fc3", READ_FC4, Frame(1, 7, bytes.fromhex("83 02")), "function_code"),
    ("exception too long", READ_FC4, Frame(1, 7, bytes.fromhex("84 02 00")), "length"),
    ("exception without code", READ_FC4, Frame(1, 7, bytes.fromhex("84")), "length"),
    ("other unit", READ_FC4, Frame(2, 7, b"\x04\x0a" + TEN), "unit"),
    ("other transaction", READ_FC4, Frame(1, 8, b"\x04\x0a" + TEN), "transaction"),
    ("transaction 0", READ_FC4, Frame(1, 0, b"\x04\x0a" + TEN), "transaction"),
    ("short byte count", READ_FC4, Frame(1, 7, b"\x04\x08" + TEN[:8]), "byte_count"),
    ("long byte count", READ_FC4, Frame(1, 7, b"\x04\x0c" + TEN + b"\0\0"), "byte_count"),
    ("odd byte count", READ_FC4, Frame(1, 7, b"\x04\x0b" + TEN + b"\0"), "byte_count"),
    ("data short of byte count", READ_FC4, Frame(1, 7, b"\x04\x0a" + TEN[:8]), "length"),
    ("data beyond byte count", READ_FC4, Frame(1, 7, b"\x04\x0a" + TEN + b"\0\0"), "length"),
    ("no byte count", READ_FC4, Frame(1, 7, b"\x04"), "length"),
    ("empty pdu", READ_FC4, Frame(1, 7, b""), "length"),
    ("bits short", READ_FC1, Frame(1, 7, bytes.fromhex("01 01 ff")), "byte_count"),
    ("fc6 echo other address", WRITE_FC6, Frame(1, 7, bytes.fromhex("06 000b 01f4")), "echo"),
    ("fc6 echo other value", WRITE_FC6, Frame(1, 7, bytes.fromhex("06 000a 01f5")), "echo"),
    ("fc6 echo short", WRITE_FC6, Frame(1, 7, bytes.fromhex("06 000a")), "echo"),
    ("fc16 reply to fc6", WRITE_FC6, Frame(1, 7, bytes.fromhex("10 000a 0001")), "function_code"),
    ("fc16 other quantity", WRITE_FC16, Frame(1, 7, bytes.fromhex("10 000a 0001")), "echo"),
    ("fc5 echo off for on", WRITE_FC5, Frame(1, 7, bytes.fromhex("05 0003 0000")), "echo"),
]


@pytest.mark.parametrize(("name", "request_frame", "reply"), GOOD, ids=[c[0] for c in GOOD])
def test_replies_that_answer_their_request_pass(name: str, request_frame: Frame, reply: Frame) -> None:
    """A reply with the request's function code (or its exception), unit, transaction and exact size passes."""
    assert check_reply("meter", request_frame, reply, mbap=True) is None


@pytest.mark.parametrize(("name", "request_frame", "reply", "cause"), BAD, ids=[c[0] for c in BAD])
def test_each_malformation_is_refused_under_its_cause(name: str, request_frame: Frame, reply: Frame,
                                                      cause: str) -> None:
    """Every malformed reply is refused with the cause it is counted under and a message naming device and FC."""
    mismatch = check_reply("meter", request_frame, reply, mbap=True)
    assert mismatch is not None and mismatch.cause == cause
    assert mismatch.device == "meter"
    assert str(mismatch).startswith(f"meter: reply to FC{request_frame.pdu[0]} (unit 1, address ")


def test_rtu_has_no_transaction_id_to_compare() -> None:
    """On RTU (no MBAP) the transaction id is not compared; the unit (slave address) still is."""
    reply = Frame(1, 0, b"\x04\x0a" + TEN)
    assert check_reply("meter", Frame(1, 0, READ_FC4.pdu), reply, mbap=False) is None
    assert check_reply("meter", Frame(2, 0, READ_FC4.pdu), reply, mbap=False).cause == "unit"


def test_unit_zero_is_compared_too() -> None:
    """A request to unit 0 (pymodbus exempts it) still refuses a reply from another unit."""
    mismatch = check_reply("meter", Frame(0, 3, READ_FC4.pdu), Frame(5, 3, b"\x04\x0a" + TEN), mbap=True)
    assert mismatch is not None and mismatch.cause == "unit" and "unit id 5, expected 0" in str(mismatch)


def test_message_says_expected_and_got() -> None:
    """The message names the device, the request's FC, unit and address, and expected vs got."""
    mismatch = check_reply("meter", READ_FC4, Frame(1, 7, b"\x03\x0a" + TEN), mbap=True)
    assert str(mismatch) == "meter: reply to FC4 (unit 1, address 0): FC3, expected FC4"
