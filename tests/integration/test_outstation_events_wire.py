"""Not one spontaneous event lost: 10,000-event bursts judged on the wire by tests/wire104.py, with the master
stalled mid-burst, with the link broken before acknowledging, and with a CPU burner on both cores."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted

from gateway.aio import as_deferred, await_deferred
from gateway.model import Quality, Sample
from tests import wire104 as w
from tests.integration.sites import until
from tests.integration.test_outstation import _group, _site
from tests.ports import next_port

pytestmark = pytest.mark.integration
IOA, BURST, M_ME_TF = 900, 10_000, 36


def _burst(run: Any) -> list[Sample]:
    """Publish 10,000 changes of one point at once (each its own event: one object per ASDU)."""
    start = time.time() - 100
    burst = [Sample("d0.r000", float(i), Quality.GOOD, start + i / 100, start + i / 100) for i in range(1, BURST + 1)]
    run.gateway.table.publish(burst)
    return burst


def _events(master: w.RawMaster) -> list[w.InfoObject]:
    return [o for a in master.received if a.asdu is not None and a.asdu.cot == 3 and a.asdu.type_id == M_ME_TF
            for o in a.asdu.objects if o.ioa == IOA]


def _burst_part(objects: list[w.InfoObject]) -> list[w.InfoObject]:
    """The events of the burst (values 1..10,000), without the simulator's own value (0) before and after it."""
    return [o for o in objects if o.value >= 1.0]


def _assert_complete(received: list[w.InfoObject], burst: list[Sample]) -> None:
    values = [o.value for o in received]
    assert values == [s.value for s in burst], f"{len(values)} received, first gap at " \
        f"{next((i for i, (a, b) in enumerate(zip(values, range(1, BURST + 1))) if a != b), len(values))}"
    tags = [round(o.time.datetime().timestamp() * 1000) for o in received]
    assert tags == [round(s.source_time * 1000) for s in burst]


def _is_event(a: w.Apdu, value: float | None = None) -> bool:
    """A spontaneous M_ME_TF_1 of the point (with ``value``, when given)."""
    return (a.asdu is not None and a.asdu.cot == 3 and a.asdu.type_id == M_ME_TF
            and any(o.ioa == IOA and (value is None or o.value == value) for o in a.asdu.objects))


async def _all_sent(run: Any, master: w.RawMaster) -> None:
    """Wait until everything the outstation queued so far has reached ``master`` and was released.

    Publish one more change (-1, outside the burst's values) and wait for it, then for the device's
    next poll putting its own value (0) back: events go out in order, so all queued before them
    arrived, and no change is left to send. Then acknowledge at once (not after t2) and wait until
    the outstation released every acknowledged event, so that a close right after leaves nothing
    unacknowledged behind."""
    now = time.time()
    run.gateway.table.publish([Sample("d0.r000", -1.0, Quality.GOOD, now, now)])
    sentinel_seen = False

    def restored_after_sentinel(a: w.Apdu) -> bool:  # wait_for scans the APDUs in the order received
        nonlocal sentinel_seen
        sentinel_seen = sentinel_seen or _is_event(a, -1.0)
        return sentinel_seen and _is_event(a, 0.0)
    await master.wait_for(restored_after_sentinel, 10)
    master.ack()
    await await_deferred(until(lambda: run.gateway.northbound["iec104"][0].outstations[0].stats()["buffered"] == 0, 10))


async def _started(port: int) -> w.RawMaster:
    master = w.RawMaster()
    await master.connect("127.0.0.1", port)
    await master.startdt()
    return master


@pytest.fixture
def outstation(tmp_path: Path, running):
    """A site with one mapped point (M_ME_TF_1), running under TZ=UTC semantics; yields (run, port)."""
    @pytest_twisted.inlineCallbacks
    def start() -> Iterator:
        port = next_port()
        run = yield running(_site(tmp_path, 1, 1, [_group("dispatch", port, [
            {"point": "d0.r000", "ioa": IOA, "type": "M_ME_TF_1"}], event_buffer={"send_rate": 5000})]))
        yield until(run.all_good)
        yield until(lambda: run.gateway.northbound["iec104"][0].outstations[0].listening)
        return run, port
    return start


@pytest.mark.parametrize("attempt", [1, 2, 3])
@pytest_twisted.ensureDeferred
async def test_burst_with_the_master_stalled_10s_mid_burst_loses_nothing(outstation, attempt: int) -> None:
    """The master stops reading for 10 s after 3,000 events: all 10,000 arrive once, in order, with their time tags."""
    run, port = await outstation()

    async def body() -> None:
        master = await _started(port)
        burst = _burst(run)
        await until_count(master, 3000, 20)
        master.pause_reading()
        await asyncio.sleep(10)
        master.resume_reading()
        await until_count(master, BURST, 60)
        await _all_sent(run, master)  # a duplicate would have come by now
        _assert_complete(_burst_part(_events(master)), burst)
        assert not master.errors and not master.closed
        await master.close()
    await as_deferred(body())
    await until(lambda: run.gateway.northbound["iec104"][0].outstations[0].stats()["buffered"] == 0, 10)


@pytest_twisted.ensureDeferred
async def test_link_broken_before_acknowledging_resends_exactly_the_unacknowledged(outstation) -> None:
    """A master that never acknowledges and then drops the link: the next master gets every event again from the
    first unacknowledged one, in order; duplicates are exactly the frames the first master never acknowledged."""
    run, port = await outstation()

    async def body() -> None:
        first = w.RawMaster(auto_ack=False)
        await first.connect("127.0.0.1", port)
        await first.startdt()
        await first.wait_for(_is_event, 5)  # the start-up value, after the end of initialisation
        first.ack()  # acknowledge what came before the burst (end of initialisation, the start-up value)
        burst = _burst(run)
        await until_count(first, 12, 10)  # k = 12 frames, then the outstation must wait
        await asyncio.sleep(1)
        unacknowledged = _burst_part(_events(first))
        assert len(unacknowledged) == 12, "nothing beyond the k window without an acknowledgement"
        await first.close()
        second = await _started(port)
        await until_count(second, BURST, 60)
        await _all_sent(run, second)
        again = _burst_part(_events(second))
        assert [o.value for o in again[:12]] == [o.value for o in unacknowledged]
        _assert_complete(again, burst)
        await second.close()
    await as_deferred(body())


@pytest.mark.parametrize("attempt", [1, 2, 3])
@pytest_twisted.ensureDeferred
async def test_burst_under_a_cpu_burner_on_both_cores_loses_nothing(outstation, attempt: int) -> None:
    """Two busy-looping processes load both cores during the burst: 0 lost, 0 reordered."""
    run, port = await outstation()
    burners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 60\n"
                                 "while time.time() < end: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        async def body() -> None:
            master = await _started(port)
            burst = _burst(run)
            await until_count(master, BURST, 60)
            await _all_sent(run, master)
            _assert_complete(_burst_part(_events(master)), burst)
            await master.close()
        await as_deferred(body())
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


async def until_count(master: w.RawMaster, count: int, timeout: float) -> None:
    """Wait until ``count`` burst events (values >= 1) arrived."""
    deadline = time.monotonic() + timeout
    while sum(1 for o in _events(master) if o.value >= 1.0) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{sum(1 for o in _events(master) if o.value >= 1.0)} of {count} events "
                                 f"after {timeout} s")
        await asyncio.sleep(0.05)
