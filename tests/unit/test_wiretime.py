"""WireClock arithmetic against a model of what c104 2.2.1 does with datetimes (measured, see wiretime.py).

The model uses the same C calls c104 does (mktime/gmtime out, timegm/localtime in), so switching
the process TZ with ``time.tzset()`` affects model and WireClock alike; the real c104 is exercised
in tests/integration/test_wiretime_c104.py.
"""

import calendar
import datetime
import os
import time
from typing import Iterator

import pytest

from gateway.iec104.wiretime import WireClock

UTC = datetime.timezone.utc
Fields = tuple[int, int, int, int, int, int]  # year, month, day, hour, minute, ms in minute


def posix(*args: int) -> float:
    """POSIX timestamp of a UTC date and time; the last argument, if 7 are given, is milliseconds."""
    *fields, ms = args if len(args) == 7 else (*args, 0)
    return datetime.datetime(*fields, ms * 1000, tzinfo=UTC).timestamp()


def c104_sends(dt: datetime.datetime) -> Fields:
    """CP56Time2a fields c104 writes for ``recorded_at=dt``: fields read as local time, sent as UTC."""
    g = time.gmtime(time.mktime(dt.replace(tzinfo=None, microsecond=0).timetuple()))
    return g.tm_year, g.tm_mon, g.tm_mday, g.tm_hour, g.tm_min, g.tm_sec * 1000 + dt.microsecond // 1000


def c104_hands_over(fields: Fields) -> datetime.datetime:
    """The ``recorded_at`` c104 gives for received CP56Time2a fields: read as UTC, returned naive local."""
    year, month, day, hour, minute, ms = fields
    seconds = calendar.timegm((year, month, day, hour, minute, ms // 1000))
    return datetime.datetime.fromtimestamp(seconds) + datetime.timedelta(milliseconds=ms % 1000)


@pytest.fixture(params=["UTC", "Asia/Shanghai", "America/New_York"])
def process_tz(request: pytest.FixtureRequest) -> Iterator[str]:
    """The process runs under this TZ for the test (C library included), then gets its own back."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield request.param
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


WALL_CASES = [  # wire zone, sample time, what the wire must show
    ("UTC", posix(2026, 3, 1, 18, 34, 56, 789), (2026, 3, 1, 18, 34, 56789)),
    ("Asia/Shanghai", posix(2026, 3, 1, 18, 34, 56, 789), (2026, 3, 2, 2, 34, 56789)),
    ("Europe/Berlin", posix(2026, 1, 15, 12, 0, 0), (2026, 1, 15, 13, 0, 0)),
    ("Europe/Berlin", posix(2026, 7, 15, 12, 0, 0), (2026, 7, 15, 14, 0, 0)),
]


@pytest.mark.parametrize(("wire_zone", "ts", "wall"), WALL_CASES)
def test_to_c104_puts_the_wire_zone_wall_time_on_the_wire(process_tz: str, wire_zone: str, ts: float, wall: Fields) -> None:
    """What c104 sends for to_c104(ts) is ts's wall time in the wire zone (DST offset of that instant), in any process TZ."""
    assert c104_sends(WireClock(wire_zone).to_c104(ts)) == wall


@pytest.mark.parametrize(("wire_zone", "ts", "wall"), WALL_CASES)
def test_from_c104_reads_wire_zone_wall_time_back_as_the_instant(process_tz: str, wire_zone: str, ts: float, wall: Fields) -> None:
    """A wire time from a master in the wire zone, as c104 hands it over, reads back as the exact timestamp."""
    assert WireClock(wire_zone).from_c104(c104_hands_over(wall)) == ts


def test_wall_time_is_the_naive_wire_zone_time_to_the_millisecond() -> None:
    """wall_time gives the naive wall-clock time in the wire zone, for logs and checks."""
    clock = WireClock("Asia/Shanghai")
    assert clock.wall_time(posix(2026, 3, 1, 18, 34, 56, 789)) == datetime.datetime(2026, 3, 2, 2, 34, 56, 789000)


def test_to_c104_rounds_to_the_nearest_millisecond(process_tz: str) -> None:
    """Sub-millisecond digits are rounded before c104 (which would truncate 56.7896 to 56.789) sees them."""
    assert c104_sends(WireClock("UTC").to_c104(posix(2026, 3, 1, 18, 34, 56) + 0.7896)) == (2026, 3, 1, 18, 34, 56790)


@pytest.mark.parametrize(("wire_zone", "ts"), [
    ("UTC", posix(1999, 12, 31, 23, 59, 59)),
    ("Asia/Shanghai", posix(2099, 12, 31, 16, 0, 0)),
    ("UTC", posix(1970, 1, 1, 0, 0, 0)),
])
def test_wall_time_outside_the_cp56time2a_years_is_refused(wire_zone: str, ts: float) -> None:
    """A wall time outside 2000-2099 (7-bit year) raises ValueError instead of going out as a wrong year."""
    with pytest.raises(ValueError, match="CP56Time2a"):
        WireClock(wire_zone).to_c104(ts)


def test_year_range_is_judged_in_the_wire_zone() -> None:
    """1999-12-31 16:00 UTC is 2000-01-01 00:00 in Beijing, so a Beijing wire can carry it."""
    assert WireClock("Asia/Shanghai").wall_time(posix(1999, 12, 31, 16, 0, 0)) == datetime.datetime(2000, 1, 1)


@pytest.mark.parametrize("ts", [float("nan"), float("inf")])
def test_non_finite_timestamp_is_refused(ts: float) -> None:
    """NaN and infinity raise ValueError."""
    with pytest.raises(ValueError, match="finite"):
        WireClock("UTC").to_c104(ts)


def test_unknown_zone_is_refused() -> None:
    """An unknown zone name raises ValueError naming it."""
    with pytest.raises(ValueError, match="Mars/Olympus"):
        WireClock("Mars/Olympus")


def test_from_c104_takes_an_aware_datetime_as_the_decoded_instant() -> None:
    """An aware datetime is the instant whose UTC fields are the wire fields, whatever its tzinfo."""
    instant = datetime.datetime(2026, 3, 2, 2, 34, 56, 789000, tzinfo=UTC)
    beijing = instant.astimezone(datetime.timezone(datetime.timedelta(hours=8)))
    assert WireClock("Asia/Shanghai").from_c104(instant) == posix(2026, 3, 1, 18, 34, 56, 789)
    assert WireClock("Asia/Shanghai").from_c104(beijing) == posix(2026, 3, 1, 18, 34, 56, 789)
    assert WireClock("UTC").from_c104(instant) == posix(2026, 3, 2, 2, 34, 56, 789)


def test_repeated_wire_zone_hour_reads_as_its_first_pass(process_tz: str) -> None:
    """Berlin's 02:30 on 2026-10-25 happens twice; the wire cannot tell (no SU bit from c104), so it reads as 00:30 UTC."""
    clock = WireClock("Europe/Berlin")
    first, second = posix(2026, 10, 25, 0, 30, 0), posix(2026, 10, 25, 1, 30, 0)
    assert c104_sends(clock.to_c104(first)) == c104_sends(clock.to_c104(second)) == (2026, 10, 25, 2, 30, 0)
    assert clock.from_c104(c104_hands_over((2026, 10, 25, 2, 30, 0))) == first
