"""The checksums a framed-serial profile can name. Pure: no I/O.

A profile names its checksum (``crc16_modbus``, ``sum8``, ...) instead of carrying code, so this
module is the whole catalogue. Every CRC comes from ``anycrc`` (a C implementation of the CRC
catalogue, about 1 µs for 4 KiB, where pure-Python CRCs take milliseconds and a scanner
recomputes a checksum for every candidate frame); the arithmetic checksums that are no CRC are a
line each over the built-in ``sum``.

``size`` is how many octets the value takes on the wire in binary encodings; text encodings
write it as ``2 * size`` hex characters. YD/T 1363.3 ("电总") also protects its LENGTH field
with a 4-bit checksum of its own; ``length_field`` and ``split_length_field`` build and check it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from operator import xor

import anycrc


@dataclass(frozen=True, slots=True)
class Checksum:
    """One named algorithm: ``compute(data)`` is the checksum value of ``data`` as an integer."""

    name: str
    size: int  # octets of the value on the wire (binary encodings)
    compute: Callable[[bytes], int]


def _crc(name: str, size: int, model: str) -> Checksum:
    """A checksum computed by the anycrc catalogue model ``model``."""
    return Checksum(name, size, anycrc.Model(model).calc)


def _sum8(data: bytes) -> int:
    """The sum of the octets, modulo 256."""
    return sum(data) & 0xFF


def _sum16(data: bytes) -> int:
    """The sum of the octets, modulo 65536."""
    return sum(data) & 0xFFFF


def _xor8(data: bytes) -> int:
    """All octets combined by exclusive or."""
    return reduce(xor, data, 0)


def _lrc(data: bytes) -> int:
    """Modbus ASCII LRC: the two's complement of the 8-bit sum, so that sum + LRC = 0 mod 256."""
    return -sum(data) & 0xFF


def _ydt1363(data: bytes) -> int:
    """YD/T 1363.3 CHKSUM: the sum of the ASCII characters covered, mod 65536, inverted plus one."""
    return -sum(data) & 0xFFFF


_CATALOGUE: tuple[Checksum, ...] = (
    _crc("crc16_modbus", 2, "CRC16-MODBUS"),
    _crc("crc16_ccitt_false", 2, "CRC16-IBM-3740"),  # CRC-16/CCITT-FALSE: init 0xFFFF, not reflected
    _crc("crc16_xmodem", 2, "CRC16-XMODEM"),
    _crc("crc16_kermit", 2, "CRC16-KERMIT"),
    _crc("crc16_x25", 2, "CRC16-IBM-SDLC"),  # CRC-16/X-25 is an alias of CRC-16/IBM-SDLC
    _crc("crc32", 4, "CRC32-ISO-HDLC"),  # the zlib / Ethernet CRC-32
    _crc("crc8", 1, "CRC8-SMBUS"),
    Checksum("sum8", 1, _sum8),
    Checksum("sum16", 2, _sum16),
    Checksum("xor8", 1, _xor8),
    Checksum("lrc", 1, _lrc),
    Checksum("ydt1363", 2, _ydt1363),  # always written as 4 upper-case hex characters
)

ALGORITHMS: dict[str, Checksum] = {algorithm.name: algorithm for algorithm in _CATALOGUE}


def checksum(name: str) -> Checksum:
    """The algorithm called ``name``; a ``ValueError`` naming the valid names for any other."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown checksum {name!r}; valid: {', '.join(sorted(ALGORITHMS))}") from None


_LENID_LIMIT = 0x1000  # LENID is 12 bits


def length_checksum(lenid: int) -> int:
    """YD/T 1363.3 LCHKSUM of ``lenid``: the three 4-bit digits of LENID summed, mod 16, inverted
    plus one."""
    if not 0 <= lenid < _LENID_LIMIT:
        raise ValueError(f"LENID {lenid} is outside 0..{_LENID_LIMIT - 1} (12 bits)")
    return -((lenid >> 8) + (lenid >> 4 & 0xF) + (lenid & 0xF)) & 0xF


def length_field(lenid: int) -> int:
    """The 16-bit YD/T 1363.3 LENGTH value: LCHKSUM in the top 4 bits, LENID in the low 12."""
    return length_checksum(lenid) << 12 | lenid


def split_length_field(value: int) -> tuple[int, bool]:
    """(LENID, whether its LCHKSUM is right) of a 16-bit LENGTH value."""
    lenid = value & 0xFFF
    return lenid, value >> 12 == length_checksum(lenid)
