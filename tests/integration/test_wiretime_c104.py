"""WireClock against a real c104 Server and Client, each process TZ in its own subprocess.

c104 converts datetimes with the C library's local time, fixed when the process starts, so every
process TZ runs ``wiretime_probe.py`` in a subprocess and the tests check its JSON report.
"""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import next_port

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("wiretime_probe.py")
# 18:34 UTC is 02:34 the next day in Beijing: the date rolls over as well as the hour
TS = datetime.datetime(2026, 3, 1, 18, 34, 56, 789000, tzinfo=datetime.timezone.utc).timestamp()
WIRE_WALL = {  # [year, month, day, hour, minute, ms in minute, day of week (c104 sends 0)]
    "UTC": [2026, 3, 1, 18, 34, 56789, 0],
    "Asia/Shanghai": [2026, 3, 2, 2, 34, 56789, 0],
}
PROCESS_OFFSET_S = {"UTC": 0, "Asia/Shanghai": 8 * 3600}


@pytest.fixture(scope="module", params=list(PROCESS_OFFSET_S))
def probe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The probe's report, run once per process TZ; ``report["tz"]`` names it."""
    tz = request.param
    out = tmp_path_factory.mktemp("wiretime") / "report.json"
    done = subprocess.run([sys.executable, str(PROBE), str(out), repr(TS), str(next_port())], env={**os.environ, "TZ": tz},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"probe under TZ={tz} failed:\n{done.stdout}\n{done.stderr}"
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["utc_offset_s"] == PROCESS_OFFSET_S[tz], f"TZ={tz} not in effect (tz database missing?)"
    return {**report, "tz": tz}


@pytest.mark.parametrize("wire_zone", list(WIRE_WALL))
def test_wire_shows_the_wall_time_in_the_wire_zone(probe: dict, wire_zone: str) -> None:
    """A time tag from WireClock(wire_zone).to_c104(ts) goes out as ts's wall time in wire_zone, whatever the process TZ."""
    assert probe["zones"][wire_zone]["wire"] == WIRE_WALL[wire_zone]


@pytest.mark.parametrize("wire_zone", list(WIRE_WALL))
def test_received_time_tag_reads_back_as_the_sample_time(probe: dict, wire_zone: str) -> None:
    """WireClock(wire_zone).from_c104 of the recorded_at a c104 client received gives back ts to the millisecond."""
    assert probe["zones"][wire_zone]["from_c104"] == TS


def test_c104_sends_naive_datetimes_as_process_local_time(probe: dict) -> None:
    """c104 2.2.1 takes a datetime as process-local time and sends it as UTC: the reason WireClock exists."""
    sent = datetime.datetime.fromisoformat(probe["raw_naive"]["sent"])
    expected = sent - datetime.timedelta(seconds=PROCESS_OFFSET_S[probe["tz"]])
    assert probe["raw_naive"]["wire"][:5] == [expected.year, expected.month, expected.day, expected.hour, expected.minute]


def test_clock_sync_from_a_c104_master_reads_as_now(probe: dict) -> None:
    """A c104 client's clock sync carries its clock as UTC; the server's from_c104 (wire UTC) lands within 1 s of time.time()."""
    sync = probe["clock_sync"]
    assert abs(sync["from_c104"] - sync["now"]) < 1.0
    year, month, day, hour, minute, ms = sync["wire"][:6]
    wire_as_utc = datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.timezone.utc).timestamp() + ms / 1000
    assert abs(wire_as_utc - sync["now"]) < 1.0
