"""CP56Time2a time tags in the wire zone the master expects, whatever the gateway process's TZ.

What c104 2.2.1 does with time tags, as measured with a real c104 Server and Client on 127.0.0.1
under TZ=UTC, TZ=Asia/Shanghai and TZ=America/New_York (pinned by
``tests/integration/test_wiretime_c104.py``):

* Python -> wire (``recorded_at=`` of every ``*Info`` / ``*Cmd``, server and client side): c104
  reads only the datetime's fields and ignores ``tzinfo`` (12:34+08:00, 12:34-05:00 and a naive
  12:34 go out the same). It takes the fields as process-local wall time (C ``mktime``, DST
  guessed, ``fold`` ignored) and writes the **UTC** fields of that instant. Under
  TZ=Asia/Shanghai a 12:34:56.789 goes out as 04:34:56.789. Sub-millisecond digits are truncated.
  Day of week, SU and IV go out as 0.
* wire -> Python (``Information.recorded_at`` of received monitoring data and commands, the
  ``date_time`` of ``Server.on_clock_sync``): c104 reads the fields as UTC and returns that
  instant as a **naive process-local** datetime (C ``localtime``) with millisecond precision.
  Under TZ=Asia/Shanghai a wire 04:34 comes back as 12:34.
* ``Connection.clock_sync()`` sends the client's OS clock as UTC fields.

So c104 on its own is right only for a UTC wire, fed with naive process-local datetimes.
``WireClock`` hands c104 the local datetime of the instant whose UTC fields are the wire-zone
wall time of the sample, and reverses that for what c104 hands back.

Limitations: a process TZ with DST repeats one local hour a year, and c104 cannot tell the two
passes apart (it ignores ``fold``): such instants go out, and come back, an hour off. Run the
gateway with TZ=UTC or another zone without DST (Asia/Shanghai is fine). The wire zone itself may
have DST: its offset is taken at each instant (zoneinfo). A wire time in that zone's repeated hour
is ambiguous on the wire too (c104 cannot set SU), and ``from_c104`` reads it as the earlier pass.
"""

import datetime
import math
import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1)
_WIRE_YEARS = (2000, 2099)  # CP56Time2a carries the year in 7 bits, counted from 2000


def wire_zone(value: str) -> str:
    """A site file's ``wire_time_zone``: ValueError naming it unless it is an IANA zone."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai or UTC)") from None
    return value


class WireClock:
    """Converts POSIX timestamps to and from the datetimes c104 takes and gives, for one wire zone."""

    def __init__(self, zone: str) -> None:
        self._zone = ZoneInfo(wire_zone(zone))
        self.wire_zone = zone

    def __repr__(self) -> str:
        return f"WireClock({self.wire_zone!r})"

    def wall_time(self, ts: float) -> datetime.datetime:
        """The naive wall-clock time of ``ts`` in the wire zone, to the nearest millisecond: what the wire shows."""
        if not math.isfinite(ts):
            raise ValueError(f"timestamp {ts!r} is not a finite number")
        instant = datetime.datetime.fromtimestamp(0, _UTC) + datetime.timedelta(milliseconds=round(ts * 1000))
        wall = instant.astimezone(self._zone).replace(tzinfo=None)
        if not _WIRE_YEARS[0] <= wall.year <= _WIRE_YEARS[1]:
            raise ValueError(f"{wall.isoformat()} ({self.wire_zone}) is outside the CP56Time2a years "
                             f"{_WIRE_YEARS[0]}-{_WIRE_YEARS[1]}")
        return wall

    def to_c104(self, ts: float) -> datetime.datetime:
        """The naive datetime to give c104 (``recorded_at=``) so that the wire shows ``wall_time(ts)``.

        Raises ValueError when that wall time is outside the years CP56Time2a can carry (2000-2099).
        """
        fields_as_utc_ms = (self.wall_time(ts) - _EPOCH) // datetime.timedelta(milliseconds=1)
        seconds, ms = divmod(fields_as_utc_ms, 1000)
        return datetime.datetime.fromtimestamp(seconds) + datetime.timedelta(milliseconds=ms)

    def from_c104(self, dt: datetime.datetime) -> float:
        """The POSIX timestamp meant by the wire fields behind a datetime c104 handed over.

        ``dt`` is naive process-local time, as c104 gives it; an aware datetime is taken as the
        instant c104 decoded. The result is exact to the millisecond.
        """
        if dt.tzinfo is None:  # undo c104's localtime() with the same C call it uses the other way
            instant_ms = int(time.mktime(dt.replace(microsecond=0).timetuple())) * 1000 + dt.microsecond // 1000
        else:
            instant_ms = (dt - datetime.datetime.fromtimestamp(0, _UTC)) // datetime.timedelta(milliseconds=1)
        wall = _EPOCH + datetime.timedelta(milliseconds=instant_ms)
        offset = self._zone.utcoffset(wall)
        return (instant_ms - offset // datetime.timedelta(milliseconds=1)) / 1000

    def from_wall(self, wall: datetime.datetime) -> float:
        """The POSIX timestamp of a naive wall time read off the wire in the wire zone."""
        offset = self._zone.utcoffset(wall)
        return ((wall - _EPOCH) - offset) / datetime.timedelta(seconds=1)
