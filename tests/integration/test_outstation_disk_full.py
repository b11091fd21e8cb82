"""A full disk under the event buffer: the outstation keeps answering GI and keeps its fail-safe watchdog, and
once space is back every event that arrived meanwhile reaches the master, in order (judged by tests/wire104.py)."""

import asyncio
import errno
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted
import yaml

from gateway.aio import as_deferred, await_deferred
from gateway.model import Quality, Sample
from tests import wire104 as w
from tests.integration.sites import until
from tests.integration.test_commands import CA, POWER, _site

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (the test runs as root, as CI does), unmounted afterwards whatever happened."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"cannot mount a tmpfs (this test needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def _power_events(master: w.RawMaster) -> list[float]:
    return [o.value for a in master.received if a.asdu is not None and a.asdu.cot == 3
            for o in a.asdu.objects if o.ioa == POWER and o.value >= 1000]


@pytest_twisted.ensureDeferred
async def test_events_gi_and_failsafe_survive_a_full_disk(tmp_path: Path, small_disk: Path, running) -> None:
    """Disk full: GI still answers, the fail-safe still fires; space back: all 200 changes made meanwhile arrive in order."""
    path, port, _ = _site(tmp_path, failsafe={"after_s": "2s",
                                              "writes": [{"point": "pcs1.active_power_setpoint", "value": 0}]})
    site = yaml.safe_load(path.read_text())
    site["master_groups"][0]["event_buffer"] = {"path": str(small_disk / "events.db")}
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    run = await running(path)
    await until(run.all_good, 15)
    await until(lambda: run.gateway.northbound["iec104"][0].outstations[0].listening)

    async def body() -> None:
        master = w.RawMaster()
        await master.connect("127.0.0.1", port)
        await master.startdt()
        filler = _fill(small_disk)
        now = time.time()
        changes = [Sample("pcs1.ac_active_power", 1000.0 + i, Quality.GOOD, now + i / 1000, now) for i in range(200)]
        for sample in changes:
            run.gateway.table.publish([sample])
        master.mark()
        await master.send_asdu(w.asdu(100, 6, CA, [(0, w.qoi(20))]))
        await master.collect(lambda a: a.asdu is not None and a.asdu.type_id == 100 and a.asdu.cot == 10, 1, 5)
        # the commit must have failed (the disk is full); it runs on the buffer's thread, so wait for it
        await await_deferred(until(lambda: run.gateway.northbound["iec104"][0].outstations[0].stats()["errors"] > 0, 10))
        await master.close()
        await await_deferred(until(lambda: '"failsafe"' in (tmp_path / "audit.jsonl").read_text(), 10))
        filler.unlink()
        again = w.RawMaster()
        await again.connect("127.0.0.1", port)
        await again.startdt()
        deadline = time.monotonic() + 15
        while len(_power_events(again)) < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _power_events(again) == [s.value for s in changes]
        await again.close()
    await as_deferred(body())
