"""Command conformance of the outstation judged on the wire by tests/wire104.py (shares no code with hat or c104).

A raw-socket master sends the octets a hostile or careless dispatch master could send; the
replies are decoded from the bytes, the PCS simulator shows whether anything was written, and
the audit log shows every refusal.
"""

import asyncio
import json
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import pytest_twisted

from gateway.aio import as_deferred
from tests import wire104 as w
from tests.integration.sites import until
from tests.integration.test_commands import CA, SETPOINT, SETPOINT_READBACK, SETPOINT_SBO, _site

pytestmark = pytest.mark.integration
C_SE_NC, C_SE_TC = w.TYPE_IDS["C_SE_NC_1"], w.TYPE_IDS["C_SE_TC_1"]
ACT, ACT_CON, DEACT, DEACT_CON, ACT_TERM, RETURN_INFO = 6, 7, 8, 9, 10, 11


def _run(body: Callable[..., Awaitable[Any]], startdt: bool = True) -> Callable[..., Any]:
    """Run an asyncio test body (which gets the started site and a connected raw master, data transfer
    started unless ``startdt`` is False) on the test reactor."""
    @pytest_twisted.ensureDeferred
    async def test(tmp_path: Path, running) -> None:
        path, port, _ = _site(tmp_path)
        run = await running(path)
        await until(run.all_good, 15)
        await as_deferred(_with_master(body, run, port, tmp_path, startdt))
    test.__doc__ = body.__doc__
    return test


def _unstarted(body: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """``_run`` with a master that has sent nothing yet (no STARTDT)."""
    return _run(body, startdt=False)


async def _with_master(body: Callable[..., Awaitable[Any]], run: Any, port: int, folder: Path,
                       startdt: bool = True) -> None:
    master = w.RawMaster()
    await master.connect("127.0.0.1", port)
    if startdt:
        await master.startdt()
    try:
        await body(run, master, folder)
    finally:
        await master.close()
    assert not master.errors, master.errors


async def _command(master: w.RawMaster, ioa: int, value: float, cot: int = ACT, select: bool = False,
                   **flags: Any) -> w.Asdu:
    """Send one C_SE_NC_1 and return the first reply at that IOA."""
    master.mark()
    await master.send_asdu(w.asdu(C_SE_NC, cot, flags.pop("ca", CA), [(ioa, w.setpoint_float(value, select))],
                                  **flags))
    [reply] = await master.collect(lambda a: a.asdu is not None and a.asdu.type_id == C_SE_NC
                                   and a.asdu.objects[0].ioa == ioa, 1, 5)
    return reply.asdu


def _setpoint(run: Any) -> float:
    return run.simulators[0].value("pcs1", "active_power_setpoint")


def _audit(folder: Path, event: str) -> list[dict]:
    records = [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == event]


async def _settle() -> None:
    await asyncio.sleep(0.3)


@_run
async def test_only_activation_writes_every_other_cause_is_refused(run: Any, master: w.RawMaster, folder: Path) -> None:
    """COT 0, 3, 10, 63 on a setpoint: negative COT 45 mirror, nothing written, each refusal audited."""
    before = _setpoint(run)
    for cot in (0, 3, 10, 63):
        reply = await _command(master, SETPOINT, 40.0, cot=cot)
        assert (reply.cot, reply.negative, reply.objects[0].value) == (45, True, 40.0), cot
    await _settle()
    assert _setpoint(run) == before
    assert len([r for r in _audit(folder, "refused") if "cause of transmission" in r["reason"]]) == 4


@_run
async def test_deactivation_without_a_select_is_refused_and_writes_nothing(run: Any, master: w.RawMaster,
                                                                          folder: Path) -> None:
    """COT 8 with nothing selected: negative COT 9, no write."""
    before = _setpoint(run)
    reply = await _command(master, SETPOINT_SBO, 40.0, cot=DEACT)
    assert (reply.cot, reply.negative) == (DEACT_CON, True)
    await _settle()
    assert _setpoint(run) == before


@_run
async def test_test_bit_negative_bit_unknown_address_and_ioa_never_write(run: Any, master: w.RawMaster,
                                                                        folder: Path) -> None:
    """T bit: negative ACT_CON with T; P/N bit: COT 45; wrong CA: COT 46; unknown IOA: COT 47; device untouched."""
    before = _setpoint(run)
    reply = await _command(master, SETPOINT, 40.0, test=True)
    assert (reply.cot, reply.negative, reply.test) == (ACT_CON, True, True)
    reply = await _command(master, SETPOINT, 40.0, negative=True)
    assert (reply.cot, reply.negative) == (45, True)
    reply = await _command(master, SETPOINT, 40.0, ca=CA + 1)
    assert (reply.cot, reply.negative, reply.ca) == (46, True, CA + 1)
    reply = await _command(master, 999, 40.0)
    assert (reply.cot, reply.negative) == (47, True)
    await _settle()
    assert _setpoint(run) == before


@_run
async def test_direct_setpoint_act_con_return_information_act_term_in_order(run: Any, master: w.RawMaster,
                                                                           folder: Path) -> None:
    """Direct execute: ACT_CON (S/E 0, positive), COT 11 of the related setpoint IOA carrying the value read back
    after the write (not the image from before it), ACT_TERM (S/E 0), in that order."""
    reply = await _command(master, SETPOINT, 40.0)
    assert (reply.cot, reply.negative, reply.objects[0].select) == (ACT_CON, False, False)
    await master.wait_for(lambda a: a.asdu is not None and a.asdu.cot == ACT_TERM, 5)
    sequence = [(a.asdu.cot, a.asdu.objects[0].ioa) for a in master.received[len(master.received) - 3:]]
    assert sequence == [(ACT_CON, SETPOINT), (RETURN_INFO, SETPOINT_READBACK), (ACT_TERM, SETPOINT)]
    info = [a.asdu for a in master.received if a.asdu is not None and a.asdu.cot == RETURN_INFO][-1]
    assert info.objects[0].value == pytest.approx(40.0)
    term = master.received[-1].asdu
    assert (term.negative, term.objects[0].select, term.objects[0].value) == (False, False, 40.0)
    assert _setpoint(run) == pytest.approx(40.0)


@_run
async def test_select_then_matching_execute_writes_once_with_the_right_s_e_bits(run: Any, master: w.RawMaster,
                                                                                folder: Path) -> None:
    """SBO: select ACT_CON has S/E 1 and writes nothing; the execute's ACT_CON and ACT_TERM have S/E 0."""
    before = _setpoint(run)
    reply = await _command(master, SETPOINT_SBO, 30.0, select=True)
    assert (reply.cot, reply.negative, reply.objects[0].select) == (ACT_CON, False, True)
    await _settle()
    assert _setpoint(run) == before
    reply = await _command(master, SETPOINT_SBO, 30.0)
    assert (reply.cot, reply.negative, reply.objects[0].select) == (ACT_CON, False, False)
    term = await master.wait_for(lambda a: a.asdu is not None and a.asdu.cot == ACT_TERM, 5)
    assert (term.asdu.negative, term.asdu.objects[0].select) == (False, False)
    assert _setpoint(run) == pytest.approx(30.0)
    assert [r["point"] for r in _audit(folder, "selected")] == ["pcs1.active_power_setpoint"]


@_run
async def test_execute_must_match_its_select(run: Any, master: w.RawMaster, folder: Path) -> None:
    """Select 30 then execute 20: negative ACT_CON, no write, and the selection is gone (a later execute 30 fails)."""
    before = _setpoint(run)
    assert not (await _command(master, SETPOINT_SBO, 30.0, select=True)).negative
    reply = await _command(master, SETPOINT_SBO, 20.0)
    assert (reply.cot, reply.negative) == (ACT_CON, True)
    reply = await _command(master, SETPOINT_SBO, 30.0)
    assert (reply.cot, reply.negative) == (ACT_CON, True)
    await _settle()
    assert _setpoint(run) == before
    assert any("does not match its select" in r["reason"] for r in _audit(folder, "refused"))


@_run
async def test_deselect_cancels_and_a_following_execute_is_refused(run: Any, master: w.RawMaster, folder: Path) -> None:
    """Select, deselect (COT 8, S/E 1): positive COT 9, no write; the execute after it is refused."""
    before = _setpoint(run)
    assert not (await _command(master, SETPOINT_SBO, 30.0, select=True)).negative
    reply = await _command(master, SETPOINT_SBO, 30.0, cot=DEACT, select=True)
    assert (reply.cot, reply.negative) == (DEACT_CON, False)
    reply = await _command(master, SETPOINT_SBO, 30.0)
    assert (reply.cot, reply.negative) == (ACT_CON, True)
    await _settle()
    assert _setpoint(run) == before


@_run
async def test_execute_with_cot_8_after_a_select_only_cancels(run: Any, master: w.RawMaster, folder: Path) -> None:
    """Select, then an 'execute' sent with COT 8: answered COT 9 positive (a deactivation), never written."""
    before = _setpoint(run)
    assert not (await _command(master, SETPOINT_SBO, 30.0, select=True)).negative
    reply = await _command(master, SETPOINT_SBO, 30.0, cot=DEACT)
    assert (reply.cot, reply.negative) == (DEACT_CON, False)
    await _settle()
    assert _setpoint(run) == before


@_run
async def test_select_on_a_direct_point_and_out_of_range_select_are_refused_at_select(run: Any, master: w.RawMaster,
                                                                                     folder: Path) -> None:
    """A select of a direct IOA and a select outside the point's limits get a negative ACT_CON at once (S/E 1)."""
    reply = await _command(master, SETPOINT, 30.0, select=True)
    assert (reply.cot, reply.negative, reply.objects[0].select) == (ACT_CON, True, True)
    reply = await _command(master, SETPOINT_SBO, 9999.0, select=True)
    assert (reply.cot, reply.negative, reply.objects[0].select) == (ACT_CON, True, True)
    assert any("outside" in r["reason"] for r in _audit(folder, "refused"))


@_run
async def test_unknown_type_gets_cot_44(run: Any, master: w.RawMaster, folder: Path) -> None:
    """A type the outstation does not serve (C_RC_NA_1, regulating step) is mirrored negatively with COT 44."""
    master.mark()
    await master.send_asdu(w.asdu(47, ACT, CA, [(SETPOINT, bytes([0x01]))]))
    reply = await master.wait_for(lambda a: a.asdu is not None and a.asdu.type_id == 47, 5)
    assert (reply.asdu.cot, reply.asdu.negative) == (44, True)


@pytest_twisted.ensureDeferred
async def test_master_from_a_non_allowed_ip_is_closed_and_counted(tmp_path: Path, running) -> None:
    """A master whose IP is not in allowed_masters is disconnected before any frame; the refusal is counted."""
    path, port, _ = _site(tmp_path, allowed_masters=["127.0.0.9"])
    run = await running(path)
    await until(lambda: run.gateway.northbound["iec104"][0].outstations[0].listening)

    async def body() -> None:
        master = w.RawMaster()
        await master.connect("127.0.0.1", port)
        with pytest.raises((ConnectionError, asyncio.TimeoutError)):
            await master.startdt(timeout=2)
        await master.close()
    await as_deferred(body())
    assert run.gateway.northbound["iec104"][0].outstations[0].stats()["refused_masters"] >= 1


@_run
async def test_malformed_asdus_are_ignored_and_the_link_keeps_serving(run: Any, master: w.RawMaster,
                                                                     folder: Path) -> None:
    """Truncated command, trailing octets, a 3-octet ASDU, an unknown type id: nothing written, the link still answers GI."""
    before = _setpoint(run)
    good = w.asdu(C_SE_NC, ACT, CA, [(SETPOINT, w.setpoint_float(40.0))])
    for bad in (good[:-2], good + b"\x00", good[:3], bytes([200]) + good[1:]):
        await master.send_asdu(bad)
    master.mark()
    await master.send_asdu(w.asdu(100, ACT, CA, [(0, w.qoi(20))]))
    await master.collect(lambda a: a.asdu is not None and a.asdu.type_id == 100 and a.asdu.cot == ACT_TERM, 1, 5)
    assert _setpoint(run) == before
    assert run.gateway.northbound["iec104"][0].outstations[0].stats()["malformed"] == 3
    unknown = [a.asdu for a in master.received if a.asdu is not None and a.asdu.type_id == 200]
    assert [(a.cot, a.negative) for a in unknown] == [(44, True)]


def _setpoint_frame(master: w.RawMaster, value: float) -> bytes:
    """A direct setpoint (C_SE_NC_1, COT 6) as a whole I-frame with the master's next N(S), not yet sent."""
    frame = w.i_frame(master.ssn, master.rsn, w.asdu(C_SE_NC, ACT, CA, [(SETPOINT, w.setpoint_float(value))]))
    master.ssn += 1
    return frame


@_unstarted
async def test_command_in_the_segment_of_startdt_act_is_answered_after_startdt_con(run: Any, master: w.RawMaster,
                                                                                  folder: Path) -> None:
    """STARTDT act and a direct setpoint in one TCP write: STARTDT con is the first APDU on the wire, then the
    command is executed once and answered ACT_CON, ACT_TERM (frames are processed in the order received)."""
    await master.send_raw(w.u_frame("STARTDT_ACT") + _setpoint_frame(master, 40.0))
    await master.wait_for(lambda a: a.asdu is not None and a.asdu.type_id == C_SE_NC and a.asdu.cot == ACT_TERM, 5)
    assert master.received[0].u == "STARTDT_CON", [a.summary() for a in master.received]
    answers = [(a.asdu.cot, a.asdu.negative) for a in master.received
               if a.asdu is not None and a.asdu.type_id == C_SE_NC]
    assert answers == [(ACT_CON, False), (ACT_TERM, False)]
    assert _setpoint(run) == pytest.approx(40.0)
    assert [r["point"] for r in _audit(folder, "written")] == ["pcs1.active_power_setpoint"]


@_unstarted
async def test_command_before_startdt_act_in_the_same_segment_is_not_executed(run: Any, master: w.RawMaster,
                                                                              folder: Path) -> None:
    """A direct setpoint and then STARTDT act in one TCP write: the command arrived before STARTDT, so it is
    neither executed nor answered (hat handles STARTDT before the outstation reads the I-frame); the link
    starts and a setpoint sent after STARTDT con is executed."""
    await _setpoint_then_u_frame_does_nothing(run, master, "STARTDT")
    assert not (folder / "audit.jsonl").exists() or not _audit(folder, "received")
    assert run.gateway.northbound["iec104"][0].outstations[0].stats()["before_startdt"] == 1
    reply = await _command(master, SETPOINT, 30.0)
    assert (reply.cot, reply.negative) == (ACT_CON, False)
    await master.wait_for(lambda a: a.asdu is not None and a.asdu.type_id == C_SE_NC and a.asdu.cot == ACT_TERM, 5)
    assert _setpoint(run) == pytest.approx(30.0)


@_run
async def test_command_before_stopdt_act_in_the_same_segment_is_not_executed(run: Any, master: w.RawMaster,
                                                                             folder: Path) -> None:
    """A direct setpoint and then STOPDT act in one TCP write: by the time the command is read data transfer is
    stopped, so no ACT_CON could go out; it is not executed (never a command without its confirmation)."""
    await _setpoint_then_u_frame_does_nothing(run, master, "STOPDT")


async def _setpoint_then_u_frame_does_nothing(run: Any, master: w.RawMaster, u: str) -> None:
    """A direct setpoint followed by ``u`` act in one TCP write: confirmed U-frame, no write, no answer."""
    before = _setpoint(run)
    await master.send_raw(_setpoint_frame(master, 40.0) + w.u_frame(f"{u}_ACT"))
    await master.wait_for(lambda a: a.u == f"{u}_CON", 5)
    await _settle()
    assert _setpoint(run) == before
    assert not [a for a in master.received if a.asdu is not None and a.asdu.type_id == C_SE_NC]



@pytest_twisted.ensureDeferred
async def test_garbage_from_one_master_logs_a_line_per_kind_not_per_frame(tmp_path: Path, running, caplog) -> None:
    """500 malformed ASDUs, 50 ASDUs before STARTDT and 5 connections closed by hat for APCI violations: one
    WARNING per kind from the outstation (the close with its cause, in one line), no traceback from hat."""
    import logging
    from gateway.northbound.iec104.outstation import PEER_LOG
    PEER_LOG.forget()
    path, port, _ = _site(tmp_path)
    run = await running(path)
    await until(run.all_good, 15)
    outstation = run.gateway.northbound["iec104"][0].outstations[0]

    async def flood() -> None:
        master = w.RawMaster()
        await master.connect("127.0.0.1", port)
        await master.startdt()
        truncated = w.asdu(C_SE_NC, ACT, CA, [(SETPOINT, w.setpoint_float(40.0))])[:-2]
        for _ in range(500):
            await master.send_asdu(truncated)
        master.mark()
        await master.send_asdu(w.asdu(100, ACT, CA, [(0, w.qoi(20))]))
        await master.collect(lambda a: a.asdu is not None and a.asdu.type_id == 100 and a.asdu.cot == ACT_TERM, 1, 10)
        await master.close()
        unstarted = w.RawMaster()
        await unstarted.connect("127.0.0.1", port)
        for _ in range(50):
            await unstarted.send_asdu(w.asdu(100, ACT, CA, [(0, w.qoi(20))]))
        await asyncio.sleep(0.3)
        await unstarted.close()
        for _ in range(5):
            master = w.RawMaster()
            await master.connect("127.0.0.1", port)
            await master.send_raw(bytes(6))  # start octet 0x00: hat closes the connection
            with pytest.raises(ConnectionError):
                await master.wait_for(lambda a: False, 5)
            await master.close()
    with caplog.at_level(logging.INFO):
        await as_deferred(flood())
        await until(lambda: outstation.stats()["masters"] == 0, 5)
    assert len([r for r in caplog.records if r.getMessage().endswith(" connected")]) == 7
    assert (outstation.stats()["malformed"], outstation.stats()["before_startdt"]) == (500, 50)
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "gateway.northbound.iec104.outstation" and r.levelno >= logging.WARNING]
    assert len(warnings) == 3, warnings
    assert sum("sent a malformed ASDU" in m for m in warnings) == 1
    assert sum("while data transfer was not started" in m for m in warnings) == 1
    [closed] = [m for m in warnings if "disconnected: " in m]
    assert closed.startswith("104 group provincial: master 127.0.0.1:") and \
        closed.endswith("disconnected: protocol error: invalid start identifier"), closed
    assert not [r for r in caplog.records if r.name.startswith("hat.") and r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in caplog.text
