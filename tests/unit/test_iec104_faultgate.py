"""The IEC 104 simulator's fault relay on in-memory transports: a left-out ACT_TERM renumbers the
station's frames and maps the master's acknowledgements back (across the 15-bit wrap), an idle
master's acknowledgement is completed for the station, types are swapped only in the monitor
direction, and a stall stops reading both sides. Frames are built here from the standard's octets."""

import struct

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from drivers.iec104.sim.faultgate import FaultGate, Relay, Renumbering, SEQ_MODULO

C_DC_NA_1, M_SP_TB_1, M_DP_TB_1, M_ME_NC_1 = 46, 30, 31, 13
SPONTANEOUS, ACT_CON, ACT_TERM = 3, 7, 10


def i_frame(send_seq: int, recv_seq: int, type_id: int, cause: int, element: bytes = b"\x01") -> bytes:
    asdu = bytes([type_id, 1, cause, 0, 1, 0]) + (5).to_bytes(3, "little") + element
    return bytes([0x68, 4 + len(asdu)]) + struct.pack("<HH", send_seq << 1, recv_seq << 1) + asdu


def s_frame(recv_seq: int) -> bytes:
    return bytes([0x68, 4, 1, 0]) + struct.pack("<H", recv_seq << 1)


def send_seqs(data: bytes) -> list[int]:
    """N(S) of every I-frame in ``data``."""
    seqs, at = [], 0
    while at < len(data):
        if data[at + 2] & 1 == 0:
            seqs.append(struct.unpack_from("<H", data, at + 2)[0] >> 1)
        at += 2 + data[at + 1]
    return seqs


def recv_seq_of(frame: bytes) -> int:
    return struct.unpack_from("<H", frame, 4)[0] >> 1


def test_a_left_out_frame_is_skipped_in_the_masters_numbering_and_acknowledged_with_the_next() -> None:
    numbering = Renumbering()
    assert [numbering.to_master(n) for n in range(5)] == [0, 1, 2, 3, 4]
    assert numbering.leave_out(5) == 5
    assert numbering.to_master(6) == 5 and numbering.to_master(7) == 6
    assert numbering.to_station(3) == 3  # acknowledges what came before the gap only
    assert numbering.to_station(5) == 6  # has 0..4: the left-out 5 is covered
    assert numbering.to_station(7) == 8


def test_renumbering_holds_across_the_15_bit_wrap() -> None:
    numbering = Renumbering()
    numbering.leave_out(SEQ_MODULO - 1)
    assert numbering.to_master(0) == SEQ_MODULO - 1
    assert numbering.to_station(SEQ_MODULO - 1) == 0
    assert numbering.to_master(1) == 0 and numbering.to_station(0) == 1
    numbering.leave_out(3)  # the second gap, after the wrap
    assert numbering.to_master(4) == 2 and numbering.to_station(2) == 4 and numbering.to_station(3) == 5


@pytest.fixture
def relay() -> tuple[FaultGate, Relay, StringTransport, StringTransport]:
    gate = FaultGate(Clock(), "127.0.0.1", 2404, 1)
    gate.faults.stalled = True  # built without dialling the c104 server
    relay = gate.buildProtocol(None)
    master, station = StringTransport(), StringTransport()
    relay.makeConnection(master)
    relay.station_connected(station)
    gate.faults.stalled = False
    relay.set_stalled(False)
    return gate, relay, master, station


def test_an_act_term_is_left_out_and_later_frames_renumbered(relay) -> None:
    gate, relay, master, station = relay
    gate.faults.no_act_term = True
    relay.dataReceived(s_frame(0))
    relay.from_station(i_frame(0, 0, C_DC_NA_1, ACT_CON) + i_frame(1, 0, C_DC_NA_1, ACT_TERM)
                       + i_frame(2, 0, M_SP_TB_1, SPONTANEOUS, b"\x01" + bytes(7)))
    assert send_seqs(master.value()) == [0, 1]
    second = len(i_frame(0, 0, C_DC_NA_1, ACT_CON))
    assert master.value()[second + 6 + 2] == SPONTANEOUS  # the ACT_TERM is the one missing
    station.clear()
    relay.dataReceived(s_frame(2))  # the master has both frames it got
    assert recv_seq_of(station.value()) == 3


def test_a_left_out_frame_after_the_master_acknowledged_everything_is_acknowledged_for_it(relay) -> None:
    """Nothing would make the master acknowledge it: the relay does, else the station's t1 runs out."""
    gate, relay, master, station = relay
    gate.faults.no_act_term = True
    relay.from_station(i_frame(0, 0, C_DC_NA_1, ACT_CON))
    relay.dataReceived(s_frame(1))
    station.clear()
    relay.from_station(i_frame(1, 0, C_DC_NA_1, ACT_TERM))
    assert station.value() == s_frame(2)


def test_wrong_types_change_monitor_frames_only(relay) -> None:
    gate, relay, master, station = relay
    gate.faults.wrong_types = True
    relay.from_station(i_frame(0, 0, M_SP_TB_1, SPONTANEOUS, b"\x01" + bytes(7))
                       + i_frame(1, 0, M_ME_NC_1, SPONTANEOUS, bytes(5)) + i_frame(2, 0, C_DC_NA_1, ACT_CON))
    frames = master.value()
    assert [frames[6], frames[6 + 23], frames[6 + 23 + 20]] == [M_DP_TB_1, 15, C_DC_NA_1]
    relay.dataReceived(i_frame(0, 3, C_DC_NA_1, 6))
    assert station.value()[6] == C_DC_NA_1


def test_a_stall_stops_reading_both_sides_and_counts_nothing_lost(relay) -> None:
    gate, relay, master, station = relay
    gate.stall(True)
    assert master.producerState == station.producerState == "paused"
    gate.stall(False)
    assert master.producerState == station.producerState == "producing"
    gate.enqueued(3)
    relay.from_station(i_frame(0, 0, M_SP_TB_1, SPONTANEOUS, b"\x01" + bytes(7)))
    assert gate.in_flight() == 2


def test_a_broken_frame_makes_the_relay_transparent(relay) -> None:
    gate, relay, master, station = relay
    relay.dataReceived(b"\x00\x01\x02")
    relay.dataReceived(b"\x03")
    assert station.value() == b"\x00\x01\x02\x03"
