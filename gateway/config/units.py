"""Durations and sizes as engineers write them (``500ms``, ``5m``, ``1GiB``), parsed into numbers."""

import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, None: 1}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``250ms``, ``2s``, ``5m``, ``7d``."""
    if isinstance(value, bool):
        raise ValueError("a duration, such as 500ms, 2s, 5m or 7d")
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 2s, 5m, 7d)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_size(value: object) -> int:
    """Bytes from a number or a string such as ``512MB`` or ``1GiB``."""
    if isinstance(value, bool):
        raise ValueError("a size, such as 512MB or 1GiB")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size (use e.g. 512MB, 1GiB)")
    unit = match.group(2).lower() if match.group(2) else None
    return int(float(match.group(1)) * _BYTES[unit])


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
