"""InfluxDB line protocol for spooled samples (pure: text in, text out).

The line format is chosen so that a real InfluxDB never refuses a sample for its type: a
field's type is fixed per measurement (per shard), and every point shares the measurement and
the field names. So numbers of every kind (float, int, bool as 1/0) go into one float field
``value``, text into a string field ``text``, the 104 quality bits into an integer ``quality``.
"""

import math
from typing import Mapping

from gateway.spool import SpooledSample

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "/",
                              "\n": r"\ ", "\r": r"\ ", "\t": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\\": "/",
                                      "\n": r"\ ", "\r": r"\ ", "\t": r"\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def escape_tag(text: str) -> str:
    """A tag key or value for line protocol.

    Comma, equals and space are backslash-escaped; whitespace controls become escaped spaces.
    A backslash becomes ``/``: InfluxDB 1.x has no way to write one before a comma or at the
    end of a tag value, so no backslash survives rather than some.
    """
    return text.translate(_TAG_ESCAPES)


def series_prefix(measurement: str, tags: Mapping[str, str]) -> str:
    """The ``measurement,k=v,...`` start of a line; tags sorted by key, empty values left out.

    InfluxDB refuses a tag with an empty value ("missing tag value"), and sorted tags are what
    it stores anyway (the docs recommend sending them sorted).
    """
    parts = [measurement.translate(_MEASUREMENT_ESCAPES)]
    parts += [f"{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if k and v]
    return ",".join(parts)


def _value_field(value: object) -> str:
    """``value=...,`` or ``text="...",`` or nothing (IV without value, NaN, infinity)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "value=1," if value else "value=0,"
    if isinstance(value, int):
        return f"value={value},"  # digits without the i suffix: a float field, exact below 2**53
    if isinstance(value, float):
        return f"value={value!r}," if math.isfinite(value) else ""
    return f'text="{str(value).translate(_STRING_ESCAPES)}",'


def to_line(prefix: str, s: SpooledSample) -> str:
    """One line of line protocol, millisecond precision, stamped with the sample's source time.

    InfluxDB refuses NaN and infinity, so such a sample carries only its quality, like an
    invalid sample without a value.
    """
    return f"{prefix} {_value_field(s.value)}quality={int(s.quality)}i {round(s.source_time * 1000)}"
