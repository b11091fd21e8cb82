"""The spool: a durable, bounded FIFO of samples in SQLite."""

import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from enum import IntEnum
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread

from gateway.model import Quality, Sample
from gateway.spool import Spool, SpoolError

T0 = 1_795_500_000.0


class FakeClock:
    """A settable clock for age-based behaviour."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample(i: int, value: object = None, point: str = "pcs1.p", gateway_time: float | None = None) -> Sample:
    return Sample(point, float(i) if value is None else value, Quality.GOOD, T0 + i,
                  T0 + i if gateway_time is None else gateway_time)


def open_spool(tmp_path: Path, max_bytes: int = 1 << 30, max_age_s: float = 86400.0,
               overflow: str = "drop_oldest", clock: FakeClock | None = None) -> Spool:
    return Spool(str(tmp_path / "spool.db"), max_bytes, max_age_s, overflow, clock or FakeClock())  # type: ignore[arg-type]


def test_only_committed_samples_are_visible_oldest_first(tmp_path: Path) -> None:
    """peek sees nothing before commit, then returns samples oldest first with rising ids."""
    spool = open_spool(tmp_path)
    spool.append([sample(i) for i in range(3)])
    assert spool.peek(10) == [] and spool.depth() == 0
    assert spool.commit() == 3
    spool.append([sample(i) for i in range(3, 5)])
    assert spool.commit() == 2
    rows = spool.peek(10)
    assert [r.value for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert [r.value for r in spool.peek(2)] == [0.0, 1.0]
    assert spool.commit() == 0


class Mode(IntEnum):
    AUTO = 2


VALUES = [1.5, -0.0, 0.0, 0, 7, -3, 2**70, -(2**65), True, False, "", "düse \"x\"\n\\", None,
          math.inf, -math.inf, 1e300, Mode.AUTO]


def test_values_round_trip_with_their_type(tmp_path: Path) -> None:
    """Every value kind comes back equal and of the same type (bool stays bool, 0 stays int, 0.0 float)."""
    spool = open_spool(tmp_path)
    spool.append([Sample("d.p", v, Quality.NT | Quality.IV, T0 + 0.123, T0 + 1) for v in VALUES])
    spool.append([Sample("d.nan", math.nan, Quality.GOOD, T0, T0)])
    spool.commit()
    rows = spool.peek(100)
    for expected, row in zip(VALUES, rows):
        want_type = int if isinstance(expected, Mode) else type(expected)
        assert type(row.value) is want_type and row.value == expected, (expected, row.value)
    assert math.copysign(1, rows[1].value) == -1  # -0.0 keeps its sign
    assert math.isnan(rows[-1].value) and type(rows[-1].value) is float
    first = rows[0]
    assert (first.point, first.quality, first.source_time, first.gateway_time) == \
        ("d.p", int(Quality.NT | Quality.IV), T0 + 0.123, T0 + 1)


def test_delete_through_removes_only_confirmed_rows(tmp_path: Path) -> None:
    """delete_through(id) removes that row and older ones, and nothing newer."""
    spool = open_spool(tmp_path)
    spool.append([sample(i) for i in range(10)])
    spool.commit()
    rows = spool.peek(4)
    spool.delete_through(rows[-1].id)
    assert spool.depth() == 6
    assert [r.value for r in spool.peek(100)] == [float(i) for i in range(4, 10)]


def test_ids_never_restart_after_the_spool_empties(tmp_path: Path) -> None:
    """A row committed after the spool emptied gets a higher id, so a stale delete_through cannot hit it."""
    spool = open_spool(tmp_path)
    spool.append([sample(i) for i in range(5)])
    spool.commit()
    in_flight = spool.peek(5)
    spool.delete_through(in_flight[-1].id)
    spool.append([sample(99)])
    spool.commit()
    spool.delete_through(in_flight[-1].id)  # a writer confirming the old batch twice
    assert [r.value for r in spool.peek(10)] == [99.0]
    assert spool.peek(1)[0].id > in_flight[-1].id


def test_drop_oldest_keeps_the_file_under_the_limit_and_the_newest_rows(tmp_path: Path, caplog) -> None:
    """Over max_bytes, drop_oldest deletes the oldest rows, logs a WARNING with the count and counts them."""
    limit = 256 * 1024
    spool = open_spool(tmp_path, max_bytes=limit, overflow="drop_oldest")
    caplog.set_level(logging.WARNING, "gateway.spool")
    n = 0
    for _ in range(40):
        spool.append([sample(n + i, point="pcs1.active_power_setpoint") for i in range(500)])
        n += 500
        assert spool.commit() == 500
        assert spool.size_bytes() <= limit
    stats = spool.stats()
    assert stats["dropped_overflow"] > 0
    assert stats["dropped_overflow"] + spool.depth() == n
    rows = spool.peek(n)
    assert rows[-1].value == float(n - 1)  # newest kept
    assert [r.value for r in rows] == [float(i) for i in range(n - len(rows), n)]  # a contiguous tail
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("dropped the" in w for w in warnings)
    assert len(warnings) < 40  # the 1 % margin: not one drop per commit


def test_refuse_new_keeps_old_rows_and_discards_the_new_batch(tmp_path: Path, caplog) -> None:
    """Over max_bytes, refuse_new rolls back the new batch, warns once per episode, counts, and never raises."""
    limit = 128 * 1024
    spool = open_spool(tmp_path, max_bytes=limit, overflow="refuse_new")
    caplog.set_level(logging.INFO, "gateway.spool")
    accepted = 0
    while True:
        spool.append([sample(accepted + i) for i in range(200)])
        got = spool.commit()
        if got == 0:
            break
        accepted += got
    spool.append([sample(10**6 + i) for i in range(200)])
    assert spool.commit() == 0  # still full: refused again, without another warning
    assert spool.depth() == accepted and spool.size_bytes() <= limit
    assert spool.peek(accepted)[-1].value == float(accepted - 1)
    assert spool.stats()["refused"] == 400
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "refusing" in warnings[0].getMessage()
    spool.delete_through(spool.peek(accepted)[-1].id)  # the writer drains it
    spool.append([sample(5)])
    assert spool.commit() == 1
    assert any("accepts samples again" in r.getMessage() for r in caplog.records)


def test_expire_drops_rows_older_than_max_age(tmp_path: Path, caplog) -> None:
    """expire() deletes rows whose gateway_time is older than max_age_s, returns and logs the count."""
    clock = FakeClock(T0 + 1000)
    spool = open_spool(tmp_path, max_age_s=100.0, clock=clock)
    spool.append([sample(i, gateway_time=T0 + 880 + i) for i in range(40)])  # 880..919
    spool.commit()
    caplog.set_level(logging.WARNING, "gateway.spool")
    assert spool.expire() == 20  # 880..899 are older than 900
    assert spool.depth() == 20 and spool.peek(1)[0].gateway_time == T0 + 900
    assert spool.oldest_age() == pytest.approx(100.0)
    assert "20 samples" in caplog.records[-1].getMessage()
    assert spool.expire() == 0
    clock.now += 1000
    assert spool.expire() == 20 and spool.depth() == 0 and spool.oldest_age() is None
    assert spool.stats()["expired"] == 40


def test_reopen_after_close_keeps_rows_and_commits_the_buffer(tmp_path: Path) -> None:
    """close() commits what is buffered; a reopened spool has every row, its depth, and continues the ids."""
    spool = open_spool(tmp_path)
    spool.append([sample(i) for i in range(3)])
    spool.commit()
    spool.append([sample(3)])
    spool.close()
    again = open_spool(tmp_path)
    rows = again.peek(10)
    assert [r.value for r in rows] == [0.0, 1.0, 2.0, 3.0] and again.depth() == 4
    again.append([sample(4)])
    again.commit()
    assert again.peek(10)[-1].id > rows[-1].id
    again.close()


def test_a_file_that_is_not_a_spool_is_refused(tmp_path: Path) -> None:
    """Opening a non-SQLite file raises SpoolError naming the path instead of overwriting it."""
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError, match="spool.db"):
        Spool(str(path), 1 << 20, 60.0, "drop_oldest")


_CHILD = r"""
import sys
from gateway.model import Quality, Sample
from gateway.spool import Spool
spool = Spool(sys.argv[1], 1 << 30, 86400.0, "drop_oldest")
i = 0
while True:
    spool.append([Sample("pcs1.p", float(i + k), Quality.GOOD, 1.0 + i + k, 2.0) for k in range(500)])
    i += 500
    spool.commit()
    print(i, flush=True)          # everything below i is accepted now
"""


def test_every_committed_sample_survives_a_sigkill(tmp_path: Path) -> None:
    """A producer SIGKILLed mid-stream loses no committed sample, and the file is intact on reopen."""
    path = tmp_path / "spool.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, env=env)
    assert child.stdout is not None
    committed = 0
    for line in child.stdout:
        committed = int(line)
        if committed >= 50_000:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    spool = Spool(str(path), 1 << 30, 86400.0, "drop_oldest")
    rows = spool.peek(10**7)
    assert len(rows) >= committed
    assert [r.value for r in rows[:committed]] == [float(i) for i in range(committed)]
    spool.close()


class _FailingDb:
    """A connection whose transactions fail as on a full disk, until ``healthy`` is set."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.healthy = db, False

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE" and not self.healthy:
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_while_commits_fail_memory_holds_the_newest_rows_up_to_the_byte_cap(tmp_path: Path, caplog) -> None:
    """A failing disk keeps rows in memory, capped in bytes (oldest dropped and counted, logged once);
    once the disk works the newest rows are committed in order."""
    spool = Spool(str(tmp_path / "spool.db"), 1 << 30, 86400.0, "drop_oldest", FakeClock(),  # type: ignore[arg-type]
                  memory_bytes=100 * 176)
    failing = _FailingDb(spool._db)
    spool._db = failing  # type: ignore[assignment]
    caplog.set_level(logging.ERROR, "gateway.spool")
    for start in (0, 100, 200):
        spool.append([sample(i) for i in range(start, start + 100)])
        with pytest.raises(SpoolError, match="disk is full"):
            spool.commit()
    stats = spool.stats()
    assert (stats["buffered"], stats["dropped_unwritable"]) == (100, 200)
    assert stats["buffered_bytes"] <= spool.memory_bytes
    assert len([r for r in caplog.records if "dropping the oldest" in r.getMessage()]) == 1
    failing.healthy = True
    assert spool.commit() == 100
    assert [r.value for r in spool.peek(1000)] == [float(i) for i in range(200, 300)]
    spool.close()


@pytest_twisted.ensureDeferred
async def test_commits_asked_for_while_one_runs_share_one_follow_up_commit(tmp_path: Path) -> None:
    """On the spool's thread a stalled commit queues one more job, not one per caller, and every
    row appended meanwhile is committed by it."""
    from twisted.internet import reactor
    from gateway.spoolthread import ThreadedSpool

    spool = open_spool(tmp_path)
    release, started, runs = threading.Event(), threading.Event(), []
    real_commit = spool.commit

    def stalled_commit() -> int:
        runs.append(threading.current_thread().name)
        started.set()
        release.wait(10)
        return real_commit()

    spool.commit = stalled_commit  # type: ignore[method-assign]
    threaded = ThreadedSpool(spool, reactor)
    threaded.append([sample(0)])
    first = threaded.commit()
    await deferToThread(started.wait, 10)
    threaded.append([sample(1), sample(2)])
    waiting = [threaded.commit() for _ in range(5)]
    release.set()
    results = await gatherResults([first, *waiting])
    # the first commit took the buffer after its stall (all 3 rows); the five callers shared one more job
    assert len(runs) == 2 and "spool:" in runs[0] and results == [3, 0, 0, 0, 0, 0]
    assert [r.value for r in await threaded.peek(10)] == [0.0, 1.0, 2.0]
    await threaded.close()


def test_salvage_keeps_the_rows_on_intact_pages_in_order_and_moves_the_file_aside(tmp_path: Path, caplog) -> None:
    """A spool with damaged pages in the middle: moved aside with a time stamp, a new spool holds the rows
    SQLite could still read, oldest first, with their values and times; a healthy spool is left alone."""
    from gateway.spoolsalvage import salvage

    path = tmp_path / "spool.db"
    spool = open_spool(tmp_path)
    spool.append([sample(i, point=f"pcs{i % 7}.p_kw_with_a_long_name") for i in range(20_000)])
    spool.commit()
    spool.close()
    assert salvage(str(path)) is None
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle:middle + 3 * 4096] = b"\xa5" * (3 * 4096)
    path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, "gateway.spoolsalvage")
    result = salvage(str(path), clock=lambda: T0)
    assert result is not None and result.moved_to == f"{path}.corrupt-20261124T060000Z"
    assert Path(result.moved_to).read_bytes() == bytes(data)
    assert 10_000 < result.rows < 20_000
    rows = Spool(str(path), 1 << 30, 86400.0, "drop_oldest").peek(10**6)
    values = [r.value for r in rows]
    assert len(rows) == result.rows and values == sorted(values) and rows[0].value == 0.0
    assert all(r.source_time == T0 + r.value for r in rows)
    assert len([r for r in caplog.records if "readable rows salvaged" in r.getMessage()]) == 1
