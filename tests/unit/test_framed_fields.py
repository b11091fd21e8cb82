"""A framed message's payload read into point values and built back, for every field type and
octet order; expected octets written here from the types' definitions, not by the module."""

import struct

import pytest

from drivers.serial_framed.fields import FieldMeaning, FieldSpec, MessageLayout, PayloadError
from gateway.model import Quality


def spec(point: str, type_: str, at: int, order: str = "ABCD", **meaning: object) -> FieldSpec:
    return FieldSpec(FieldMeaning(point=point, type=type_, **meaning), at, order)  # type: ignore[arg-type]


@pytest.mark.parametrize("type_, fmt", [("u8", "B"), ("i8", "b"), ("u16", "H"), ("i16", "h"), ("u32", "I"),
                                        ("i32", "i"), ("u64", "Q"), ("i64", "q"), ("f32", "f"), ("f64", "d")])
@pytest.mark.parametrize("order", ["ABCD", "DCBA"])
def test_every_numeric_type_reads_big_and_little_endian(type_: str, fmt: str, order: str) -> None:
    value = -5 if fmt.islower() and fmt not in "fd" else 200 if fmt in "BQ" else 1.5 if fmt in "fd" else 40000
    payload = b"\xEE" + struct.pack((">" if order == "ABCD" else "<") + fmt, value)
    layout = MessageLayout([spec("v", type_, 1, order)])
    assert layout.values(payload) == {"v": (value, Quality.GOOD)}
    assert layout.payload({"v": value})[1:] == payload[1:]


def test_word_swapped_orders_of_32_and_64_bit_values() -> None:
    big = struct.pack(">I", 0x11223344)
    cdab, badc = big[2:] + big[:2], bytes([big[1], big[0], big[3], big[2]])
    layout = MessageLayout([spec("c", "u32", 0, "CDAB"), spec("b", "u32", 4, "BADC")])
    assert layout.values(cdab + badc) == {"c": (0x11223344, Quality.GOOD), "b": (0x11223344, Quality.GOOD)}
    big64 = struct.pack(">d", 12.25)
    words = b"".join(big64[i:i + 2] for i in (6, 4, 2, 0))
    assert MessageLayout([spec("d", "f64", 0, "CDAB")]).values(words) == {"d": (12.25, Quality.GOOD)}


def test_scale_offset_polynomial_bits_enum_bcd_and_ascii() -> None:
    layout = MessageLayout([
        spec("t", "i16", 0, scale=0.1, offset=-25.0),
        spec("fbg", "u16", 2, polynomial=(1.0, 2.0, 0.5)),
        spec("pre", "u8", 4, bit=0), spec("alarm", "u8", 4, bit=3),
        spec("state", "u8", 5, enum={0: "normal", 1: "alarm"}),
        spec("serial", "bcd", 6, length=3),
        spec("name", "ascii", 9, length=6)])
    payload = struct.pack(">hH", 600, 4) + bytes([0b1000, 1]) + bytes.fromhex("123456") + b"DTS  \x00"
    assert layout.values(payload) == {
        "t": (pytest.approx(35.0), Quality.GOOD), "fbg": (1.0 + 8.0 + 8.0, Quality.GOOD),
        "pre": (False, Quality.GOOD), "alarm": (True, Quality.GOOD), "state": ("alarm", Quality.GOOD),
        "serial": (123456, Quality.GOOD), "name": ("DTS", Quality.GOOD)}


def test_invalid_sentinels_nan_bad_bcd_and_unlabelled_enums_are_iv() -> None:
    layout = MessageLayout([spec("t", "i16", 0, invalid=(0x7FFF,)), spec("f", "f32", 2),
                            spec("b", "bcd", 6, length=1), spec("e", "u8", 7, enum={0: "ok"})])
    payload = struct.pack(">hf", 0x7FFF, float("nan")) + bytes([0x1A, 9])
    assert layout.values(payload) == {"t": (None, Quality.IV), "f": (None, Quality.IV),
                                      "b": (None, Quality.IV), "e": (None, Quality.IV)}


def test_a_short_payload_is_refused_and_a_built_one_round_trips() -> None:
    layout = MessageLayout([spec("t", "i16", 0, scale=0.1, offset=-25.0), spec("alarm", "u8", 2, bit=3),
                            spec("pre", "u8", 2, bit=0), spec("state", "u8", 3, enum={0: "normal", 1: "alarm"}),
                            spec("serial", "bcd", 4, length=2), spec("name", "ascii", 6, length=4)])
    with pytest.raises(PayloadError, match="3 octets, the fields need 10"):
        layout.values(b"\x00\x01\x02")
    values = {"t": 35.0, "alarm": True, "pre": True, "state": "alarm", "serial": 4321, "name": "ab"}
    built = layout.payload(values, size=12)
    assert built == struct.pack(">h", 600) + bytes([0b1001, 1, 0x43, 0x21]) + b"ab\x00\x00" + bytes(2)
    read = {point: value for point, (value, _) in layout.values(built).items()}
    assert read == values | {"t": pytest.approx(35.0)}


def test_values_a_field_cannot_carry_are_refused_on_build() -> None:
    layout = MessageLayout([spec("u", "u8", 0), spec("e", "u8", 1, enum={0: "ok"}), spec("b", "bcd", 2, length=1)])
    with pytest.raises(ValueError, match="outside what a u8 carries"):
        layout.payload({"u": 256})
    with pytest.raises(ValueError, match="none of"):
        layout.payload({"e": "broken"})
    with pytest.raises(ValueError, match="does not fit 1 BCD"):
        layout.payload({"b": 100})


def test_ascii_decimal_fields_read_numbers_and_iv_for_anything_else() -> None:
    layout = MessageLayout([spec("t", "decimal", 0, length=7), spec("n", "decimal", 7, length=3, scale=0.1)])
    assert layout.values(b"+031.50 42") == {"t": (31.5, Quality.GOOD), "n": (pytest.approx(4.2), Quality.GOOD)}
    assert layout.values(b"  --.-- ERR")["t"] == (None, Quality.IV)
    assert layout.values(b"    nan  1")["t"] == (None, Quality.IV)
    assert layout.payload({"t": -4.25, "n": 4.2}) == b"-4.2500 42"
    with pytest.raises(ValueError, match="does not fit 3 characters"):
        layout.payload({"n": 1000.0})
