"""A message's payload <-> its points' values, from the profile's field descriptions.

The octets are parsed and built by ``construct`` (one compiled ``Struct`` per message, a
``Pointer`` per point at its octet offset): one description serves the driver, which parses, and
the simulator, which builds. Only what a field means is written here: a bit of an integer, an enum
label, BCD digits, scale and offset or a polynomial, and the raw values a device sends for
"invalid" (IV, never a number).
"""

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import construct as cs

from gateway.model import Quality, Value

INTEGERS = {"u8": (1, False), "u16": (2, False), "u32": (4, False), "u64": (8, False),
            "i8": (1, True), "i16": (2, True), "i32": (4, True), "i64": (8, True)}
FLOATS = {"f32": 4, "f64": 8}


class PayloadError(ValueError):
    """A payload that does not hold the message's fields (too short)."""


def _reorder(order: str, size: int) -> Callable[[bytes], bytes]:
    """Octets as the device sends them -> big-endian (ABCD) octets, for an order named like Modbus'
    word orders: ABCD big-endian, DCBA little-endian, CDAB 16-bit words swapped, BADC octets of
    each word swapped. The mapping is its own inverse, so it serves parse and build."""
    if order == "ABCD" or size == 1:
        return lambda octets: octets
    if order == "DCBA":
        return lambda octets: octets[::-1]
    if size == 2:  # a 16-bit value has no words to swap: CDAB is big-endian, BADC little-endian
        return (lambda octets: octets) if order == "CDAB" else (lambda octets: octets[::-1])
    if order == "CDAB":
        return lambda octets: b"".join(octets[i:i + 2] for i in range(len(octets) - 2, -1, -2))
    return lambda octets: b"".join(octets[i + 1:i + 2] + octets[i:i + 1] for i in range(0, len(octets), 2))


def raw_field(type_name: str, order: str, length: int | None) -> cs.Construct:
    """The construct for a field's raw value (an int, a float, bytes for BCD, a str for ASCII)."""
    if type_name in ("ascii", "decimal"):
        return cs.PaddedString(length, "ascii")
    if type_name == "bcd":
        return cs.Bytes(length)
    if type_name in FLOATS:
        size = FLOATS[type_name]
        base: cs.Construct = cs.Float32b if size == 4 else cs.Float64b
    else:
        size, signed = INTEGERS[type_name]
        base = cs.BytesInteger(size, signed=signed)
    swap = _reorder(order, size)
    return base if swap(bytes(range(size))) == bytes(range(size)) else cs.Transformed(base, swap, size, swap, size)


def bcd_value(octets: bytes) -> int | None:
    """Packed BCD, most significant digit first; None when a nibble is not a decimal digit."""
    digits = octets.hex()
    return int(digits) if digits.isdigit() else None


def bcd_octets(value: int, length: int) -> bytes:
    """``value`` as ``length`` octets of packed BCD; ValueError when it does not fit."""
    text = f"{value:0{length * 2}d}"
    if value < 0 or len(text) > length * 2:
        raise ValueError(f"{value} does not fit {length} BCD octets")
    return bytes.fromhex(text)


@dataclass(frozen=True)
class FieldMeaning:
    """What one point makes of its raw field (the profile's point, reduced to what decoding needs)."""

    point: str
    type: str
    bit: int | None = None
    enum: dict[int, str] | None = None
    scale: float = 1.0
    offset: float = 0.0
    polynomial: tuple[float, ...] | None = None
    invalid: tuple[float, ...] = ()
    length: int | None = None

    def value(self, raw: Any) -> tuple[Value, Quality]:
        """The engineering value of a raw field; IV (value None) for an invalid sentinel, a NaN, a
        BCD nibble above 9 or an enum value without a label."""
        if self.type == "ascii":
            return raw.rstrip("\x00 "), Quality.GOOD
        if self.type == "decimal":
            raw = _decimal(raw)
            if raw is None:
                return None, Quality.IV
        if self.type == "bcd":
            raw = bcd_value(raw)
            if raw is None:
                return None, Quality.IV
        if raw in self.invalid or (isinstance(raw, float) and not math.isfinite(raw)):
            return None, Quality.IV
        if self.bit is not None:
            return bool(raw >> self.bit & 1), Quality.GOOD
        if self.enum is not None:
            label = self.enum.get(raw)
            return (label, Quality.GOOD) if label is not None else (None, Quality.IV)
        return self._engineering(raw), Quality.GOOD

    def _engineering(self, raw: float) -> Value:
        if self.polynomial is not None:
            return sum(c * raw ** n for n, c in enumerate(self.polynomial))
        if self.scale == 1 and self.offset == 0 and self.type not in FLOATS and self.type != "decimal":
            return int(raw)
        return raw * self.scale + self.offset

    def _unpolynomial(self, value: float) -> float:
        assert self.polynomial is not None
        try:
            return _root(self.polynomial, value)
        except ValueError as exc:
            raise ValueError(f"{self.point}: {exc}") from None

    def raw(self, value: Value) -> Any:
        """The raw field for an engineering value (the simulator's way back); ValueError when the
        field cannot carry it."""
        if self.type == "ascii":
            return str(value)
        if self.type == "decimal":
            return _decimal_text(float((float(value) - self.offset) / self.scale), self.length or 1)  # type: ignore[arg-type]
        if self.enum is not None and not isinstance(value, str):
            return int(value)  # type: ignore[arg-type]  # a code (the value engine's numbers)
        if self.enum is not None:
            labels = {label: code for code, label in self.enum.items()}
            if value not in labels:
                raise ValueError(f"{self.point}: {value!r} is none of {sorted(labels)}")
            return labels[value]
        number = (self._unpolynomial(float(value)) if self.polynomial is not None  # type: ignore[arg-type]
                  else (float(value) - self.offset) / self.scale)  # type: ignore[arg-type]
        if self.type in FLOATS:
            return number
        raw = int(round(number))
        size, signed = INTEGERS.get(self.type, (0, False))
        if self.type == "bcd":
            return bcd_octets(raw, self.length or 1)
        low, high = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, (1 << (8 * size)) - 1)
        if not low <= raw <= high:
            raise ValueError(f"{self.point}: {value} is outside what a {self.type} carries")
        return raw


@dataclass(frozen=True)
class FieldSpec:
    """Where a point's field sits in the payload and how its octets read."""

    meaning: FieldMeaning
    at: int
    order: str = "ABCD"

    @property
    def size(self) -> int:
        """Octets the field takes."""
        if self.meaning.type in ("ascii", "bcd", "decimal"):
            return self.meaning.length or 1
        return FLOATS.get(self.meaning.type) or INTEGERS[self.meaning.type][0]


class MessageLayout:
    """Every field of one message: parse a payload into values, build one from values."""

    def __init__(self, fields: Sequence[FieldSpec]) -> None:
        self.fields = list(fields)
        self.length = max((f.at + f.size for f in self.fields), default=0)
        self._struct = cs.Struct(*[
            f.meaning.point / cs.Pointer(f.at, raw_field(f.meaning.type, f.order, f.meaning.length))
            for f in self.fields]).compile()

    def values(self, payload: bytes) -> dict[str, tuple[Value, Quality]]:
        """Each point's value and quality; PayloadError for a payload shorter than the fields."""
        if len(payload) < self.length:
            raise PayloadError(f"{len(payload)} octets, the fields need {self.length}")
        parsed = self._struct.parse(payload)
        return {f.meaning.point: f.meaning.value(parsed[f.meaning.point]) for f in self.fields}

    def payload(self, values: dict[str, Value], size: int | None = None) -> bytes:
        """A payload of ``size`` octets (at least the fields') carrying ``values``; fields of
        points not given, and bits, stay zero except the bits given as True."""
        raws: dict[str, Any] = {}
        words: dict[int, int] = {}
        for f in self.fields:
            if f.meaning.point not in values:
                continue
            if f.meaning.bit is not None:
                words[f.at] = words.get(f.at, 0) | (int(bool(values[f.meaning.point])) << f.meaning.bit)
            else:
                raws[f.meaning.point] = f.meaning.raw(values[f.meaning.point])
        for f in self.fields:
            if f.meaning.bit is not None:
                raws[f.meaning.point] = words.get(f.at, 0)
            raws.setdefault(f.meaning.point, _zero(f))
        built = self._struct.build(raws)
        return built.ljust(max(size or 0, self.length), b"\x00")


def _decimal(text: str) -> float | None:
    """A number written in ASCII (``" -12.5"``); None when the characters are no number."""
    try:
        number = float(text.strip("\x00 "))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _decimal_text(number: float, length: int) -> str:
    """``number`` right-aligned in ``length`` characters, as many decimals as fit; ValueError when
    its integer part does not."""
    for decimals in range(max(0, min(6, length - 2)), -1, -1):
        text = f"{number:{length}.{decimals}f}"
        if len(text) == length:
            return text
    raise ValueError(f"{number} does not fit {length} characters")


def _root(coefficients: tuple[float, ...], value: float) -> float:
    """The raw value a linear or quadratic calibration maps to ``value``: the root nearest zero;
    ValueError for none or a higher degree."""
    c = list(coefficients) + [0.0, 0.0]
    if any(coefficients[3:]):
        raise ValueError("only polynomials up to degree 2 can be inverted")
    a, b, k = c[2], c[1], c[0] - value
    if a == 0:
        if b == 0:
            raise ValueError("a constant polynomial has no inverse")
        return -k / b
    discriminant = b * b - 4 * a * k
    if discriminant < 0:
        raise ValueError(f"{value} is outside the polynomial's range")
    return min(((-b + sign * math.sqrt(discriminant)) / (2 * a) for sign in (1, -1)), key=abs)


def _zero(field: FieldSpec) -> Any:
    if field.meaning.type in ("ascii", "decimal"):
        return "0" if field.meaning.type == "decimal" else ""
    if field.meaning.type == "bcd":
        return bytes(field.size)
    return 0.0 if field.meaning.type in FLOATS else 0
