"""The framed-serial checksum catalogue against published check values and YD/T 1363.3 examples."""

import pytest

from drivers.serial_framed.checksums import (ALGORITHMS, checksum, length_checksum, length_field,
                                             split_length_field)

CHECK = b"123456789"

# The check value of "123456789" for each algorithm: the CRCs from the CRC catalogue (reveng),
# the arithmetic ones restated from their definitions (the octets sum to 477 = 0x1DD).
CHECK_VALUES = {
    "crc16_modbus": (2, 0x4B37),
    "crc16_ccitt_false": (2, 0x29B1),
    "crc16_xmodem": (2, 0x31C3),
    "crc16_kermit": (2, 0x2189),
    "crc16_x25": (2, 0x906E),
    "crc32": (4, 0xCBF43926),
    "crc8": (1, 0xF4),
    "sum8": (1, 0xDD),
    "sum16": (2, 0x01DD),
    "xor8": (1, 0x31),
    "lrc": (1, 0x23),
    "ydt1363": (2, 0xFE23),
}


def test_the_catalogue_holds_exactly_the_named_algorithms() -> None:
    """Every name the profiles may use is there, and nothing else."""
    assert sorted(ALGORITHMS) == sorted(CHECK_VALUES)
    assert all(algorithm.name == name for name, algorithm in ALGORITHMS.items())


@pytest.mark.parametrize("name", sorted(CHECK_VALUES))
def test_check_value_of_123456789(name: str) -> None:
    """Each algorithm gives its published check value and declares its size on the wire."""
    size, value = CHECK_VALUES[name]
    algorithm = checksum(name)
    assert (algorithm.size, algorithm.compute(CHECK)) == (size, value)


@pytest.mark.parametrize("name", sorted(CHECK_VALUES))
def test_bytearray_and_memoryview_give_the_same_value(name: str) -> None:
    """The scanner may hand a bytearray or a view: the value does not depend on the buffer type."""
    compute = checksum(name).compute
    assert compute(bytearray(CHECK)) == compute(memoryview(b"x" + CHECK)[1:]) == compute(CHECK)


def test_lrc_makes_the_octet_sum_zero() -> None:
    """Modbus ASCII LRC: the octets plus their LRC sum to 0 mod 256."""
    data = bytes.fromhex("1103006B0003")  # the Modbus ASCII spec's read request, LRC 0x7E
    assert checksum("lrc").compute(data) == 0x7E
    assert (sum(data) + 0x7E) & 0xFF == 0


def test_an_unknown_name_is_refused_with_the_valid_names() -> None:
    """A typo in a profile names what would have been valid."""
    with pytest.raises(ValueError, match=r"unknown checksum 'crc16'.*crc16_modbus.*ydt1363"):
        checksum("crc16")


# --- YD/T 1363.3 -----------------------------------------------------------------------------


@pytest.mark.parametrize(("covered", "chksum"), [
    (b"20014043E00200", 0xFD3B),  # ~20014043E00200FD3B\r
    (b"20014642E00201", 0xFD35),  # ~20014642E00201FD35\r, a battery telemetry request
    # The standard's own example prints FC72, but its characters sum to 0x038F, not 0x038E:
    (b"1203400456ABCEFE", 0xFC71),
])
def test_ydt1363_chksum_of_frames(covered: bytes, chksum: int) -> None:
    """CHKSUM is the sum of the ASCII characters after ~ up to CHKSUM, inverted plus one."""
    assert checksum("ydt1363").compute(covered) == chksum


def test_ydt1363_lenid_2_gives_length_e002() -> None:
    """LENID 2 (INFO "00") has LCHKSUM 0xE: LENGTH E002, as in ~20014043E00200FD3B\\r."""
    assert length_checksum(2) == 0xE
    assert length_field(2) == 0xE002
    assert split_length_field(0xE002) == (2, True)


def test_ydt1363_the_standards_lchksum_example() -> None:
    """LENID 000000010010B: digits 0+1+2 = 0011B, inverted plus one = 1101B, LENGTH D012."""
    assert length_checksum(0x012) == 0b1101
    assert length_field(0x012) == 0xD012


def test_ydt1363_lchksum_wraps_to_zero() -> None:
    """A digit sum of 16 (or 0) gives LCHKSUM 0, not 16."""
    assert length_field(0x088) == 0x0088
    assert length_field(0) == 0x0000


def test_ydt1363_a_wrong_lchksum_is_reported() -> None:
    """split_length_field keeps LENID but says the LCHKSUM is wrong."""
    assert split_length_field(0xF002) == (2, False)
    assert split_length_field(0x0002) == (2, False)


@pytest.mark.parametrize("lenid", [-1, 0x1000])
def test_ydt1363_lenid_outside_12_bits_is_refused(lenid: int) -> None:
    """LENID has 12 bits; anything else cannot be framed."""
    with pytest.raises(ValueError, match="12 bits"):
        length_field(lenid)


def test_every_lenid_round_trips_through_the_length_field() -> None:
    """For all 4096 LENIDs the 16-bit field splits back into the same LENID with a right LCHKSUM."""
    assert all(split_length_field(length_field(lenid)) == (lenid, True) for lenid in range(0x1000))
