"""Malformed IEC 60870-5-104 traffic for an outstation, and a campaign that sends it and keeps score.

The frames are built with ``tests/wire104`` (written from the standard's octet tables, no code
shared with hat-drivers, which the outstation runs on), then spoilt:

* ASDU level, behind a correct APCI (the outstation's ASDU handlers see them): the types the
  outstation serves (C_IC, C_CI, C_RD, C_CS, C_TS, and every C_SC/C_DC/C_SE with and without time
  tag) at configured command IOAs, monitored IOAs and unknown ones, with random causes, P/N and
  test bits, common addresses, qualifiers, values and time tags; unserved and unknown types;
  many objects, SQ=1; then, for most, bit flips, truncation, extension or overwritten octets;
* APCI level (IEC 104 lets the outstation close the connection on these): a wrong length octet,
  wrong N(S) or N(R), U-frames with odd control octets, S-frames with odd bits, I-frames without
  ASDU, random octets, whole-frame bit flips; a frame cut in two writes, several in one;
* state: some connections never send STARTDT (their I-frames arrive "before STARTDT"), and the
  random U-frames include STOPDT.

``Campaign.run`` connects ``RawMaster`` after ``RawMaster``, sends frames until the outstation
closes the connection (or the connection's own budget is spent), counts what came back by cause
of transmission, and after every batch checks that a well-behaved master still gets a complete
general interrogation answer (ACT_CON ... ACT_TERM) and that the process is alive.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from tests.mutations import GENERIC, spoil
from tests.wire104 import (RawMaster, U_CODES, asdu, cp56, cp56_raw, dco, i_frame, qcc, qoi, s_frame, sco,
                           setpoint_normalized, setpoint_scaled, u_frame)

C_IC, C_CI, C_RD, C_CS, C_TS = 100, 101, 102, 103, 107
COMMAND_TYPES = frozenset({45, 46, 48, 49, 50, 58, 59, 61, 62, 63})
TIMED_COMMANDS = frozenset({58, 59, 61, 62, 63})
TYPE_IDS = {"C_SC_NA_1": 45, "C_DC_NA_1": 46, "C_SE_NA_1": 48, "C_SE_NB_1": 49, "C_SE_NC_1": 50,
            "C_SC_TA_1": 58, "C_DC_TA_1": 59, "C_SE_TA_1": 61, "C_SE_TB_1": 62, "C_SE_TC_1": 63}
# monitor types, commands this outstation does not serve (C_RC, C_BO, C_TS_NA, C_RP, C_CD, P_*, F_*), and junk
UNSERVED_TYPES = (0, 1, 3, 9, 13, 30, 36, 47, 51, 64, 70, 104, 105, 106, 110, 111, 112, 113, 120, 122, 127, 200, 255)
ACT_CON, ACT_TERM = 7, 10
MAX_ASDU = 251  # the length octet (4 + ASDU) tops out at 255, which hat accepts (the standard says 253)


@dataclass(frozen=True)
class Target:
    """What the outstation under test serves: its common address, command and monitored IOAs."""

    common_address: int
    commands: tuple[tuple[int, int], ...]  # (IOA, type id)
    monitored: tuple[int, ...]


# -- ASDUs ---------------------------------------------------------------------------------------

def _now_tag(rng: random.Random) -> bytes:
    """A CP56Time2a: mostly now (UTC wall time), else old, future, invalid-flagged or random octets."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    pick = rng.random()
    if pick < 0.6:
        return cp56(now)
    if pick < 0.7:
        return cp56(now - timedelta(seconds=rng.choice((30, 3600, 86400 * 400))))
    if pick < 0.8:
        return cp56(now + timedelta(seconds=rng.choice((30, 3600))))
    if pick < 0.9:
        return cp56(now, invalid=True)
    return cp56_raw(rng.randrange(65536), rng.randrange(64), rng.randrange(32), rng.randrange(32),
                    rng.randrange(16), rng.randrange(128), iv=rng.random() < 0.5, su=rng.random() < 0.5,
                    dow=rng.randrange(8))


def _setpoint_value(rng: random.Random) -> float:
    pick = rng.random()
    if pick < 0.5:
        return round(rng.uniform(-20, 20), 1)  # inside the PCS limits and mostly inside its ramp
    if pick < 0.8:
        return rng.uniform(-400, 400)
    return rng.choice((math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0, -0.0, 3.4e38))


def command_element(rng: random.Random, type_id: int, select: bool | None = None) -> bytes:
    """A command element (SCO, DCO or set-point + QOS) with random values, time tag included when tagged."""
    if select is None:
        select = rng.random() < 0.3
    qu = 0 if rng.random() < 0.7 else rng.randrange(32)
    base = type_id - 13 if type_id in TIMED_COMMANDS else type_id  # 58 -> 45, 61 -> 48, ...
    if base == 45:
        element = sco(rng.random() < 0.5, select, qu) if rng.random() < 0.9 else bytes([rng.randrange(256)])
    elif base == 46:
        element = dco(rng.randrange(4), select, qu)
    elif base == 48:
        element = setpoint_normalized(rng.uniform(-1, 1) if rng.random() < 0.9 else rng.choice((-1.0, 0.9999)),
                                      select, qu)
    elif base == 49:
        element = setpoint_scaled(rng.randrange(-32768, 32768) if rng.random() < 0.5 else rng.randrange(-300, 300),
                                  select, qu)
    else:
        element = struct.pack("<f", _setpoint_value(rng)) + bytes([qu & 0x7F | select << 7])
    return element + (_now_tag(rng) if type_id in TIMED_COMMANDS else b"")


def _cause(rng: random.Random, usual: int) -> int:
    pick = rng.random()
    if pick < 0.75:
        return usual
    if pick < 0.85:
        return 8  # deactivation
    return rng.randrange(64)


def _address(rng: random.Random, target: Target) -> int:
    pick = rng.random()
    if pick < 0.85:
        return target.common_address
    return 0xFFFF if pick < 0.92 else rng.randrange(65536)


def _flags(rng: random.Random) -> dict[str, object]:
    return {"negative": rng.random() < 0.05, "test": rng.random() < 0.05,
            "oa": 0 if rng.random() < 0.8 else rng.randrange(256)}


def command_asdu(rng: random.Random, target: Target) -> bytes:
    """A command at a configured IOA (mostly with its own type), a monitored IOA or an unknown one."""
    pick = rng.random()
    if pick < 0.7 and target.commands:
        ioa, type_id = rng.choice(target.commands)
        if rng.random() < 0.15:
            type_id = rng.choice(sorted(COMMAND_TYPES))
    else:
        type_id = rng.choice(sorted(COMMAND_TYPES))
        ioa = rng.choice(target.monitored) if pick < 0.85 and target.monitored else rng.randrange(1 << 24)
    objects = [(ioa, command_element(rng, type_id))]
    if rng.random() < 0.05:  # more than one object: one command per ASDU is the rule
        objects += [((ioa + i) % (1 << 24), command_element(rng, type_id)) for i in range(1, rng.randrange(2, 5))]
    return asdu(type_id, _cause(rng, 6), _address(rng, target), objects, sq=False, **_flags(rng))


def system_asdu(rng: random.Random, target: Target) -> bytes:
    """Interrogation, counter interrogation, read, clock sync or test command with random fields."""
    type_id = rng.choice((C_IC, C_IC, C_CI, C_RD, C_CS, C_TS))
    ioa = 0 if rng.random() < 0.9 else rng.randrange(1 << 24)
    if type_id == C_IC:
        element = qoi(20 if rng.random() < 0.6 else rng.randrange(256))
    elif type_id == C_CI:
        element = qcc(5 if rng.random() < 0.6 else rng.randrange(64), rng.randrange(4))
    elif type_id == C_RD:
        element = b""
        if target.monitored and rng.random() < 0.7:
            ioa = rng.choice(target.monitored)
    elif type_id == C_CS:
        element = _now_tag(rng)
    else:
        element = rng.randrange(65536).to_bytes(2, "little") + _now_tag(rng)
    usual = 5 if type_id == C_RD else 6
    return asdu(type_id, _cause(rng, usual), _address(rng, target), [(ioa, element)], **_flags(rng))


def unserved_asdu(rng: random.Random, target: Target) -> bytes:
    """A type the outstation does not serve in the control direction, with a plausible body."""
    type_id = rng.choice(UNSERVED_TYPES)
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
    return asdu(type_id, _cause(rng, 6), _address(rng, target), [(rng.randrange(1 << 24), body)], **_flags(rng))


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """``data`` spoilt one to three times: bit flips, truncation, extension, overwritten octets, VSQ."""
    out = bytearray(data)
    names = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        how = rng.choice(("flip", "flip", "truncate", "extend", "overwrite", "vsq"))
        names.append(how)
        if how in GENERIC:
            spoil(rng, out, how, max_flips=3, max_extra=15)
        elif how == "overwrite" and out:
            out[rng.randrange(len(out))] = rng.choice((0, 0xFF, 0x80, 0x7F, rng.randrange(256)))
        elif how == "vsq" and len(out) > 1:
            out[1] = rng.choice((0, 0x80, 0x81, 0x7F, 0xFF, rng.randrange(256)))
    return bytes(out[:MAX_ASDU]), "+".join(names)


# -- APDUs ---------------------------------------------------------------------------------------

@dataclass
class Frame:
    """Octets to write (``parts`` in separate writes), what kind they are, and whether they use one N(S)."""

    parts: list[bytes]
    kind: str
    uses_ssn: bool = False


class FrameMaker:
    """Picks the next malformed (or, now and then, well-formed) frame for a connection."""

    def __init__(self, rng: random.Random, target: Target) -> None:
        self.rng = rng
        self.target = target

    def asdu(self) -> tuple[bytes, str]:
        """An ASDU from the templates, mutated four times in five (kind names the template and mutation)."""
        rng = self.rng
        pick = rng.random()
        if pick < 0.55:
            data, kind = command_asdu(rng, self.target), "command"
        elif pick < 0.9:
            data, kind = system_asdu(rng, self.target), "system"
        else:
            data, kind = unserved_asdu(rng, self.target), "unserved"
        if rng.random() < 0.8:
            data, how = mutate(rng, data)
            kind = f"{kind}:{how}"
        return data, kind

    def next(self, ssn: int, rsn: int) -> Frame:
        """The next frame, given the master's N(S) and N(R) now."""
        rng = self.rng
        pick = rng.random()
        if pick < 0.72:
            data, kind = self.asdu()
            return Frame([i_frame(ssn, rsn, data)], f"i:{kind.split(':')[0]}", uses_ssn=True)
        if pick < 0.76 and self.target.commands:
            return self._select_execute(ssn, rsn)
        if pick < 0.80:  # several frames in one write
            frames = [i_frame((ssn + i) % 32768, rsn, self.asdu()[0]) for i in range(rng.randrange(2, 5))]
            return Frame([b"".join(frames)], "i:concat", uses_ssn=True)
        return self._apci_fault(ssn, rsn)

    def _select_execute(self, ssn: int, rsn: int) -> Frame:
        """Select then execute of one configured command, both in one write (execute sometimes spoilt)."""
        rng = self.rng
        ioa, type_id = rng.choice(self.target.commands)
        element = command_element(rng, type_id, select=True)
        selected = asdu(type_id, 6, self.target.common_address, [(ioa, element)])
        execute = bytearray(selected)
        qualifier_at = -8 if type_id in TIMED_COMMANDS else -1
        execute[qualifier_at] &= 0x7F
        if rng.random() < 0.3:
            execute = bytearray(mutate(rng, bytes(execute))[0])
        return Frame([i_frame(ssn, rsn, selected) + i_frame((ssn + 1) % 32768, rsn, bytes(execute))],
                     "i:select_execute", uses_ssn=True)

    def _apci_fault(self, ssn: int, rsn: int) -> Frame:
        rng = self.rng
        how = rng.choice(("length", "ns", "nr", "u_odd", "u_known", "s_odd", "i_empty", "random", "random_apdu",
                          "flip", "split"))
        good = i_frame(ssn, rsn, self.asdu()[0])
        if how == "length":
            wrong = rng.choice([n for n in (0, 1, 2, 3, 4, 5, good[1] - 1, good[1] + 1, 253, 254, 255)
                                if 0 <= n <= 255 and n != good[1]])
            return Frame([good[:1] + bytes([wrong]) + good[2:]], "apci:length")
        if how == "ns":
            return Frame([i_frame(rng.choice([n for n in (ssn + 1, ssn - 1, rng.randrange(32768)) if n != ssn]) % 32768,
                                  rsn, self.asdu()[0])], "apci:ns")
        if how == "nr":
            return Frame([i_frame(ssn, rng.choice([n for n in (rsn + 1, rsn + 100, rsn - 1, rng.randrange(32768))
                                                   if n != rsn]) % 32768, self.asdu()[0])], "apci:nr", uses_ssn=True)
        if how == "u_odd":
            return Frame([bytes([0x68, 4, rng.randrange(256) | 3, rng.randrange(256), rng.randrange(256),
                                 rng.randrange(256)])], "apci:u_odd")
        if how == "u_known":
            return Frame([u_frame(rng.choice(sorted(U_CODES)))], "apci:u_known")
        if how == "s_odd":
            frame = bytearray(s_frame(rsn))
            frame[2] |= rng.randrange(256) & 0xFC
            frame[3] = rng.randrange(256)
            frame[4] |= rng.randrange(2)
            return Frame([bytes(frame)], "apci:s_odd")
        if how == "i_empty":
            return Frame([bytes([0x68, 4]) + good[2:6]], "apci:i_empty", uses_ssn=True)
        if how == "random":
            return Frame([bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))], "apci:random")
        if how == "random_apdu":
            size = rng.randrange(0, 256)
            return Frame([bytes([0x68, size]) + bytes(rng.randrange(256) for _ in range(size))], "apci:random_apdu")
        if how == "flip":
            frame = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
            return Frame([bytes(frame)], "apci:flip")
        cut = rng.randrange(1, len(good))
        return Frame([good[:cut], good[cut:]], "apci:split", uses_ssn=True)


# -- the campaign --------------------------------------------------------------------------------

@dataclass
class Tally:
    """What a campaign sent, saw and checked."""

    frames: int = 0
    connections: int = 0
    closed_by_outstation: int = 0
    refused: int = 0  # no STARTDT_CON: connection closed at once (max_connections while an old one lingers)
    pre_startdt_connections: int = 0
    checks: int = 0
    hangs: int = 0
    crashed: bool = False
    partial: bool = False
    positive_act_con: int = 0  # execute (S/E = 0) of a command confirmed positively
    positive_select: int = 0
    act_term: int = 0
    i_before_startdt: int = 0  # I-frames received while data transfer was not started (no STARTDT_CON, or STOPDT_CON)
    undecodable: int = 0  # replies our strict decoder rejects
    sequence_errors: int = 0  # N(S) of the outstation's I-frames out of step
    replies: Counter = field(default_factory=Counter)  # "cot7+", "cot45-", ...
    kinds: Counter = field(default_factory=Counter)
    closes_after: Counter = field(default_factory=Counter)  # kind of the last frame before a close
    problems: list[str] = field(default_factory=list)
    gi_objects: int | None = None
    seconds: float = 0.0
    rss_kb: list[tuple[int, int]] = field(default_factory=list)  # (frames sent, RSS) at every check

    def note(self, problem: str) -> None:
        """Keep the first problems only: a hundred identical lines say no more than ten."""
        if len(self.problems) < 20:
            self.problems.append(problem)


async def gi_check(host: str, port: int, ca: int, timeout_s: float = 10.0) -> tuple[int | None, str]:
    """(objects, "") when a fresh master gets ACT_CON, COT 20 objects and ACT_TERM for C_IC QOI 20; else
    (None, what went wrong). A connection refused because an old one still lingers is retried."""
    deadline = time.monotonic() + timeout_s
    problem = "no attempt"
    while time.monotonic() < deadline:
        master = RawMaster()
        try:
            left = max(0.5, deadline - time.monotonic())
            await master.connect(host, port, timeout=left)
            await master.startdt(timeout=min(left, 5))
            master.mark()
            await master.send_asdu(asdu(C_IC, 6, ca, [(0, qoi(20))]))
            is_ic = lambda a, cot: a.asdu is not None and a.asdu.type_id == C_IC and a.asdu.cot == cot  # noqa: E731
            con = await master.wait_for(lambda a: is_ic(a, ACT_CON), max(0.5, deadline - time.monotonic()))
            if con.asdu.negative:
                return None, f"GI confirmed negatively: {con.summary()}"
            await master.wait_for(lambda a: is_ic(a, ACT_TERM), max(0.5, deadline - time.monotonic()))
            return sum(a.count for a in master.asdus() if a.cot == 20), ""
        except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
        finally:
            await master.close()
    return None, problem


class Campaign:
    """Sends ``frames`` malformed frames to one outstation and checks it after every ``batch``."""

    def __init__(self, host: str, port: int, target: Target, seed: int, alive: Callable[[], bool],
                 pre_startdt: float = 0.1, per_connection: int = 400, pace_s: float = 0.001,
                 memory: Callable[[], int] | None = None) -> None:
        self.host, self.port, self.target = host, port, target
        self.rng = random.Random(seed)
        self.maker = FrameMaker(self.rng, target)
        self.alive = alive
        self.pre_startdt = pre_startdt
        self.per_connection = per_connection
        self.pace_s = pace_s  # pause after each frame, so that a close is seen before many more frames go out
        self.memory = memory  # the process's RSS in kB, sampled at every check
        self.tally = Tally()

    async def run(self, frames: int, batch: int, deadline_s: float) -> Tally:
        """Until ``frames`` were sent, the process died, or ``deadline_s`` passed (then ``partial``)."""
        tally, started = self.tally, time.monotonic()
        next_check = batch
        objects, problem = await gi_check(self.host, self.port, self.target.common_address)
        tally.checks += 1
        if objects is None:
            tally.hangs += 1
            tally.note(f"GI before fuzzing: {problem}")
            return tally
        tally.gi_objects = objects
        while tally.frames < frames:
            if time.monotonic() - started > deadline_s:
                tally.partial = True
                break
            if not self.alive():
                tally.crashed = True
                break
            await self._connection(min(frames, next_check) - tally.frames)
            if tally.frames >= next_check or tally.frames >= frames:
                await self._check()
                next_check += batch
        if not tally.crashed and self.alive():
            await self._check()
        tally.crashed = tally.crashed or not self.alive()
        tally.seconds = time.monotonic() - started
        return tally

    async def _check(self) -> None:
        tally = self.tally
        tally.checks += 1
        if self.memory is not None:
            tally.rss_kb.append((tally.frames, self.memory()))
        objects, problem = await gi_check(self.host, self.port, self.target.common_address)
        if not self.alive():
            tally.crashed = True
        elif objects is None:
            tally.hangs += 1
            tally.note(f"after {tally.frames} frames a fresh master got no GI answer: {problem}")
        elif objects != tally.gi_objects:
            tally.note(f"after {tally.frames} frames GI answered {objects} objects, first {tally.gi_objects}")

    async def _connection(self, budget: int) -> None:
        """One connection: STARTDT (mostly), frames until the outstation closes it or the budget is spent."""
        tally, rng = self.tally, self.rng
        master = RawMaster()
        tally.connections += 1
        try:
            await master.connect(self.host, self.port)
        except (OSError, asyncio.TimeoutError) as exc:
            tally.note(f"connect failed: {exc!r}")
            await asyncio.sleep(0.1)
            return
        started = rng.random() >= self.pre_startdt
        try:
            if started:
                try:
                    await master.startdt(timeout=5)
                except (ConnectionError, asyncio.TimeoutError):
                    tally.refused += 1
                    return
            else:
                tally.pre_startdt_connections += 1
            last = "startdt"
            for _ in range(min(budget, rng.randrange(1, self.per_connection))):
                if master.closed:
                    break
                frame = self.maker.next(master.ssn, master.rsn)
                try:
                    for i, part in enumerate(frame.parts):
                        if i:
                            await asyncio.sleep(rng.choice((0, 0.001, 0.01)))
                        await master.send_raw(part)
                except (ConnectionError, OSError):
                    break
                tally.frames += 1
                tally.kinds[frame.kind] += 1
                if frame.uses_ssn:
                    master.ssn = (master.ssn + _i_frames(b"".join(frame.parts))) % 32768
                last = frame.kind
                await asyncio.sleep(self.pace_s)
            await asyncio.sleep(0.02)  # let the last replies (or the close) arrive
            if master.closed:
                tally.closed_by_outstation += 1
                tally.closes_after[last] += 1
        finally:
            await master.close()
            self._score(master)

    def _score(self, master: RawMaster) -> None:
        tally = self.tally
        enabled = False  # data transfer confirmed (STARTDT_CON seen, no STOPDT_CON since)
        for apdu in master.received:
            if apdu.kind == "U":
                enabled = {"STARTDT_CON": True, "STOPDT_CON": False}.get(apdu.u or "", enabled)
            if apdu.kind != "I":
                continue
            if not enabled:
                tally.i_before_startdt += 1
                tally.note(f"I-frame while data transfer was not started: {apdu.summary()}")
            a = apdu.asdu
            if a is None:
                continue
            tally.replies[f"cot{a.cot}{'-' if a.negative else '+'}"] += 1
            if a.type_id in COMMAND_TYPES and a.cot == ACT_CON and not a.negative and a.objects:
                if a.objects[0].select:
                    tally.positive_select += 1
                else:
                    tally.positive_act_con += 1
            if a.type_id in COMMAND_TYPES and a.cot == ACT_TERM:
                tally.act_term += 1
        for error in master.errors:
            if error.startswith("N(S)"):
                tally.sequence_errors += 1
                tally.note(f"outstation sequence: {error}")
            elif not error.startswith("connection:"):
                tally.undecodable += 1
                tally.note(f"reply that does not decode: {error}")


def _i_frames(data: bytes) -> int:
    """How many well-formed-looking I-frames (start octet, even control octet) ``data`` holds, walking lengths."""
    count, at = 0, 0
    while at + 6 <= len(data) and data[at] == 0x68:
        if not data[at + 2] & 1:
            count += 1
        at += 2 + data[at + 1]
    return count
