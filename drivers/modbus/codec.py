"""Modbus registers <-> engineering values. Pure: no I/O, no pymodbus.

pymodbus's ``convert_from_registers``/``convert_to_registers`` only know word order, but field
devices also swap the bytes inside each word (BADC, DCBA), so byte order is done here with
``struct``. Every (type, order) pair is two precompiled ``struct.Struct`` objects: one packs the
16-bit words into bytes (``<H`` when the device swaps bytes within a word), the other reads the
value from those bytes (``<`` when the device puts the least significant part first). That one
rule covers 16-, 32- and 64-bit types:

=====  ===========  ===========  =============================================
order  words as     value as     meaning
=====  ===========  ===========  =============================================
ABCD   ``>H``       big          big-endian words and bytes
CDAB   ``<H``       little       words reversed, bytes big-endian within a word
BADC   ``<H``       big          words in order, bytes swapped within a word
DCBA   ``>H``       little       fully little-endian
=====  ===========  ===========  =============================================

For 16-bit types this makes ABCD/CDAB the plain word and BADC/DCBA the byte-swapped word.

Decoding is the hot path (the gateway aims at 200,000 points/s on one core), so
``make_decoder`` does all the per-point thinking once and returns a small closure that only
indexes, unpacks, checks the sentinels and scales. Decoders depend only on a point's shape, not
on its id, so points of the same shape share one decoder.

Bits (``bit: n``) count in the register as transmitted, whatever the order, so that
``set_bit`` on the register word read back from the device is the exact inverse.

A point with ``scale_factor`` (SunSpec's sunssf) needs a second register, its exponent, to mean
anything. Its decoder from ``make_decoder`` therefore yields the raw number, sentinels already
IV, and whoever holds both registers of one read applies ``with_exponent``: the poller once per
poll for the few points that have one, so points without a scale factor keep their closures
untouched. ``decode`` and ``encode`` take the exponent as an argument.
"""

import struct
from collections.abc import Callable, Sequence
from functools import lru_cache
from math import isfinite
from typing import NamedTuple

from drivers.modbus.profile import BIT_TABLES, REGISTERS, DataType, ModbusPoint, Order
from gateway.model import Quality, Value

Decoder = Callable[[Sequence[int], int], tuple[Value, Quality]]
"""Decodes one point from ``words`` (a block's registers or bits) starting at an offset."""
_RawReader = Callable[[Sequence[int], int], int | float]


class EncodeError(ValueError):
    """A value cannot be written to a point: the message names the point and why."""


class _Layout(NamedTuple):
    """How one numeric type in one order sits in registers."""

    words: struct.Struct  # the registers as bytes
    value: struct.Struct  # the value read from those bytes


_FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
            "uint64": "Q", "float32": "f", "float64": "d"}
_FLOATS = ("float32", "float64")
_SWAPS_BYTES = ("BADC", "CDAB")  # within each word, as the words struct sees it
_LITTLE_VALUE = ("CDAB", "DCBA")
_ORDERS: tuple[Order, ...] = ("ABCD", "CDAB", "BADC", "DCBA")


def _layout(dtype: str, order: Order) -> _Layout:
    words = ("<" if order in _SWAPS_BYTES else ">") + "H" * REGISTERS[dtype]
    value = ("<" if order in _LITTLE_VALUE else ">") + _FORMATS[dtype]
    return _Layout(struct.Struct(words), struct.Struct(value))


_LAYOUTS = {(dtype, order): _layout(dtype, order) for dtype in _FORMATS for order in _ORDERS}


def _int_range(fmt: str) -> tuple[int, int]:
    bits = 8 * struct.calcsize(fmt)
    return (-(1 << bits - 1), (1 << bits - 1) - 1) if fmt.islower() else (0, (1 << bits) - 1)


_INT_RANGES = {dtype: _int_range(fmt) for dtype, fmt in _FORMATS.items() if dtype not in _FLOATS}

_SENTINELS: dict[str, tuple[int | float, ...]] = {
    "int16": (-0x8000,), "uint16": (0xFFFF,), "int32": (-0x80000000,), "uint32": (0xFFFFFFFF,),
    "int64": (-(1 << 63),), "uint64": ((1 << 64) - 1,),
}

_GOOD = Quality.GOOD
_INVALID: tuple[Value, Quality] = (None, Quality.IV)


def default_sentinels(dtype: DataType) -> tuple[int | float, ...]:
    """SunSpec's "not implemented" raw values of ``dtype``.

    Floats have none because NaN and Inf are always invalid; bools and strings have none (an
    all-NUL string is handled by the string decoder).
    """
    return _SENTINELS.get(dtype, ())


def _sentinels(point: ModbusPoint) -> frozenset[int | float]:
    """The point's sentinels as raw decoded values.

    Profiles copy sentinels from vendor tables, which write them in hex (``0x8000``); for a
    signed type such a value means its two's complement, which is what the decoder sees.
    """
    listed = default_sentinels(point.type) if point.invalid is None else point.invalid
    low, high = _INT_RANGES.get(point.type, (0, 0))
    if low >= 0:
        return frozenset(listed)
    span = 2 * (high + 1)
    return frozenset(v - span if isinstance(v, int) and high < v < span else v for v in listed)


def _raw_reader(dtype: str, order: Order) -> _RawReader:
    """The raw value of ``dtype`` from ``words`` at an offset, order applied."""
    layout = _LAYOUTS[dtype, order]
    pack, unpack = layout.words.pack, layout.value.unpack
    width = REGISTERS[dtype]
    if dtype == "uint16" and order in ("ABCD", "CDAB"):
        return lambda words, at: words[at]
    if width == 1:
        return lambda words, at: unpack(pack(words[at]))[0]
    if width == 2:
        return lambda words, at: unpack(pack(words[at], words[at + 1]))[0]
    return lambda words, at: unpack(pack(words[at], words[at + 1], words[at + 2], words[at + 3]))[0]


def _exact_decoder(read: _RawReader, sentinels: frozenset[int | float]) -> Decoder:
    """Integers with scale 1 and offset 0 stay exact ints (64-bit counters lose nothing)."""

    def decode(words: Sequence[int], at: int) -> tuple[Value, Quality]:
        raw = read(words, at)
        return _INVALID if raw in sentinels else (raw, _GOOD)

    return decode


def _scaled_decoder(read: _RawReader, sentinels: frozenset[int | float], scale: float,
                    offset: float) -> Decoder:
    """Floats, and scaled integers: a float in engineering units; NaN/Inf are invalid."""

    def decode(words: Sequence[int], at: int) -> tuple[Value, Quality]:
        raw = read(words, at)
        if raw in sentinels or not isfinite(raw):
            return _INVALID
        return (raw * scale + offset, _GOOD)

    return decode


def _string_struct(length: int, order: Order) -> struct.Struct:
    """Registers <-> bytes of a string: two characters per register, first in the high byte
    unless the device swaps bytes within words (BADC, DCBA)."""
    return struct.Struct(("<" if order in ("BADC", "DCBA") else ">") + "H" * length)


def _string_decoder(length: int, order: Order) -> Decoder:
    pack = _string_struct(length, order).pack

    def decode(words: Sequence[int], at: int) -> tuple[Value, Quality]:
        raw = pack(*words[at:at + length])
        if not raw.rstrip(b"\0"):
            return _INVALID
        return (raw.decode("utf-8", errors="replace").rstrip("\0 "), _GOOD)

    return decode


def _bit_decoder(bit: int) -> Decoder:
    return lambda words, at: (bool((words[at] >> bit) & 1), _GOOD)


def _coil_decoder(words: Sequence[int], at: int) -> tuple[Value, Quality]:
    return (bool(words[at]), _GOOD)


@lru_cache(maxsize=4096)
def _decoder_for(dtype: str, order: Order, bit: int | None, length: int | None,
                 scale: float, offset: float, sentinels: frozenset[int | float]) -> Decoder:
    """One decoder per point shape (points are not always hashable: ``invalid`` is a list)."""
    if dtype == "bool":
        return _coil_decoder if bit is None else _bit_decoder(bit)
    if dtype == "string":
        return _string_decoder(length or 0, order)
    read = _raw_reader(dtype, order)
    if dtype not in _FLOATS and scale == 1 and offset == 0:
        return _exact_decoder(read, sentinels)
    return _scaled_decoder(read, sentinels, scale, offset)


def make_decoder(point: ModbusPoint, order: Order) -> Decoder:
    """A fast closure decoding ``point`` from a block's ``words`` at an offset.

    Sentinels, NaN and Inf give ``(None, Quality.IV)``; numbers are ``raw * scale + offset``
    (an exact int for integer types with scale 1 and offset 0); a bit of a register or a coil
    is a bool; strings lose trailing NULs and spaces, and an all-NUL string is invalid. A point
    with ``scale_factor`` gives its raw number: ``with_exponent`` finishes it.
    """
    bit = point.bit if point.table not in BIT_TABLES else None
    if point.scale_factor is not None:
        return _decoder_for(point.type, order, bit, point.length, 1.0, 0.0, _sentinels(point))
    return _decoder_for(point.type, order, bit, point.length, point.scale, point.offset,
                        _sentinels(point))


def with_exponent(raw: int | float, exponent: int, scale: float, offset: float) -> float:
    """``raw x 10^exponent x scale + offset``: the engineering value of a scale-factored point.

    A negative exponent divides by an exact power of ten, so raw 2345 with exponent -1 is 234.5,
    not the 234.50000000000003 that multiplying by 0.1 gives.
    """
    value = raw / 10 ** -exponent if exponent < 0 else raw * 10 ** exponent
    return value * scale + offset


def decode(point: ModbusPoint, order: Order, words: Sequence[int],
           exponent: int | None = None) -> tuple[Value, Quality]:
    """Decode ``point`` from its own registers (``words[0]`` is its first).

    ``exponent`` is the raw value of the point's ``scale_factor`` register, read with it; a
    scale-factored point without one is IV (its scale factor is not implemented, or unread).
    """
    value, quality = make_decoder(point, order)(words, 0)
    if point.scale_factor is None or quality is not _GOOD:
        return value, quality
    if exponent is None:
        return _INVALID
    return with_exponent(value, exponent, point.scale, point.offset), _GOOD  # type: ignore[arg-type]


def decode_raw(dtype: DataType, order: Order, words: Sequence[int]) -> int | float:
    """The raw (unscaled) value in ``words``: no sentinels, no scale; a bool is 0 or 1."""
    if dtype == "bool":
        return int(bool(words[0]))
    if dtype == "string":
        raise ValueError("decode_raw takes numeric types; decode strings with decode()")
    return _raw_reader(dtype, order)(words, 0)


def _pack(dtype: str, order: Order, raw: int | float, who: str) -> list[int]:
    """Registers holding ``raw``; ``who`` names the point or type in errors."""
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if isinstance(raw, float):
            if not raw.is_integer():
                raise EncodeError(f"{who}: raw value {raw} is not an integer")
            raw = int(raw)
        if not low <= raw <= high:
            raise EncodeError(f"{who}: raw value {raw} is outside {dtype} [{low}, {high}]")
    elif isinstance(raw, float) and not isfinite(raw):
        raise EncodeError(f"{who}: raw value {raw} is not a finite {dtype} (NaN/Inf mean invalid)")
    layout = _LAYOUTS[dtype, order]
    try:
        return list(layout.words.unpack(layout.value.pack(raw)))
    except (OverflowError, struct.error):
        raise EncodeError(f"{who}: raw value {raw} is outside the {dtype} range") from None


def encode_raw(dtype: DataType, order: Order, raw: int | float) -> list[int]:
    """Registers holding the raw (unscaled) ``raw``; a bool is one register/bit 0 or 1."""
    if dtype == "bool":
        return [1 if raw else 0]
    if dtype == "string":
        raise EncodeError("encode_raw takes numeric types; encode strings with encode()")
    return _pack(dtype, order, raw, dtype)


def _unscale(point: ModbusPoint, value: int | float, exponent: int) -> int | float:
    """The raw value for ``value``: integer types round to nearest (ties to even)."""
    if isinstance(value, int) and point.scale == 1 and point.offset == 0 and exponent == 0:
        return value  # exact: a float detour would corrupt large 64-bit values
    raw = (value - point.offset) / point.scale
    raw = raw * 10 ** -exponent if exponent < 0 else raw / 10 ** exponent
    return raw if point.type in _FLOATS else round(raw)


def _encode_number(point: ModbusPoint, order: Order, value: object, exponent: int | None) -> list[int]:
    who = f"point {point.id!r}"
    if point.scale_factor is None:
        exponent = 0
    elif exponent is None:
        raise EncodeError(f"{who}: its scale factor {point.scale_factor!r} is not known (not read yet, "
                          "or not implemented): nothing to encode with")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EncodeError(f"{who}: expects a number, got {type(value).__name__}")
    if isinstance(value, float) and not isfinite(value):
        raise EncodeError(f"{who}: {value} cannot be written (NaN/Inf mean invalid)")
    if point.scale == 0:
        raise EncodeError(f"{who}: scale 0 cannot be inverted")
    try:
        raw = _unscale(point, value, exponent)
    except OverflowError:
        raise EncodeError(f"{who}: {value} is outside the {point.type} range") from None
    if raw in _sentinels(point):
        raise EncodeError(f"{who}: raw value {raw} is the device's 'not implemented' marker")
    return _pack(point.type, order, raw, who)


def _encode_bool(point: ModbusPoint, value: object) -> list[int]:
    if point.bit is not None:
        raise EncodeError(f"point {point.id!r}: a bit of a register needs read-modify-write, "
                          "use set_bit")
    if isinstance(value, str) or value not in (0, 1):
        raise EncodeError(f"point {point.id!r}: expects a bool, got {value!r}")
    return [1 if value else 0]


def _encode_string(point: ModbusPoint, order: Order, value: object) -> list[int]:
    if not isinstance(value, str):
        raise EncodeError(f"point {point.id!r}: expects a string, got {type(value).__name__}")
    length = point.length or 0
    data = value.encode("utf-8")
    if len(data) > 2 * length:
        raise EncodeError(f"point {point.id!r}: string too long: {len(data)} bytes, "
                          f"room for {2 * length}")
    return list(_string_struct(length, order).unpack(data.ljust(2 * length, b"\0")))


def encode(point: ModbusPoint, order: Order, value: float | int | bool | str,
           exponent: int | None = None) -> list[int]:
    """The registers (or coil bit) to write ``value`` to ``point``: the inverse of decoding.

    Integer types round ``(value - offset) / scale / 10^exponent`` to nearest (ties to even);
    ``exponent`` is the raw value of the point's ``scale_factor`` register and is ignored for
    points without one. Anything the device could not store, or would read back as invalid, or
    a scale-factored point without its exponent, raises ``EncodeError``.
    """
    if point.type == "string":
        return _encode_string(point, order, value)
    if point.type == "bool":
        return _encode_bool(point, value)
    return _encode_number(point, order, value, exponent)


def set_bit(word: int, bit: int, value: bool) -> int:
    """``word`` with ``bit`` set or cleared: the modify step of a read-modify-write."""
    if not 0 <= bit <= 15:
        raise ValueError(f"bit {bit} is outside 0-15")
    mask = 1 << bit
    return (word | mask if value else word & ~mask) & 0xFFFF
