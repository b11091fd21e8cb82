"""Frames cut out of a serial byte stream and built back, for every encoding: round trips, frames
split across reads, resynchronisation after garbage, rejections counted by reason. Expected wire
octets and the validity oracles are restated here from the encodings' layouts (CRCs from anycrc
directly), not taken from the module."""

import random
from collections.abc import Callable
from dataclasses import dataclass

import anycrc
import pytest

from drivers.serial_framed.framing import (BuildError, ChecksumField, Frame, FrameFormat, FrameFormatError,
                                           FrameScanner, LengthField, build)

CRC16_MODBUS = anycrc.Model("CRC16-MODBUS").calc
HEX = frozenset(b"0123456789ABCDEFabcdef")

# AA 55, a big-endian u16 whole-frame length at offset 2, CRC-16/MODBUS low octet first.
BIN = FrameFormat("binary", start=b"\xAA\x55", length=LengthField(offset=2, size=2),
                  checksum=ChecksumField("crc16_modbus", byteorder="little"))
# 68 L data sum8 16: L counts the data, the sum covers the data (DL/T 645, FT1.2 style).
TRAILED = FrameFormat("binary", start=b"\x68", end=b"\x16", length=LengthField(offset=1, size=1, adjust=4),
                      checksum=ChecksumField("sum8", start=2))
FIXED = FrameFormat("binary", fixed_length=8, checksum=ChecksumField("crc16_modbus", byteorder="little"))
YDT = FrameFormat("ascii_hex", start=b"~", end=b"\r")
NMEA = FrameFormat("ascii_line", start=b"$", end=b"\r\n", checksum=ChecksumField("xor8"),
                   checksum_separator=b"*")
LINES = FrameFormat("ascii_line", end=b"\r\n")
LRC_LINES = FrameFormat("ascii_line", end=b"\r", checksum=ChecksumField("lrc"), checksum_separator=b";")
FBG = FrameFormat("length_prefixed", length=LengthField(offset=0, size=10))
PREFIXED = FrameFormat("length_prefixed", start=b"#", end=b"\n", length=LengthField(offset=1, size=4),
                       checksum=ChecksumField("crc32", start=5))


def bin_payload(body: bytes) -> bytes:
    """A BIN payload whose length field already holds the right value (6 octets of framing)."""
    return (len(body) + 6).to_bytes(2, "big") + body


# A payload per format, as Frame.payload defines it, with length fields already right.
SAMPLES: dict[str, tuple[FrameFormat, bytes]] = {
    "binary": (BIN, bin_payload(b"\x01\x02\xAA\x55\x00")),
    "binary_trailer": (TRAILED, b"\x03\x10\x20\x30"),
    "binary_fixed": (FIXED, b"\x01\x03\x02\x00\x2A\xFF"),
    "ascii_hex": (YDT, bytes.fromhex("20014043") + b"\x00\x7E\x0D"),
    "ascii_line": (NMEA, b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
    "ascii_line_plain": (LINES, b"T1=21.5 T2=22.0"),
    "ascii_line_lrc": (LRC_LINES, b"ALARM 3"),
    "length_prefixed": (FBG, bytes(range(40))),
    "length_prefixed_checked": (PREFIXED, b"#\n\x00\xFF"),
}


def scan_all(fmt: FrameFormat, *chunks: bytes) -> tuple[list[Frame], FrameScanner]:
    scanner = FrameScanner(fmt)
    frames = [frame for chunk in chunks for frame in scanner.feed(chunk)]
    return frames, scanner


# --- the wire, restated -----------------------------------------------------------------------


def test_binary_frame_on_the_wire() -> None:
    """build writes start, the whole length big-endian, the payload and the CRC low octet first."""
    head = bytes.fromhex("AA5500080102")
    assert build(BIN, b"\x00\x00\x01\x02") == head + CRC16_MODBUS(head).to_bytes(2, "little")
    assert CRC16_MODBUS(head) == 0x8E15


def test_binary_frame_with_trailer_and_adjust_on_the_wire() -> None:
    """68 L data sum 16: L = frame length - 4, the sum covers only the data."""
    assert build(TRAILED, b"\x00\x10\x20\x30") == bytes.fromhex("68 03 102030 60 16")


def test_ydt1363_frame_on_the_wire() -> None:
    """VER ADR CID1 CID2 and INFO become ~20014043E00200FD3B\\r; LENGTH is computed from INFO."""
    assert build(YDT, bytes.fromhex("2001404300")) == b"~20014043E00200FD3B\r"


def test_nmea_sentence_on_the_wire() -> None:
    """The classic GGA sentence gets its published checksum 47."""
    text = b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    assert build(NMEA, text) == b"$" + text + b"*47\r\n"


def test_length_prefixed_frame_on_the_wire() -> None:
    """Ten ASCII digits count the body octets that follow."""
    assert build(FBG, b"\x01\x02\x03\x04") == b"0000000004\x01\x02\x03\x04"


def test_build_fills_the_length_field_and_the_payload_keeps_it() -> None:
    """A zero placeholder is overwritten; the scanned payload carries the real length."""
    raw = build(BIN, b"\x00\x00" + b"xyz")
    (frame,), _ = scan_all(BIN, raw)
    assert frame.payload == b"\x00\x09xyz"
    assert build(BIN, frame.payload) == raw


# --- every encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    """A built frame scans back as one frame with the same raw octets and payload."""
    fmt, payload = SAMPLES[name]
    raw = build(fmt, payload)
    frames, scanner = scan_all(fmt, raw)
    assert frames == [Frame(raw, payload)]
    assert scanner.pending == 0
    assert scanner.counters["frames"] == 1 and scanner.counters["garbage_octets"] == 0


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_a_frame_fed_one_octet_at_a_time(name: str) -> None:
    """Nothing comes out until the last octet arrives; then exactly the frame."""
    fmt, payload = SAMPLES[name]
    raw = build(fmt, payload)
    scanner = FrameScanner(fmt)
    for octet in raw[:-1]:
        assert scanner.feed(bytes([octet])) == []
    assert scanner.pending == len(raw) - 1
    assert scanner.feed(raw[-1:]) == [Frame(raw, payload)]
    assert scanner.pending == 0


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_two_frames_in_one_feed(name: str) -> None:
    """Back-to-back frames in one read come out in order."""
    fmt, payload = SAMPLES[name]
    first, second = build(fmt, payload), build(fmt, payload[:-1] + b"Z")
    frames, _ = scan_all(fmt, first + second)
    assert [frame.raw for frame in frames] == [first, second]


# --- random garbage -----------------------------------------------------------------------------


def bin_valid_at(stream: bytes, p: int) -> bool:
    """Whether a BIN frame that passes every check starts at ``p`` (the layout, restated)."""
    if stream[p:p + 2] != b"\xAA\x55" or p + 4 > len(stream):
        return False
    length = int.from_bytes(stream[p + 2:p + 4], "big")
    if not 6 <= length <= BIN.max_length or p + length > len(stream):
        return False
    frame = stream[p:p + length]
    return CRC16_MODBUS(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def ydt_valid_at(stream: bytes, p: int) -> bool:
    """Whether a YD/T 1363.3 frame that passes every check starts at ``p`` (the standard, restated)."""
    head = stream[p + 1:p + 13]
    if stream[p:p + 1] != b"~" or len(head) < 12 or not HEX.issuperset(head):
        return False
    length = int(head[8:], 16)
    lenid = length & 0xFFF
    if length >> 12 != -((lenid >> 8) + (lenid >> 4 & 15) + (lenid & 15)) & 15 or lenid % 2:
        return False
    size = 1 + 12 + lenid + 4 + 1
    frame = stream[p:p + size]
    if size > YDT.max_length or len(frame) < size or frame[-1:] != b"\r" or not HEX.issuperset(frame[1:-1]):
        return False
    return -sum(frame[1:-5]) & 0xFFFF == int(frame[-5:-1], 16)


@dataclass(frozen=True)
class Case:
    fmt: FrameFormat
    payload: Callable[[random.Random], bytes]  # a random valid payload
    corrupt: Callable[[bytes], bytes]  # a frame made to fail only its checksum
    valid_at: Callable[[bytes, int], bool]


def flip_last(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 0x01])


def flip_ydt_chksum(raw: bytes) -> bytes:
    digit = raw[-2:-1]
    return raw[:-2] + (b"1" if digit == b"0" else b"0") + raw[-1:]


CASES = {
    "binary": Case(BIN, lambda rng: b"\x00\x00" + rng.randbytes(rng.randint(0, 60)), flip_last, bin_valid_at),
    "ascii_hex": Case(YDT, lambda rng: rng.randbytes(4 + rng.randint(0, 30)), flip_ydt_chksum, ydt_valid_at),
}


def garbage(rng: random.Random, case: Case) -> bytes:
    """0..40 random octets; some hold the start octets, a frame's header, or a corrupted frame."""
    chunk = rng.randbytes(rng.randint(0, 40))
    roll = rng.random()
    if roll < 0.6:
        frame = build(case.fmt, case.payload(rng))
        planted = case.fmt.start if roll < 0.2 else frame[:rng.randint(1, len(frame) - 1)] if roll < 0.4 \
            else case.corrupt(frame)
        at = rng.randint(0, len(chunk))
        chunk = chunk[:at] + planted + chunk[at:]
    return chunk


def garbage_stream(rng: random.Random, case: Case, count: int) -> tuple[list[bytes], list[bytes]]:
    """``count`` (garbage, frame) pairs, the garbage regenerated until no valid frame starts in it,
    so that the only frames in the stream are the real ones."""
    pieces = [(garbage(rng, case), build(case.fmt, case.payload(rng))) for _ in range(count)]
    while True:
        stream, bad = b"".join(g + f for g, f in pieces), []
        offset = 0
        for index, (chunk, frame) in enumerate(pieces):
            if any(case.valid_at(stream, offset + p) for p in range(len(chunk))):
                bad.append(index)
            offset += len(chunk) + len(frame)
        if not bad:
            return [g for g, _ in pieces], [f for _, f in pieces]
        for index in bad:
            pieces[index] = (rng.randbytes(rng.randint(0, 40)), pieces[index][1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_frame_comes_out_once_through_random_garbage(name: str) -> None:
    """1,000 frames between 1,000 garbage chunks (start octets, headers, corrupted frames), fed in
    random pieces: exactly the real frames come out, in order; every garbage octet is counted."""
    case, rng = CASES[name], random.Random(1363)
    chunks, frames = garbage_stream(rng, case, 1000)
    assert all(case.valid_at(frame, 0) for frame in frames)
    stream = b"".join(g + f for g, f in zip(chunks, frames))
    scanner, found, at = FrameScanner(case.fmt), [], 0
    while at < len(stream):
        step = rng.randint(1, 300)
        found += scanner.feed(stream[at:at + step])
        at += step
        assert scanner.pending <= case.fmt.max_length + len(case.fmt.start)
    found += scanner.expire()
    assert [frame.raw for frame in found] == frames
    counters = scanner.counters
    assert counters["frames"] == 1000 and scanner.pending == 0
    assert counters["garbage_octets"] == sum(map(len, chunks))
    assert counters["bad_checksum"] > 0


# --- rejections, by reason ----------------------------------------------------------------------


def test_bad_checksum_is_counted_and_dropped() -> None:
    """A frame whose CRC fails never comes out; the good frame after it does."""
    good, bad = build(BIN, b"\x00\x00ok"), flip_last(build(BIN, b"\x00\x00no"))
    frames, scanner = scan_all(BIN, bad + good)
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_checksum"] == 1
    assert scanner.counters["garbage_octets"] == len(bad)


def test_an_oversize_length_is_counted_without_waiting_for_it() -> None:
    """A length above max_length is garbage at once: the next frame is not held back."""
    good = build(BIN, b"\x00\x00ok")
    frames, scanner = scan_all(BIN, b"\xAA\x55\x10\x01" + good)
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_length"] == 1


def test_a_length_below_the_shortest_frame_is_counted() -> None:
    """A length that leaves no room for the length field and CRC is rejected."""
    good = build(BIN, b"\x00\x00ok")
    frames, scanner = scan_all(BIN, b"\xAA\x55\x00\x05" + good)
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_length"] == 1


def test_a_missing_trailer_is_a_bad_format() -> None:
    """Where the end octet must be and is not, the candidate is rejected."""
    good = build(TRAILED, b"\x00ok")
    broken = good[:-1] + b"\x17"
    frames, scanner = scan_all(TRAILED, broken + good)
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_format"] == 1


def test_expire_counts_a_truncated_frame_and_the_next_frame_is_found() -> None:
    """The timeout drops half a frame; a complete frame fed afterwards comes out alone."""
    good = build(BIN, b"\x00\x00" + b"payload")
    scanner = FrameScanner(BIN)
    assert scanner.feed(good[:7]) == []
    assert scanner.expire() == []
    assert (scanner.counters["truncated"], scanner.counters["garbage_octets"], scanner.pending) == (1, 7, 0)
    assert scanner.feed(good) == [Frame(good, b"\x00\x0Dpayload")]


def test_expire_returns_a_frame_hidden_behind_a_false_header() -> None:
    """Noise that looks like a long frame's header holds a real reply back only until the timeout."""
    good = build(BIN, b"\x00\x00reply")
    scanner = FrameScanner(BIN)
    assert scanner.feed(b"\xAA\x55\x0F\xFF" + good) == []
    assert [frame.raw for frame in scanner.expire()] == [good]
    assert (scanner.counters["truncated"], scanner.counters["garbage_octets"], scanner.pending) == (1, 4, 0)


def test_expire_with_nothing_waiting_counts_nothing() -> None:
    """A timeout on an empty buffer is no truncated frame."""
    scanner = FrameScanner(BIN)
    assert scanner.expire() == [] and scanner.counters["truncated"] == 0


def test_fixed_length_frames_without_start_resynchronise_octet_by_octet() -> None:
    """Without start octets every position is a candidate: three garbage octets, three rejections."""
    good = build(FIXED, b"\x01\x03\x02\x00\x2A\xFF")
    frames, scanner = scan_all(FIXED, b"\x01\x03\x02" + good)
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_checksum"] == 3 and scanner.counters["garbage_octets"] == 3


def test_garbage_without_a_start_keeps_only_a_partial_start_waiting() -> None:
    """The buffer stays bounded: octets that cannot begin a frame are dropped as they arrive."""
    scanner = FrameScanner(BIN)
    assert scanner.feed(bytes(5000) + b"\xAA") == []
    assert scanner.pending == 1 and scanner.counters["garbage_octets"] == 5000
    good = build(BIN, b"\x00\x00ok")
    assert [frame.raw for frame in scanner.feed(good[1:])] == [good]


# --- YD/T 1363.3 --------------------------------------------------------------------------------


def ydt(text: bytes) -> bytes:
    """A YD/T frame around ``text`` with the right CHKSUM of exactly these characters."""
    return b"~" + text + b"%04X" % (-sum(text) & 0xFFFF) + b"\r"


def test_ydt1363_a_wrong_lchksum_is_a_bad_length() -> None:
    """LENGTH F002 (LCHKSUM should be E) is rejected even though CHKSUM is right."""
    bad, good = ydt(b"20014043F00200"), b"~20014043E00200FD3B\r"
    frames, scanner = scan_all(YDT, bad + good)
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_length"] == 1 and scanner.counters["bad_checksum"] == 0


def test_ydt1363_lower_case_hex_is_accepted() -> None:
    """Lower-case digits decode like upper-case; the CHKSUM is of the characters as sent."""
    raw = ydt(b"20014043e002ab").lower()
    frames, _ = scan_all(YDT, raw)
    assert frames == [Frame(raw, bytes.fromhex("20014043ab"))]


def test_ydt1363_a_non_hex_character_is_a_bad_format() -> None:
    """Every character between ~ and \\r must be a hex digit."""
    frames, scanner = scan_all(YDT, ydt(b"2001404GE00200"), ydt(b"20014043E0020G"))
    assert frames == [] and scanner.counters["bad_format"] == 2


def test_ydt1363_a_lenid_longer_than_info_is_rejected() -> None:
    """LENID 4 with two INFO characters puts the end where there is none; the next frame is found."""
    good = b"~20014043E00200FD3B\r"
    frames, scanner = scan_all(YDT, ydt(b"20014043C00400") + good)
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_format"] == 1


def test_ydt1363_payload_leaves_length_out() -> None:
    """VER ADR CID1 CID2 then INFO: INFO starts at payload[4], whatever its length."""
    (frame,), _ = scan_all(YDT, build(YDT, bytes.fromhex("2101464200") + bytes(range(10))))
    assert frame.payload[:4] == bytes.fromhex("21014642") and frame.payload[4:] == b"\x00" + bytes(range(10))
    assert frame.raw[9:13] == b"9016"  # LENID 22 = 0x016, LCHKSUM -(0+1+6) & 15 = 9


# --- lines ----------------------------------------------------------------------------------------


def test_nmea_with_a_wrong_checksum_resynchronises_on_the_next_dollar() -> None:
    """A sentence whose checksum fails is dropped; a sentence inside it is still found."""
    good = build(NMEA, b"GPZDA,1")
    frames, scanner = scan_all(NMEA, b"$GPXX,junk" + good + b"$GPXX*00\r\n")
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_checksum"] == 2


def test_a_bad_line_without_start_is_dropped_whole() -> None:
    """Without a start marker a line begins after an end: a bad line costs one rejection."""
    good = build(LRC_LINES, b"OK")
    frames, scanner = scan_all(LRC_LINES, b"noise;00\r" + good)
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_checksum"] == 1 and scanner.counters["garbage_octets"] == 9


def test_an_overlong_line_without_start_is_dropped_through_its_end() -> None:
    """A line longer than max_length is garbage up to its end, and its tail is no frame."""
    fmt = FrameFormat("ascii_line", end=b"\r\n", max_length=64)
    frames, scanner = scan_all(fmt, b"x" * 100, b"y" * 100 + b"\r", b"\nnext\r\n")
    assert [frame.payload for frame in frames] == [b"next"]
    assert scanner.counters["bad_length"] == 1 and scanner.counters["garbage_octets"] == 202
    assert scanner.pending == 0


def test_lines_split_anywhere_including_inside_the_terminator() -> None:
    """A \\r\\n split across two reads still ends the line once."""
    frames, _ = scan_all(LINES, b"a=1\r", b"\nb=2\r\n")
    assert [frame.payload for frame in frames] == [b"a=1", b"b=2"]


# --- length-prefixed ----------------------------------------------------------------------------


def test_length_prefixed_non_digits_are_a_bad_format() -> None:
    """A length that is not ten ASCII digits is rejected as soon as a non-digit arrives."""
    good = build(FBG, b"body")
    frames, scanner = scan_all(FBG, b"00x" + good)
    assert [frame.raw for frame in frames] == [good]
    assert scanner.counters["bad_format"] == 3


def test_length_prefixed_checksum_covers_the_body() -> None:
    """The CRC-32 after the body is checked: a flipped body octet is a bad checksum."""
    raw = build(PREFIXED, b"data")
    assert raw[:5] == b"#0004" and raw[-1:] == b"\n"
    broken = raw[:5] + b"dat\x00" + raw[9:]
    frames, scanner = scan_all(PREFIXED, broken + raw)
    assert [frame.raw for frame in frames] == [raw]
    assert scanner.counters["bad_checksum"] == 1


# --- formats and payloads that cannot work ------------------------------------------------------


@pytest.mark.parametrize(("fmt", "message"), [
    (FrameFormat("binary", start=b"\xAA"), "length field or fixed_length"),
    (FrameFormat("binary", length=LengthField(0, 1), fixed_length=8), "length field or fixed_length"),
    (FrameFormat("binary", start=b"\xAA\x55", length=LengthField(1, 2)), "overlaps the start"),
    (FrameFormat("binary", length=LengthField(0, 3)), "1, 2 or 4"),
    (FrameFormat("binary", fixed_length=8, checksum=ChecksumField("crc99")), "unknown checksum"),
    (FrameFormat("binary", fixed_length=1, checksum=ChecksumField("crc16_modbus")), "fixed_length 1"),
    (FrameFormat("binary", length=LengthField(0, 2), max_length=1), "below the shortest"),
    (FrameFormat("binary", fixed_length=4, checksum_separator=b"*"), "checksum_separator"),
    (FrameFormat("morse"), "unknown encoding"),
    (FrameFormat("ascii_hex", start=b"~"), "start and end"),
    (FrameFormat("ascii_hex", start=b"~", end=b"\r", checksum=ChecksumField("sum16")), "ydt1363"),
    (FrameFormat("ascii_line"), "end octets"),
    (FrameFormat("ascii_line", end=b"\n", checksum_separator=b"*"), "without a checksum"),
    (FrameFormat("ascii_line", end=b"\n", checksum=ChecksumField("xor8", start=1)),
     "start and end must be 0"),
    (FrameFormat("length_prefixed"), "needs a length field"),
    (FrameFormat("length_prefixed", start=b"#", length=LengthField(0, 4)), "right after the start"),
])
def test_an_impossible_format_is_refused_when_the_scanner_is_made(fmt: FrameFormat, message: str) -> None:
    """The scanner (and build) refuse a format no frame can satisfy, saying why."""
    with pytest.raises(FrameFormatError, match=message):
        FrameScanner(fmt)
    with pytest.raises(FrameFormatError, match=message):
        build(fmt, b"")


@pytest.mark.parametrize(("fmt", "payload", "message"), [
    (TRAILED, b"\x00" + bytes(300), "does not fit a 1-octet field"),
    (FIXED, b"\x01\x02", "frames have 8 octets"),
    (BIN, b"\x00\x00" + bytes(BIN.max_length), "outside"),
    (YDT, b"\x20\x01\x40", "VER ADR CID1 CID2"),
    (LINES, b"a\r\nb", "contains the end"),
    (FrameFormat("length_prefixed", length=LengthField(0, 1)), bytes(10), "1 decimal digits"),
])
def test_a_payload_that_cannot_be_framed_is_refused(fmt: FrameFormat, payload: bytes, message: str) -> None:
    """build refuses a payload it cannot frame in the format, instead of writing a wrong frame."""
    with pytest.raises(BuildError, match=message):
        build(fmt, payload)
