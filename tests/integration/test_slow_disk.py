"""A slow disk stays off the reactor: with 50 ms injected into every spool, event-buffer and audit
file operation, none of them runs on the reactor thread, polls keep their period and a setpoint's
ACT_CON does not wait for the disk.

The delay is injected into the file layer the gateway uses: every SQLite call of ``Spool`` (commit,
read, delete, expire, close) and ``os.fsync`` (the audit log's). The assertion that can fail is the
thread: any of those calls made on the reactor thread after start-up would have stalled polls and
commands by 50 ms each.
"""

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted

from gateway.aio import as_deferred
from gateway.spool import Spool
from tests import wire104 as w
from tests.integration.sites import until
from tests.integration.test_commands import CA, SETPOINT, _site

pytestmark = pytest.mark.integration
DELAY_S = 0.05
ACT_CON, SPONTANEOUS = 7, 3


class SlowDisk:
    """Wraps file operations with a 50 ms delay and records on which thread each ran."""

    def __init__(self) -> None:
        self.measuring = False
        self.on_reactor: list[str] = []
        self.off_reactor: list[str] = []

    def slow(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def slowed(*args: Any, **kwargs: Any) -> Any:
            if self.measuring:
                where = self.on_reactor if threading.current_thread() is threading.main_thread() else self.off_reactor
                where.append(name)
            time.sleep(DELAY_S)
            return call(*args, **kwargs)
        return slowed


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> SlowDisk:
    disk = SlowDisk()
    for name in ("commit", "peek", "peek_after", "delete_through", "expire", "close"):
        monkeypatch.setattr(Spool, name, disk.slow(f"spool.{name}", getattr(Spool, name)))
    monkeypatch.setattr(os, "fsync", disk.slow("os.fsync", os.fsync))
    return disk


@pytest_twisted.ensureDeferred
async def test_a_slow_disk_stretches_neither_polls_nor_act_con(tmp_path: Path, running, slow_disk: SlowDisk) -> None:
    path, port, _ = _site(tmp_path)
    run = await running(path)
    await until(run.all_good, 15)
    table = run.gateway.table
    slow_disk.measuring = True
    polled_at = [table.get("pcs1.ac_active_power").source_time]
    latencies, spontaneous = await as_deferred(_setpoints(port, 5, lambda: _polls(table, polled_at) >= 10))
    slow_disk.measuring = False

    assert slow_disk.on_reactor == [], f"file operations on the reactor thread: {sorted(set(slow_disk.on_reactor))}"
    assert {"spool.commit", "spool.peek_after", "spool.delete_through", "os.fsync"} <= set(slow_disk.off_reactor)
    gaps = [b - a for a, b in zip(polled_at, polled_at[1:])]
    print(f"ACT_CON latency ms {[round(x * 1000) for x in latencies]}, poll gaps ms {[round(g * 1000) for g in gaps]}")
    assert spontaneous > 0  # events went out through the slowed event buffer
    assert max(latencies) < 1.0  # the bound the master's t1 needs; the thread check above is the precise one


def _polls(table: Any, seen: list[float]) -> int:
    now = table.get("pcs1.ac_active_power").source_time
    if now != seen[-1]:
        seen.append(now)
    return len(seen)


async def _setpoints(port: int, count: int, done: Callable[[], bool]) -> tuple[list[float], int]:
    """Send ``count`` direct setpoints, then stay until ``done()``; the time from each send to its
    positive ACT_CON and how many spontaneous ASDUs arrived."""
    master = w.RawMaster()
    await master.connect("127.0.0.1", port)
    await master.startdt()
    latencies = []
    try:
        for i in range(count):
            master.mark()
            sent = time.monotonic()
            await master.send_asdu(w.asdu(w.TYPE_IDS["C_SE_NC_1"], 6, CA, [(SETPOINT, w.setpoint_float(40.0 + i))]))
            [reply] = await master.collect(lambda a: a.asdu is not None and a.asdu.cot == ACT_CON, 1, 5)
            latencies.append(time.monotonic() - sent)
            assert not reply.asdu.negative, reply.asdu
        deadline = time.monotonic() + 15
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        spontaneous = len([a for a in master.received if a.asdu is not None and a.asdu.cot == SPONTANEOUS])
    finally:
        await master.close()
    return latencies, spontaneous
