"""Registers <-> engineering values: orders, sentinels, scaling, strings, bits and coils."""

import math

import pytest

from drivers.modbus.codec import (EncodeError, decode, decode_raw, default_sentinels, encode,
                                  encode_raw, make_decoder, set_bit)
from drivers.modbus.profile import ModbusPoint
from gateway.model import Quality

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
GOOD, IV = Quality.GOOD, Quality.IV


def reorder(words: list[int], order: str) -> list[int]:
    """ABCD registers as a device using ``order`` sends them (the spec, restated for tests)."""
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    if order in ("BADC", "DCBA"):
        words = [(word & 0xFF) << 8 | word >> 8 for word in words]
    return list(words)


def point(type: str = "uint16", **fields: object) -> ModbusPoint:
    return ModbusPoint(id="p", address=0, type=type, **fields)


# (type, value, {order: registers}); written by hand from the value's big-endian bytes.
WORDS = [
    ("int16", -2, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("uint16", 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
    ("int32", -123456789,  # 0xF8A432EB
     {"ABCD": [0xF8A4, 0x32EB], "CDAB": [0x32EB, 0xF8A4],
      "BADC": [0xA4F8, 0xEB32], "DCBA": [0xEB32, 0xA4F8]}),
    ("uint32", 0x12345678,
     {"ABCD": [0x1234, 0x5678], "CDAB": [0x5678, 0x1234],
      "BADC": [0x3412, 0x7856], "DCBA": [0x7856, 0x3412]}),
    ("float32", 123.456,  # 0x42F6E979
     {"ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6],
      "BADC": [0xF642, 0x79E9], "DCBA": [0x79E9, 0xF642]}),
    ("int64", -0x0102030405060708,  # 0xFEFDFCFBFAF9F8F8
     {"ABCD": [0xFEFD, 0xFCFB, 0xFAF9, 0xF8F8], "CDAB": [0xF8F8, 0xFAF9, 0xFCFB, 0xFEFD],
      "BADC": [0xFDFE, 0xFBFC, 0xF9FA, 0xF8F8], "DCBA": [0xF8F8, 0xF9FA, 0xFBFC, 0xFDFE]}),
    ("uint64", 0x0102030405060708,
     {"ABCD": [0x0102, 0x0304, 0x0506, 0x0708], "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
      "BADC": [0x0201, 0x0403, 0x0605, 0x0807], "DCBA": [0x0807, 0x0605, 0x0403, 0x0201]}),
    ("float64", 1234.5678,  # 0x40934A456D5CFAAD
     {"ABCD": [0x4093, 0x4A45, 0x6D5C, 0xFAAD], "CDAB": [0xFAAD, 0x6D5C, 0x4A45, 0x4093],
      "BADC": [0x9340, 0x454A, 0x5C6D, 0xADFA], "DCBA": [0xADFA, 0x5C6D, 0x454A, 0x9340]}),
]
WORDS_ABCD = {dtype: by_order["ABCD"] for dtype, _, by_order in WORDS}
WORD_CASES = [(dtype, order, value, by_order[order])
              for dtype, value, by_order in WORDS for order in ORDERS]

# Largest and smallest non-sentinel raw values of every numeric type.
EXTREMES = {"int16": (-32767, 32767), "uint16": (0, 0xFFFE), "int32": (-(2**31) + 1, 2**31 - 1),
            "uint32": (0, 2**32 - 2), "int64": (-(2**63) + 1, 2**63 - 1), "uint64": (0, 2**64 - 2),
            "float32": (-3.4e38, 3.4e38), "float64": (-1.7e308, 1.7e308)}


@pytest.mark.parametrize("dtype, order, value, words", WORD_CASES)
def test_encode_gives_the_documented_registers(dtype: str, order: str, value: float, words: list[int]) -> None:
    """Each type lands in the registers its word/byte order prescribes."""
    assert encode(point(dtype), order, value) == words
    assert encode_raw(dtype, order, value) == words


@pytest.mark.parametrize("dtype, order, value, words", WORD_CASES)
def test_decode_reads_the_documented_registers(dtype: str, order: str, value: float, words: list[int]) -> None:
    """Decoding the documented registers gives the value back, ints as exact ints."""
    decoded, quality = decode(point(dtype), order, words)
    assert quality == GOOD
    if dtype == "float32":
        assert decoded == pytest.approx(value, rel=1e-7)
    else:
        assert decoded == value and type(decoded) is type(value)
    assert decode_raw(dtype, order, words) == decoded


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", sorted(EXTREMES))
def test_extremes_round_trip(dtype: str, order: str) -> None:
    """The extreme valid values of every type survive encode then decode in every order."""
    for value in (*EXTREMES[dtype], 0, 1):
        decoded, quality = decode(point(dtype), order, encode(point(dtype), order, value))
        assert quality == GOOD
        assert decoded == pytest.approx(value, rel=1e-7)


@pytest.mark.parametrize("dtype, expected", [
    ("int16", (-0x8000,)), ("uint16", (0xFFFF,)), ("int32", (-0x80000000,)),
    ("uint32", (0xFFFFFFFF,)), ("int64", (-(2**63),)), ("uint64", (2**64 - 1,)),
    ("float32", ()), ("float64", ()), ("bool", ()), ("string", ()),
])
def test_default_sentinels_are_sunspecs(dtype: str, expected: tuple) -> None:
    """Default sentinels are SunSpec's "not implemented" values, as raw decoded numbers."""
    assert default_sentinels(dtype) == expected


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype, words", [
    ("int16", [0x8000]), ("uint16", [0xFFFF]), ("int32", [0x8000, 0]), ("uint32", [0xFFFF, 0xFFFF]),
    ("int64", [0x8000, 0, 0, 0]), ("uint64", [0xFFFF] * 4),
])
def test_default_sentinel_is_invalid(dtype: str, words: list[int], order: str) -> None:
    """A type's "not implemented" value decodes to no value with quality IV."""
    assert decode(point(dtype), order, reorder(words, order)) == (None, IV)


def test_empty_invalid_list_disables_sentinels() -> None:
    """``invalid: []`` makes the SunSpec sentinel an ordinary number."""
    assert decode(point("int16", invalid=[]), "ABCD", [0x8000]) == (-32768, GOOD)


def test_listed_sentinels_replace_the_defaults() -> None:
    """A point's own ``invalid`` list is used instead of the type's default."""
    p = point("int16", invalid=[0x7FFF])
    assert decode(p, "ABCD", [0x7FFF]) == (None, IV)
    assert decode(p, "ABCD", [0x8000]) == (-32768, GOOD)


def test_hex_sentinel_of_a_signed_type_means_its_twos_complement() -> None:
    """``invalid: [0x8000]`` on an int16 matches the register 0x8000 (raw -32768)."""
    assert decode(point("int16", invalid=[0x8000]), "ABCD", [0x8000]) == (None, IV)
    assert decode(point("int32", invalid=[0xFFFFFFFF]), "ABCD", [0xFFFF, 0xFFFF]) == (None, IV)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype, words", [
    ("float32", [0x7FC0, 0x0000]), ("float32", [0x7F80, 0x0000]), ("float32", [0xFF80, 0x0000]),
    ("float64", [0x7FF8, 0, 0, 0]), ("float64", [0x7FF0, 0, 0, 0]), ("float64", [0xFFF0, 0, 0, 0]),
])
def test_nan_and_inf_are_invalid(dtype: str, words: list[int], order: str) -> None:
    """NaN and +/-Inf floats decode to no value with quality IV, even with scale 1."""
    assert decode(point(dtype), order, reorder(words, order)) == (None, IV)


def test_scale_and_offset_give_engineering_units() -> None:
    """A scaled integer decodes to raw * scale + offset as a float."""
    value, quality = decode(point("int16", scale=0.1, offset=-40.0), "ABCD", [1234])
    assert quality == GOOD and isinstance(value, float)
    assert value == pytest.approx(83.4)


def test_scaled_float_applies_scale_and_offset() -> None:
    """Floats are scaled like integers."""
    words = encode_raw("float32", "CDAB", 2.5)
    assert decode(point("float32", scale=1000.0, offset=1.0), "CDAB", words) == (2501.0, GOOD)


def test_sentinel_wins_over_scaling() -> None:
    """A sentinel is checked on the raw value, before scale and offset."""
    assert decode(point("uint16", scale=0.1, offset=5.0), "ABCD", [0xFFFF]) == (None, IV)


def test_encode_inverts_scale_and_offset_rounding_to_nearest() -> None:
    """Writing an engineering value stores round((value - offset) / scale)."""
    p = point("int16", scale=0.1, offset=-40.0)
    assert encode(p, "ABCD", 83.44) == [1234]
    assert encode(p, "ABCD", 83.46) == [1235]


def test_negative_scale_inverts_the_sign() -> None:
    """``scale: -1`` (vendor sign inversion) round-trips."""
    p = point("int32", scale=-1.0)
    assert encode(p, "CDAB", 1500) == encode_raw("int32", "CDAB", -1500)
    assert decode(p, "CDAB", encode(p, "CDAB", 1500)) == (1500.0, GOOD)


def test_large_64_bit_integers_stay_exact() -> None:
    """Unscaled 64-bit values never take a lossy float detour."""
    value = 2**64 - 2
    assert decode(point("uint64"), "DCBA", encode(point("uint64"), "DCBA", value)) == (value, GOOD)
    assert encode(point("int64"), "ABCD", 2**63 - 1) == [0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]


@pytest.mark.parametrize("dtype, value, fields", [
    ("int16", 32768, {}), ("int16", -32769, {}), ("uint16", -1, {}), ("uint16", 65536, {}),
    ("int32", 2**31, {}), ("uint32", 2**32, {}), ("int64", 2**63, {}), ("uint64", 2**64, {}),
    ("uint64", -1, {}), ("float32", 1e39, {}), ("int16", 100.0, {"scale": 0.001}),
    ("uint16", 0.0, {"offset": 10.0}), ("int16", 1e10, {"scale": 1e-300}),
    ("float32", 1e10, {"scale": 1e-300}), ("int16", 1, {"scale": 0.0}),
])
def test_out_of_range_encode_names_the_point(dtype: str, value: float, fields: dict) -> None:
    """A value the register cannot hold raises EncodeError naming the point."""
    p = ModbusPoint(id="grid_limit", address=0, type=dtype, **fields)
    with pytest.raises(EncodeError, match="grid_limit"):
        encode(p, "ABCD", value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_nan_and_inf_cannot_be_encoded(dtype: str, value: float) -> None:
    """NaN/Inf are refused rather than written as a device's "invalid"."""
    with pytest.raises(EncodeError, match="NaN/Inf"):
        encode(point(dtype), "ABCD", value)


def test_encoding_a_sentinel_is_refused() -> None:
    """A write that would read back as "not implemented" is refused, unless sentinels are off."""
    with pytest.raises(EncodeError, match="not implemented"):
        encode(point("int16"), "ABCD", -32768)
    assert encode(point("int16", invalid=[]), "ABCD", -32768) == [0x8000]


@pytest.mark.parametrize("dtype, value", [("int16", "12"), ("float32", True), ("string", 12),
                                          ("bool", "on"), ("bool", 2)])
def test_wrong_value_type_is_refused(dtype: str, value: object) -> None:
    """A value of the wrong kind for the point raises EncodeError."""
    fields = {"length": 2} if dtype == "string" else {"table": "coil"} if dtype == "bool" else {}
    with pytest.raises(EncodeError, match="'p'"):
        encode(point(dtype, **fields), "ABCD", value)


def test_encode_raw_checks_range_and_integrality() -> None:
    """encode_raw refuses raw values the type cannot hold, naming the type."""
    with pytest.raises(EncodeError, match="uint16"):
        encode_raw("uint16", "ABCD", 70000)
    with pytest.raises(EncodeError, match="not an integer"):
        encode_raw("int32", "ABCD", 1.5)
    with pytest.raises(EncodeError, match="float64"):
        encode_raw("float64", "ABCD", 10**400)
    assert encode_raw("int32", "ABCD", 7.0) == [0, 7]


def test_raw_helpers_refuse_strings() -> None:
    """encode_raw/decode_raw are numeric; strings go through encode/decode."""
    with pytest.raises(EncodeError):
        encode_raw("string", "ABCD", 1)
    with pytest.raises(ValueError):
        decode_raw("string", "ABCD", [0x4142])


@pytest.mark.parametrize("order, words", [
    ("ABCD", [0x534E, 0x3132, 0x3300, 0x0000]), ("CDAB", [0x534E, 0x3132, 0x3300, 0x0000]),
    ("BADC", [0x4E53, 0x3231, 0x0033, 0x0000]), ("DCBA", [0x4E53, 0x3231, 0x0033, 0x0000]),
])
def test_string_registers_per_order(order: str, words: list[int]) -> None:
    """Strings put the first character high (or low when bytes are swapped) and pad with NULs."""
    p = point("string", length=4)
    assert encode(p, order, "SN123") == words
    assert decode(p, order, words) == ("SN123", GOOD)


def test_string_trailing_spaces_and_nuls_are_stripped() -> None:
    """Trailing spaces and NULs are padding, not part of the text."""
    assert decode(point("string", length=3), "ABCD", [0x4142, 0x2000, 0x2020]) == ("AB", GOOD)


def test_all_nul_string_is_invalid() -> None:
    """An all-NUL string is SunSpec's "not implemented"."""
    assert decode(point("string", length=2), "ABCD", [0, 0]) == (None, IV)


def test_undecodable_bytes_are_replaced() -> None:
    """Bytes that are not UTF-8 become U+FFFD instead of failing the poll."""
    assert decode(point("string", length=1), "ABCD", [0x41FF]) == ("A\ufffd", GOOD)


def test_utf8_string_round_trips() -> None:
    """Non-ASCII text is stored as UTF-8 bytes."""
    p = point("string", length=4)
    assert decode(p, "BADC", encode(p, "BADC", "储能1")) == ("储能1", GOOD)


def test_string_too_long_is_refused() -> None:
    """A string longer than its registers raises EncodeError naming the point."""
    with pytest.raises(EncodeError, match="'p'.*too long"):
        encode(point("string", length=2), "ABCD", "12345")


@pytest.mark.parametrize("order", ORDERS)
def test_bits_count_in_the_register_as_transmitted(order: str) -> None:
    """Bit n is (register >> n) & 1 whatever the byte order."""
    assert decode(point("bool", bit=0), order, [0x0001]) == (True, GOOD)
    assert decode(point("bool", bit=15), order, [0x8000]) == (True, GOOD)
    assert decode(point("bool", bit=8), order, [0x00FF]) == (False, GOOD)


def test_set_bit_sets_and_clears_one_bit() -> None:
    """set_bit changes only the named bit."""
    assert set_bit(0x00F0, 0, True) == 0x00F1
    assert set_bit(0x00F0, 4, False) == 0x00E0
    assert set_bit(0xFFFF, 15, False) == 0x7FFF
    assert set_bit(0x8000, 15, True) == 0x8000


def test_set_bit_refuses_a_bit_outside_the_register() -> None:
    """Bits beyond 0-15 raise rather than grow the word."""
    with pytest.raises(ValueError):
        set_bit(0, 16, True)


def test_bit_of_a_register_cannot_be_encoded_alone() -> None:
    """Writing one bit needs a read-modify-write, so encode refuses and points to set_bit."""
    with pytest.raises(EncodeError, match="set_bit"):
        encode(point("bool", bit=3), "ABCD", True)


@pytest.mark.parametrize("table", ["coil", "discrete"])
def test_coils_decode_from_a_block_of_bits(table: str) -> None:
    """A coil or discrete input is the bool at its offset in the block's bits."""
    decoder = make_decoder(ModbusPoint(id="c", table=table, address=0, type="bool"), "ABCD")
    bits = [False, True, False]
    assert decoder(bits, 1) == (True, GOOD)
    assert decoder(bits, 2) == (False, GOOD)


def test_coil_encodes_to_one_or_zero() -> None:
    """Writing a coil gives [1] or [0]."""
    coil = point("bool", table="coil")
    assert encode(coil, "ABCD", True) == [1]
    assert encode(coil, "ABCD", False) == [0]
    assert encode(coil, "ABCD", 1) == [1]


def test_decoder_reads_at_an_offset_in_a_block() -> None:
    """A decoder reads its point where it sits inside a merged block."""
    block = [0xDEAD, 0xBEEF, *encode_raw("float32", "CDAB", 49.5), 0x1234]
    assert make_decoder(point("float32"), "CDAB")(block, 2) == (49.5, GOOD)


def test_points_of_one_shape_share_a_decoder() -> None:
    """Decoders are cached by shape, so a profile of many similar points builds few closures."""
    a = ModbusPoint(id="a", address=0, type="float32")
    b = ModbusPoint(id="b", address=10, type="float32")
    assert make_decoder(a, "CDAB") is make_decoder(b, "CDAB")
    assert make_decoder(a, "CDAB") is not make_decoder(a, "ABCD")


def test_points_with_an_invalid_list_decode() -> None:
    """``invalid`` is a list (unhashable); decoding such a point still works and is cached."""
    p = point("uint16", invalid=[0, 0xFFFF])
    assert make_decoder(p, "ABCD") is make_decoder(p, "ABCD")
    assert decode(p, "ABCD", [0]) == (None, IV)


@pytest.mark.parametrize("dtype, order, value, words", WORD_CASES)
def test_register_table_follows_the_order_definitions(dtype: str, order: str, value: float, words: list[int]) -> None:
    """The hand-written register table is self-consistent with the order definitions."""
    assert reorder(WORDS_ABCD[dtype], order) == words
