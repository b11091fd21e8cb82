"""Monitor direction of the outstation judged on the wire by tests/wire104.py (shares no code with hat or c104):
interrogation types, counters, spontaneous types and time tags, clock synchronisation."""

import time
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import pytest_twisted
import yaml

from gateway.aio import as_deferred
from gateway.model import Quality, Sample
from tests import wire104 as w
from tests.integration.sites import until
from tests.ports import next_ports

pytestmark = pytest.mark.integration
CA = 9
C_IC, C_CI, C_CS = 100, 101, 103
ACT, ACT_CON, SPONT, ACT_TERM = 6, 7, 3, 10
PROFILE = {"model": "MON", "kind": "other", "protocol": "modbus", "points": [
    {"id": "s", "table": "coil", "address": 0, "type": "bool", "sim": {"kind": "constant", "value": True}},
    {"id": "dp", "table": "coil", "address": 1, "type": "bool", "sim": {"kind": "constant", "value": True}},
    {"id": "f", "address": 2, "type": "int16", "sim": {"kind": "constant", "value": 7}},
    {"id": "e", "address": 3, "type": "uint32", "scale": 0.01, "sim": {"kind": "constant", "value": 1234.56}}]}
POINTS = [{"point": "d0.s", "ioa": 1, "type": "M_SP_TB_1"}, {"point": "d0.dp", "ioa": 2, "type": "M_DP_TB_1"},
          {"point": "d0.f", "ioa": 3, "type": "M_ME_TF_1"}, {"point": "d0.f", "ioa": 4, "type": "M_ME_TE_1"},
          {"point": "d0.f", "ioa": 5, "type": "M_ME_TD_1", "full_scale": 100},
          {"point": "d0.e", "ioa": 6, "type": "M_IT_TB_1", "multiplier": 100},
          {"point": "d0.f", "ioa": 7, "type": "M_ME_NC_1", "gi": False}]


def _site(folder: Path, step_os_clock: bool) -> tuple[Path, int]:
    (folder / "mon.yaml").write_text(yaml.safe_dump(PROFILE))
    device_port, port = next_ports(2)
    group = {"name": "dispatch", "bind": "127.0.0.1", "port": port, "allowed_masters": ["127.0.0.1"],
             "common_address": CA, "points": POINTS, "comm_status": {"d0": 100}, "buffer_overflow_ioa": 101,
             "clock_alarm_ioa": 102, "clock_sync": {"alarm_offset_s": "1s", "step_os_clock": step_os_clock}}
    site = {"site": "mon", "spool": {"path": str(folder / "spool.db")},
            "devices": [{"name": "d0", "profile": "mon", "poll_s": 0.2, "timeout_s": 0.3,
                         "connection": {"host": "127.0.0.1", "port": device_port}}],
            "master_groups": [group]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, port


def _run(body: Callable[..., Awaitable[Any]], step_os_clock: bool = False) -> Callable[..., Any]:
    """Run an asyncio test body with the started site and a raw master that did STARTDT."""
    @pytest_twisted.ensureDeferred
    async def test(tmp_path: Path, running) -> None:
        path, port = _site(tmp_path, step_os_clock)
        run = await running(path)
        await until(run.all_good, 15)
        await until(lambda: run.gateway.northbound["iec104"][0].outstations[0].listening)
        await as_deferred(_with_master(body, run, port))
    test.__doc__ = body.__doc__
    return test


async def _with_master(body: Callable[..., Awaitable[Any]], run: Any, port: int) -> None:
    master = w.RawMaster()
    await master.connect("127.0.0.1", port)
    await master.startdt()
    try:
        await body(run, master)
    finally:
        await master.close()
    assert not master.errors, master.errors


async def _exchange(master: w.RawMaster, request: bytes, type_id: int, last_cot: int = ACT_TERM) -> list[w.Asdu]:
    """Send ``request``; every ASDU received from then through its ``last_cot`` reply (or a negative ACT_CON)."""
    master.mark()
    await master.send_asdu(request)
    await master.collect(lambda a: a.asdu is not None and a.asdu.type_id == type_id
                         and (a.asdu.cot == last_cot or a.asdu.negative), 1, 5)
    return [a for a in master.asdus() if a.type_id == type_id or a.cot != SPONT]


def _by_ioa(asdus: list[w.Asdu], cot: int) -> dict[int, tuple[int, object]]:
    return {o.ioa: (a.type_id, o.value) for a in asdus if a.cot == cot for o in a.objects}


@_run
async def test_gi_answers_untagged_types_only_and_no_counters(run: Any, master: w.RawMaster) -> None:
    """GI: ACT_CON, untagged twins of tagged points at COT 20 (status and alarms as M_SP_NA_1), no counters, no gi:false, ACT_TERM."""
    asdus = await _exchange(master, w.asdu(C_IC, ACT, CA, [(0, w.qoi(20))]), C_IC)
    assert (asdus[0].type_id, asdus[0].cot, asdus[-1].type_id, asdus[-1].cot) == (C_IC, ACT_CON, C_IC, ACT_TERM)
    answers = _by_ioa(asdus, 20)
    assert {ioa: t for ioa, (t, _) in answers.items()} == {1: 1, 2: 3, 3: 13, 4: 11, 5: 9, 100: 1, 101: 1, 102: 1}
    assert answers[1][1] is True and answers[2][1] == 2 and answers[3][1] == 7.0 and answers[4][1] == 7
    assert answers[5][1] == pytest.approx(0.07, abs=1 / 32768)
    assert all(o.time is None for a in asdus for o in a.objects)


@_run
async def test_group_interrogation_is_refused(run: Any, master: w.RawMaster) -> None:
    """QOI 21 (group 1): negative ACT_CON, no data."""
    asdus = await _exchange(master, w.asdu(C_IC, ACT, CA, [(0, w.qoi(21))]), C_IC)
    assert [(a.type_id, a.cot, a.negative) for a in asdus] == [(C_IC, ACT_CON, True)]


@_run
async def test_counter_interrogation_keeps_the_meter_resolution_and_freezes(run: Any, master: w.RawMaster) -> None:
    """CI: M_IT_NA_1 at COT 37 carrying 1234.56 kWh x 100; after a freeze, reads answer the frozen count."""
    asdus = await _exchange(master, w.asdu(C_CI, ACT, CA, [(0, w.qcc(5, 0))]), C_CI)
    assert _by_ioa(asdus, 37) == {6: (15, 123456)}
    frozen = await _exchange(master, w.asdu(C_CI, ACT, CA, [(0, w.qcc(5, 1))]), C_CI)
    assert [(a.type_id, a.cot, a.negative) for a in frozen] == [(C_CI, ACT_CON, False), (C_CI, ACT_TERM, False)]
    now = time.time()
    run.gateway.table.publish([Sample("d0.e", 2000.0, Quality.GOOD, now, now)])
    asdus = await _exchange(master, w.asdu(C_CI, ACT, CA, [(0, w.qcc(5, 0))]), C_CI)
    assert _by_ioa(asdus, 37) == {6: (15, 123456)}
    reset = await _exchange(master, w.asdu(C_CI, ACT, CA, [(0, w.qcc(5, 2))]), C_CI)
    assert [(a.cot, a.negative) for a in reset] == [(ACT_CON, True)]


@_run
async def test_changes_go_out_tagged_with_their_source_time_and_counters_do_not(run: Any, master: w.RawMaster) -> None:
    """A change: M_ME_TF_1/TE_1/TD_1 with CP56Time2a of the source time and M_ME_NC_1 at COT 3; a counter change sends nothing."""
    master.mark()  # the start-up values may still be coming: every check below names the changed value
    source = time.time() - 3600.25
    run.gateway.table.publish([Sample("d0.f", 9.0, Quality.GOOD, source, time.time()),
                               Sample("d0.e", 5000.0, Quality.GOOD, source, time.time())])
    # then a later change of d0.f: events go out in order, so once it arrived anything the first
    # publish sent (a counter event included, were there one) has arrived before it
    run.gateway.table.publish([Sample("d0.f", 11.0, Quality.GOOD, time.time(), time.time())])
    await master.collect(lambda a: a.asdu is not None and a.asdu.cot == SPONT
                         and any(o.ioa == 7 and o.value == 11.0 for o in a.asdu.objects), 1, 5)
    events = [(a.type_id, o) for a in master.asdus() if a.cot == SPONT for o in a.objects]
    changes = {o.ioa: (t, o) for t, o in reversed(events) if o.value in (9.0, 9)}
    assert {ioa: t for ioa, (t, _) in changes.items()} == {3: 36, 4: 35, 7: 13}
    assert any(t == 34 and o.ioa == 5 and o.value == pytest.approx(0.09, abs=1 / 32768) for t, o in events)
    assert not any(o.ioa == 6 for _, o in events)
    tag = changes[3][1].time.datetime()
    assert abs((tag - datetime.utcfromtimestamp(source)).total_seconds()) < 0.001


async def _invalid_clock_sync(run: Any, master: w.RawMaster) -> None:
    """C_CS_NA_1 with the IV bit, or all 0xFF: negative ACT_CON, OS clock untouched (step_os_clock is on), clock alarm raised."""
    for tag in (w.cp56(datetime(2001, 1, 1), invalid=True), b"\xff" * 7):
        before = time.time()
        asdus = await _exchange(master, w.asdu(C_CS, ACT, CA, [(0, tag)]), C_CS, ACT_CON)
        assert [(a.type_id, a.cot, a.negative) for a in asdus] == [(C_CS, ACT_CON, True)]
        assert abs(time.time() - before) < 2
    alarm = await master.wait_for(lambda a: a.asdu is not None and a.asdu.cot == SPONT
                                  and any(o.ioa == 102 for o in a.asdu.objects), 5)
    assert alarm.asdu.type_id == 30 and [o.value for o in alarm.asdu.objects if o.ioa == 102] == [True]


test_invalid_clock_sync_is_refused_and_never_steps_the_clock = _run(_invalid_clock_sync, step_os_clock=True)


@_run
async def test_valid_clock_sync_is_confirmed_with_the_time_mirrored(run: Any, master: w.RawMaster) -> None:
    """A C_CS_NA_1 with the gateway's own time (UTC on the wire): positive ACT_CON carrying the same time."""
    now = datetime.utcnow().replace(microsecond=0)
    asdus = await _exchange(master, w.asdu(C_CS, ACT, CA, [(0, w.cp56(now))]), C_CS, ACT_CON)
    assert [(a.type_id, a.cot, a.negative) for a in asdus] == [(C_CS, ACT_CON, False)]
    assert asdus[0].objects[0].time.datetime() == now
