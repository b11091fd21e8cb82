"""Line protocol for InfluxDB: escaping, value kinds, quality, timestamps."""

import math

import pytest

from gateway.lineprotocol import escape_tag, series_prefix, to_line
from gateway.model import Quality
from gateway.spool import SpooledSample

PREFIX = "gridgate,point=p,site=s"


def spooled(value: object, quality: int = 0, source_time: float = 1_795_512_205.579,
            gateway_time: float = 1_795_512_299.0) -> SpooledSample:
    return SpooledSample(1, "pcs1.p", value, quality, source_time, gateway_time)  # type: ignore[arg-type]


def test_timestamp_is_the_source_time_in_milliseconds() -> None:
    """The line carries source_time (not gateway_time) in ms, rounded rather than truncated."""
    assert to_line(PREFIX, spooled(1.0)).endswith(" 1795512205579")  # 1795512205.579 * 1000 = ...578.99
    assert to_line(PREFIX, spooled(1.0, source_time=1.0006)).endswith(" 1001")


@pytest.mark.parametrize("value, fields", [
    (21.5, "value=21.5,quality=0i"),
    (-0.001, "value=-0.001,quality=0i"),
    (1e20, "value=1e+20,quality=0i"),
    (42, "value=42,quality=0i"),
    (-7, "value=-7,quality=0i"),
    (2**70, f"value={2**70},quality=0i"),
    (True, "value=1,quality=0i"),
    (False, "value=0,quality=0i"),
])
def test_numbers_of_every_kind_share_one_float_field(value: object, fields: str) -> None:
    """float, int and bool all become the float field 'value', so InfluxDB never sees a type conflict."""
    assert to_line(PREFIX, spooled(value)) == f"{PREFIX} {fields} 1795512205579"


def test_text_goes_to_a_string_field_with_quotes_and_backslashes_escaped() -> None:
    """A str value is the quoted field 'text'; quote, backslash and newline are escaped."""
    line = to_line(PREFIX, spooled('mode "auto"\\on\nline2'))
    assert line == f'{PREFIX} text="mode \\"auto\\"\\\\on\\nline2",quality=0i 1795512205579'
    assert "\n" not in line


@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf])
def test_a_sample_without_a_writable_value_carries_only_its_quality(value: object) -> None:
    """IV without a value, NaN and infinity (refused by InfluxDB) produce just the quality field."""
    quality = int(Quality.IV | Quality.NT)
    assert to_line(PREFIX, spooled(value, quality)) == f"{PREFIX} quality={quality}i 1795512205579"


def test_quality_is_the_integer_of_the_104_bits() -> None:
    """Quality flags travel as an i-suffixed integer with the IEC 104 bit values."""
    assert ",quality=48i " in to_line(PREFIX, spooled(1.0, int(Quality.SB | Quality.BL)))


def test_tags_escape_comma_equals_space_and_lose_backslashes() -> None:
    """Tag keys and values escape , = and space; controls become spaces; backslash becomes '/'."""
    assert escape_tag("cell temp,max=1") == r"cell\ temp\,max\=1"
    assert escape_tag("a\nb\tc") == r"a\ b\ c"
    assert escape_tag("C:\\dir\\") == "C:/dir/"
    assert escape_tag("m³/h") == "m³/h"


def test_series_prefix_sorts_tags_and_leaves_out_empty_values() -> None:
    """The prefix is measurement then tags sorted by key; an empty tag (refused by InfluxDB) is omitted."""
    prefix = series_prefix("grid gate,1", {"site": "s1", "unit": "", "device": "pcs 1", "point": "p=1"})
    assert prefix == r"grid\ gate\,1,device=pcs\ 1,point=p\=1,site=s1"
