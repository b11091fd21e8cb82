"""tests/wire104.py against frames written by hand from IEC 60870-5-104/-101, plus one loopback master."""

import asyncio
from datetime import datetime

import pytest
import pytest_twisted

from gateway.aio import as_deferred
from tests import wire104 as w
from tests.wire104 import WireError


def h(text: str) -> bytes:
    """Bytes from spaced hex, the way the standard's examples print them."""
    return bytes.fromhex(text)


NOV30 = "D5 DD 22 0C 3E 0B 1A"  # 2026-11-30 (Monday) 12:34:56.789


def test_u_and_s_frames_match_the_standard() -> None:
    """STARTDT act is 68 04 07 00 00 00 and an S-frame for N(R)=3 is 68 04 01 00 06 00."""
    assert w.u_frame("STARTDT_ACT") == h("68 04 07 00 00 00")
    assert w.u_frame("TESTFR_CON") == h("68 04 83 00 00 00")
    assert w.s_frame(3) == h("68 04 01 00 06 00")
    (start, stop), rest = w.split_apdus(h("68 04 07 00 00 00 68 04 23 00 00 00"))
    assert (start.kind, start.u, stop.u, rest) == ("U", "STARTDT_ACT", "STOPDT_CON", b"")
    (s,), _ = w.split_apdus(h("68 04 01 00 06 00"))
    assert (s.kind, s.rsn, s.ssn) == ("S", 3, None)


def test_sequence_numbers_span_two_octets() -> None:
    """N(S)=300 and N(R)=32767 encode as 58 02 FE FF and decode back."""
    frame = w.i_frame(300, 32767, h("64 01 06 00 01 00 00 00 00 14"))
    assert frame[:6] == h("68 0E 58 02 FE FF")
    (apdu,), _ = w.split_apdus(frame)
    assert (apdu.kind, apdu.ssn, apdu.rsn, apdu.raw) == ("I", 300, 32767, frame)


def test_interrogation_command_decodes() -> None:
    """C_IC_NA_1 activation to CA 1 decodes as type 100, cot 6, ca 1, ioa 0, QOI 20."""
    (apdu,), rest = w.split_apdus(h("68 0E 00 00 00 00 64 01 06 00 01 00 00 00 00 14"))
    a = apdu.asdu
    assert rest == b"" and (apdu.ssn, apdu.rsn) == (0, 0)
    assert (a.type_id, a.type_name, a.cot, a.ca, a.oa, a.count, a.sq) == (100, "C_IC_NA_1", 6, 1, 0, 1, False)
    assert (a.objects[0].ioa, a.objects[0].qualifier) == (0, 20)
    assert w.asdu(100, 6, 1, [(0, w.qoi())]) == h("64 01 06 00 01 00 00 00 00 14")


def test_short_float_gi_answer_decodes() -> None:
    """M_ME_NC_1 with cot 20 carries 12.5 at IOA 0x000102 with QDS 0."""
    (apdu,), _ = w.split_apdus(h("68 12 0A 00 04 00  0D 01 14 00 01 00  02 01 00  00 00 48 41  00"))
    a = apdu.asdu
    assert (apdu.ssn, apdu.rsn, a.type_name, a.cot) == (5, 2, "M_ME_NC_1", 20)
    assert (a.objects[0].ioa, a.objects[0].value, a.objects[0].quality, a.objects[0].time) == (0x102, 12.5, 0, None)


def test_measured_values_and_quality_bits() -> None:
    """NVA divides by 32768, SVA is signed, DIQ keeps state 0..3 apart from its quality bits."""
    nva = w.decode_asdu(h("09 01 03 00 01 00 01 00 00 00 40 01")).objects[0]
    sva = w.decode_asdu(h("0B 01 03 00 01 00 01 00 00 FF FF 80")).objects[0]
    diq = w.decode_asdu(h("03 01 03 00 01 00 01 00 00 C2")).objects[0]
    assert (nva.value, nva.quality) == (0.5, 0x01)
    assert (sva.value, sva.quality) == (-1, 0x80)
    assert (diq.value, diq.quality) == (2, 0xC0)


def test_timed_single_point_decodes_cp56() -> None:
    """M_SP_TB_1 carries its CP56Time2a: fields, day of week and the datetime they mean."""
    a = w.decode_asdu(h(f"1E 01 03 00 01 00 0A 00 00 01 {NOV30}"))
    o = a.objects[0]
    assert (a.type_name, a.cot, o.ioa, o.value, o.quality) == ("M_SP_TB_1", 3, 10, True, 0)
    t = o.time
    assert (t.ms, t.minute, t.hour, t.day, t.dow, t.month, t.year, t.iv, t.su) == (
        56789, 34, 12, 30, 1, 11, 26, False, False)
    assert t.datetime() == datetime(2026, 11, 30, 12, 34, 56, 789000)
    assert w.cp56(datetime(2026, 11, 30, 12, 34, 56, 789000)) == h(NOV30)


def test_invalid_and_absurd_times() -> None:
    """The IV bit decodes; an all-0xFF time is invalid and has no datetime."""
    iv = w.decode_asdu(h("1E 01 03 00 01 00 0A 00 00 00 D5 DD A2 0C 3E 0B 1A")).objects[0].time
    assert iv.iv and iv.minute == 34 and iv.datetime() == datetime(2026, 11, 30, 12, 34, 56, 789000)
    junk = w.decode_asdu(h("1E 01 03 00 01 00 0A 00 00 00") + b"\xff" * 7).objects[0].time
    assert junk.iv and junk.su and junk.ms == 65535 and junk.month == 15
    with pytest.raises(ValueError):
        junk.datetime()
    assert w.cp56_raw(0, 0, 0, 31, 2, 26) == h("00 00 00 00 1F 02 1A")
    with pytest.raises(ValueError):
        w.decode_cp56(w.cp56_raw(0, 0, 0, 31, 2, 26)).datetime()


def test_setpoint_confirmation_bits() -> None:
    """C_SE_NC_1 with S/E=1: select True, QL, P/N and T bits of the COT octet."""
    a = w.decode_asdu(h("32 01 C7 03 01 00 01 62 00 00 00 7A C3 85"))
    o = a.objects[0]
    assert (a.cot, a.negative, a.test, a.oa) == (7, True, True, 3)
    assert (o.ioa, o.value, o.select, o.qualifier) == (0x6201, -250.0, True, 5)


def test_single_point_sequence() -> None:
    """SQ=1 with three M_SP_NA_1 gives three objects at consecutive IOAs."""
    a = w.decode_asdu(h("01 83 14 00 01 00 10 00 00 01 00 81"))
    assert (a.sq, a.count) == (True, 3)
    assert [(o.ioa, o.value, o.quality) for o in a.objects] == [(16, True, 0), (17, False, 0), (18, True, 0x80)]
    assert w.asdu(1, 20, 1, [(16, b"\x01"), (17, b"\x00"), (18, b"\x81")], sq=True) == a.raw


def test_counter_status_octet() -> None:
    """BCR: signed 32-bit value, sequence number bits 0..4, CY/CA/IV bits on top."""
    o = w.decode_asdu(h("0F 01 25 00 01 00 00 10 00 FE FF FF FF E3")).objects[0]
    assert (o.value, o.sequence, o.quality, o.extra) == (-2, 3, 0xE0, {"cy": True, "ca": True, "iv": True})


def test_commands_and_system_elements() -> None:
    """SCO/DCO bits, COI, QCC, clock sync, test command and read command decode."""
    sc = w.decode_asdu(w.asdu(45, 6, 1, [(5, w.sco(True, select=True, qu=1))])).objects[0]
    assert w.sco(True, select=True, qu=1) == b"\x85" and (sc.value, sc.select, sc.qualifier) == (True, True, 1)
    dc = w.decode_asdu(w.asdu(59, 6, 1, [(5, w.dco(1) + w.cp56_raw(0, 1, 2, 3, 4, 5))])).objects[0]
    assert (dc.value, dc.select, dc.qualifier, dc.time.day) == (1, False, 0, 3)
    ei = w.decode_asdu(h("46 01 04 00 01 00 00 00 00 82")).objects[0]
    assert (ei.qualifier, ei.extra) == (2, {"changed_parameters": True})
    assert w.qcc(5, 1) == b"\x45" and w.decode_asdu(w.asdu(101, 6, 1, [(0, w.qcc())])).objects[0].qualifier == 5
    cs = w.decode_asdu(h(f"67 01 06 00 01 00 00 00 00 {NOV30}")).objects[0]
    assert cs.value is None and cs.time.year == 26
    ts = w.decode_asdu(h(f"6B 01 06 00 01 00 00 00 00 34 12 {NOV30}")).objects[0]
    assert ts.value == 0x1234 and ts.time.hour == 12
    rd = w.decode_asdu(h("66 01 05 00 01 00 01 02 03"))
    assert rd.type_name == "C_RD_NA_1" and rd.objects[0].ioa == 0x030201
    assert set(w.TYPE_IDS.values()) == set(w.LAYOUTS) and w.TYPE_IDS["C_SE_TC_1"] == 63


def test_malformed_asdus_raise() -> None:
    """Truncated, padded and empty ASDUs raise WireError; an unknown type decodes its header only."""
    for bad in ("0D 01 14 00 01 00 02 01 00 00 00 48 41", "0D 01 14 00 01 00 02 01 00 00 00 48 41 00 00",
                "01 00 14 00 01 00", "01 01 14 00 01", "01 83 14 00 01 00 10 00 00 01 00"):
        with pytest.raises(WireError):
            w.decode_asdu(h(bad))
    a = w.decode_asdu(h("C8 01 03 00 07 00 AA BB"))
    assert (a.type_name, a.objects, a.ca, a.cot) == ("UNKNOWN_200", [], 7, 3)


def test_setpoint_round_trip() -> None:
    """asdu() + setpoint_float() decode back to the same fields."""
    a = w.decode_asdu(w.asdu(50, 6, 1, [(0x6201, w.setpoint_float(-250.0, select=True))], oa=3))
    assert (a.type_id, a.type_name, a.cot, a.ca, a.oa, a.negative, a.test) == (50, "C_SE_NC_1", 6, 1, 3, False, False)
    o = a.objects[0]
    assert (o.ioa, o.value, o.select, o.qualifier) == (0x6201, -250.0, True, 0)
    assert w.setpoint_normalized(1.0) == h("FF 7F 00") and w.setpoint_normalized(-1.0) == h("00 80 00")
    n = w.decode_asdu(w.asdu(48, 6, 1, [(1, w.setpoint_normalized(0.25))])).objects[0]
    s = w.decode_asdu(w.asdu(62, 6, 1, [(1, w.setpoint_scaled(-300, ql=2) + w.cp56(datetime(2030, 1, 2)))]))
    assert n.value == 0.25 and (s.objects[0].value, s.objects[0].qualifier, s.objects[0].time.year) == (-300, 2, 30)


def test_split_keeps_the_incomplete_rest() -> None:
    """A buffer holding 2.5 APDUs yields 2 of them and returns the half as the rest."""
    one = h("68 0E 00 00 00 00 64 01 06 00 01 00 00 00 00 14")
    apdus, rest = w.split_apdus(one + w.s_frame(1) + one[:7])
    assert [a.kind for a in apdus] == ["I", "S"] and rest == one[:7]
    assert w.split_apdus(h("68")) == ([], h("68"))


def test_framing_errors_raise() -> None:
    """A start octet other than 0x68, a length outside 4..253 reserved control bits or an unknown U code raise WireError."""
    for bad in ("69 04 07 00 00 00", "68 03 07 00 00", "68 FE", "68 04 05 00 00 00", "68 04 00 00 00 00",
                "68 04 01 00 07 00", "68 04 03 00 00 00"):
        with pytest.raises(WireError):
            w.split_apdus(h(bad))


async def _loopback() -> None:
    conn: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Future()
    server = await asyncio.start_server(lambda r, wr: conn.set_result((r, wr)), "127.0.0.1", 0)
    master = w.RawMaster()
    try:
        await master.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        outstation, out = await asyncio.wait_for(conn, 5)
        starting = asyncio.ensure_future(master.startdt())
        assert await asyncio.wait_for(outstation.readexactly(6), 5) == w.u_frame("STARTDT_ACT")
        out.write(w.u_frame("STARTDT_CON"))
        await starting
        out.write(w.i_frame(0, 0, w.asdu(1, 3, 1, [(7, b"\x01")])) + w.u_frame("TESTFR_ACT"))
        got = await master.wait_for(lambda a: a.kind == "I")
        assert (got.asdu.type_name, got.asdu.objects[0].value) == ("M_SP_NA_1", True)
        assert await asyncio.wait_for(outstation.readexactly(6), 2) == w.u_frame("TESTFR_CON")
        assert await asyncio.wait_for(outstation.readexactly(6), 2) == w.s_frame(1)  # t2 after 0.5 s
        master.pause_reading()
        out.write(w.i_frame(1, 0, w.asdu(1, 3, 1, [(8, b"\x00")])))
        await asyncio.sleep(0.8)
        assert len(master.received) == 3 and master.rsn == 1  # STARTDT con, I, TESTFR act
        master.resume_reading()
        assert (await master.wait_for(lambda a: a.kind == "I")).ssn == 1
        assert await asyncio.wait_for(outstation.readexactly(6), 2) == w.s_frame(2)
        assert master.errors == [] and [a.objects[0].ioa for a in master.asdus()] == [7, 8]
        assert [a.ssn for a in await master.collect(lambda a: a.kind == "I", 2, timeout=1)] == [0, 1]
        with pytest.raises(asyncio.TimeoutError, match="U TESTFR_ACT"):
            await master.wait_for(lambda a: a.kind == "I", timeout=0.1)
        master.mark()
        assert master.asdus() == [] and len(master.asdus(since_mark=False)) == 2
        out.write(w.i_frame(2, 0, h("0D 01 14 00 01 00 02 01 00")))  # M_ME_NC_1 without its element
        bad = await master.wait_for(lambda a: a.kind == "I")
        assert bad.asdu is None and master.rsn == 3 and "M_ME_NC_1" in master.errors[0]
        out.close()
        with pytest.raises(ConnectionError):
            await master.wait_for(lambda a: False, timeout=2)
        assert master.closed
    finally:
        await master.close()
        server.close()


@pytest_twisted.ensureDeferred
async def test_raw_master_loopback() -> None:
    """RawMaster: STARTDT, records I-frames, answers TESTFR, acks after t2, stalls on pause, survives bad ASDUs."""
    await as_deferred(_loopback())
