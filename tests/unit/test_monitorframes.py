"""Monitored information objects decoded from hand-built octets (IEC 60870-5-104 / -101 layouts)."""

import datetime
import struct

import pytest
from hat.drivers.iec60870.encodings import iec104 as enc

from gateway.iec104.monitorframes import FrameError, MonitorObject, monitor_objects
from gateway.northbound.iec104.asdus import InfoObject, cause, element, pack
from gateway.northbound.iec104.section import PointMap

CP56 = bytes([0xE8, 0x03, 0x05, 0x0A, 0x3F, 0x03, 0x1A])  # 1.000 s, 10:05, day 31 (dow 1), March, 2026


def apdu(asdu: bytes) -> bytes:
    """An I-frame around ``asdu`` (send and receive numbers 0)."""
    return bytes([0x68, len(asdu) + 4, 0, 0, 0, 0]) + asdu


def ioa(number: int) -> bytes:
    return number.to_bytes(3, "little")


def test_a_gi_answer_gives_every_object_with_value_and_quality() -> None:
    """Three single points at COT 20: values, IV/NT flags, common address; the cause named as c104 names it."""
    frame = apdu(bytes([1, 3, 20, 0, 7, 0]) + ioa(4) + b"\x01" + ioa(5) + b"\x00" + ioa(6) + b"\xc1")
    objects = monitor_objects(frame)
    assert [(o.ioa, o.type, o.cot, o.value, o.quality) for o in objects] == [
        (4, "M_SP_NA_1", "INTERROGATED_BY_STATION", True, frozenset()),
        (5, "M_SP_NA_1", "INTERROGATED_BY_STATION", False, frozenset()),
        (6, "M_SP_NA_1", "INTERROGATED_BY_STATION", True, frozenset({"IV", "NT"}))]
    assert {o.common_address for o in objects} == {7}


def test_tagged_float_and_counter_carry_value_and_time() -> None:
    """M_ME_TF_1 (float, QDS OV, CP56Time2a) and M_IT_NA_1 (signed count, carry) at their causes."""
    tagged = monitor_objects(apdu(bytes([36, 1, 3, 0, 1, 0]) + ioa(16385) + struct.pack("<f", -12.5) + b"\x01" + CP56))
    assert tagged == [MonitorObject(1, 16385, "M_ME_TF_1", "SPONTANEOUS", -12.5, frozenset({"OV"}),
                                    datetime.datetime(2026, 3, 31, 10, 5, 1))]
    [count] = monitor_objects(apdu(bytes([15, 1, 37, 0, 1, 0]) + ioa(25601) + struct.pack("<i", -5) + b"\x20"))
    assert (count.type, count.cot, count.value, count.quality) == ("M_IT_NA_1", "REQUESTED_BY_GENERAL_COUNTER", -5,
                                                                  frozenset({"CY"}))


def test_a_sequence_numbers_the_objects_from_the_first_ioa() -> None:
    """SQ = 1: one IOA, then consecutive elements (normalized -0.5, 0.25)."""
    frame = apdu(bytes([9, 0x82, 20, 0, 1, 0]) + ioa(100) + struct.pack("<h", -16384) + b"\x00"
                 + struct.pack("<h", 8192) + b"\x00")
    assert [(o.ioa, o.value) for o in monitor_objects(frame)] == [(100, -0.5), (101, 0.25)]


def test_other_frames_give_nothing_and_broken_ones_raise() -> None:
    """S-frames, confirmations and end of initialisation give no objects; a short or mislabelled frame is a FrameError."""
    assert monitor_objects(bytes([0x68, 4, 1, 0, 2, 0])) == []
    assert monitor_objects(apdu(bytes([100, 1, 7, 0, 1, 0]) + ioa(0) + b"\x14")) == []
    assert monitor_objects(apdu(bytes([70, 1, 4, 0, 1, 0]) + ioa(0) + b"\x00")) == []
    with pytest.raises(FrameError, match="2 object"):
        monitor_objects(apdu(bytes([1, 2, 20, 0, 1, 0]) + ioa(4) + b"\x01"))
    with pytest.raises(FrameError, match="not an APDU"):
        monitor_objects(bytes([0x68, 9, 0, 0]))


def test_the_outstation_encoding_reads_back() -> None:
    """What the outstation packs (hat-drivers) decodes to the values it meant: scaled x multiplier, counter x multiplier."""
    encoder = enc.Encoder()
    scaled = PointMap(point="d.t", ioa=16387, type="M_ME_NB_1", multiplier=5)
    counter = PointMap(point="d.e", ioa=25601, type="M_IT_NA_1", multiplier=100)
    asdus = (pack("M_ME_NB_1", cause(20), 3, [InfoObject(16387, element("M_ME_NB_1", scaled, 21.3, 0), None)])
             + pack("M_IT_NA_1", cause(37), 3, [InfoObject(25601, element("M_IT_NA_1", counter, 5000.6, 0), None)]))
    decoded = [o for asdu in asdus for o in monitor_objects(apdu(encoder.encode_asdu(asdu)))]
    assert [(o.ioa, o.value, o.common_address) for o in decoded] == [(16387, 106, 3), (25601, 500060, 3)]
