"""A Modbus TCP device whose every reply is a random mutation of the correct one, and the judge of what got through.

``MutatingTcpDevice`` is ``tests.hostile_modbus.HostileTcpDevice`` (framing written from the
Modbus specifications, nothing shared with pymodbus) answering each request with the correct
reply spoilt at random: bit flips, truncation, extra bytes, a random transaction id, protocol
id, MBAP length, unit, function code or byte count, exception replies, garbage, the frame twice,
an old frame replayed, the frame cut in two writes (the second late, now and then past the
gateway's timeout), or silence. A fraction of the replies stays correct so that values flow.

The values a spoilt reply carries are ``POISON`` (0x77 in every data byte), never a true value.
One rule keeps the judgement honest: wherever the octets sent hold, at any offset, a frame that
a correct Modbus master has to accept as the answer to this request (its exact MBAP header,
unit, function code and byte count, all its data bytes present), that frame's data is replaced
by the true data before it is sent (``restore``). So a poisoned value can reach the gateway's
output only through a frame a correct master would have refused: ``bad_values`` must be 0.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections import Counter
from typing import Callable

from tests.mutations import GENERIC, spoil
from tests.hostile_modbus import POISON, HostileTcpDevice, Image, mbap_frame

MUTATIONS = ("flip", "flip", "truncate", "extend", "tid", "protocol", "length", "unit", "fc", "byte_count",
             "exception", "garbage", "duplicate", "replay", "split", "late", "silence", "combo", "combo")
_BYTE_LEVEL = ("flip", "truncate", "extend", "tid", "protocol", "length", "unit", "fc", "byte_count")


def poisoned(good_pdu: bytes) -> bytes:
    """The reply PDU with every data byte POISON (reads); other replies as they are."""
    if good_pdu[0] in (1, 2, 3, 4):
        return good_pdu[:2] + bytes([POISON]) * good_pdu[1]
    return good_pdu


def restore(data: bytes, good_frame: bytes) -> tuple[bytes, int]:
    """``data`` with every complete frame a correct master must accept for this request made the good one.

    For a read reply the first nine octets (transaction, protocol 0, length, unit, function code,
    byte count) fix the frame; the data bytes after them are the only freedom left."""
    head, size = good_frame[:9], len(good_frame)
    out = bytearray(data)
    restored, at = 0, out.find(head)
    while at >= 0:
        if len(out) - at >= size and out[at:at + size] != good_frame:
            out[at:at + size] = good_frame
            restored += 1
        at = out.find(head, at + 1)
    return bytes(out), restored


def _byte_mutation(rng: random.Random, frame: bytearray, how: str, request_fc: int) -> bytearray:
    """One octet-level spoiling of an MBAP frame (7-octet header, then the PDU)."""
    if how in GENERIC:
        spoil(rng, frame, how, max_flips=4, max_extra=16)
    elif how == "tid" and len(frame) >= 2:
        tid = int.from_bytes(frame[0:2], "big")
        frame[0:2] = (rng.choice((tid + 1, tid - 1, 0, rng.randrange(65536))) & 0xFFFF).to_bytes(2, "big")
    elif how == "protocol" and len(frame) >= 4:
        frame[2:4] = rng.choice((1, 0x100, 0xFFFF, rng.randrange(1, 65536))).to_bytes(2, "big")
    elif how == "length" and len(frame) >= 6:
        length = int.from_bytes(frame[4:6], "big")
        frame[4:6] = (rng.choice((length + 1, length - 1, length + 2, length - 2, 0, 1, 2, 255, 256, 65535,
                                  rng.randrange(65536))) & 0xFFFF).to_bytes(2, "big")
    elif how == "unit" and len(frame) >= 7:
        frame[6] = rng.choice((frame[6] + 1, frame[6] - 1, 0, 255, rng.randrange(256))) & 0xFF
    elif how == "fc" and len(frame) >= 8:
        frame[7] = rng.choice(tuple({1, 2, 3, 4, 5, 6, 15, 16, 23} - {request_fc})
                              + (request_fc | 0x80, rng.randrange(256)))
    elif how == "byte_count" and len(frame) >= 9:
        frame[8] = rng.choice((frame[8] + 1, frame[8] - 1, frame[8] + 2, frame[8] - 2, 0, 255,
                               rng.randrange(256))) & 0xFF
    return frame


class MutatingTcpDevice(HostileTcpDevice):
    """A Modbus TCP device on 127.0.0.1 that spoils replies at random while ``mutating`` is set."""

    def __init__(self, unit: int, image: Image, rng: random.Random, good_fraction: float, late_s: float,
                 restore_valid: bool = True) -> None:
        super().__init__(unit, image)
        self.restore_valid = restore_valid  # False only as a control: acceptable frames then carry POISON
        self.rng = rng
        self.good_fraction = good_fraction
        self.late_s = late_s  # a "late" second half comes after this (the gateway's timeout and a bit)
        self.mutating = True
        self.replies = 0  # requests answered (or left unanswered on purpose) while mutating
        self.spoilt = 0  # of those, the ones not answered with the correct frame alone
        self.restored = 0  # frames the mutation left acceptable: their data was made true again
        self.kinds: Counter = Counter()
        self.connections = 0
        self.last_request = time.monotonic()
        self.longest_gap_s = 0.0  # longest time between two requests while mutating
        self._tasks: set[asyncio.Task] = set()

    async def stop(self) -> None:
        """Close the listener and every connection, and end their handlers."""
        await super().stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        history: list[bytes] = []
        try:
            while True:
                header = await reader.readexactly(7)
                transaction, _protocol, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(max(length - 1, 0))
                now = time.monotonic()
                if self.mutating:
                    self.longest_gap_s = max(self.longest_gap_s, now - self.last_request)
                self.last_request = now
                if unit != self.unit or not pdu:
                    continue
                for delay, data in self._answer(transaction, pdu, history):
                    if delay:
                        await writer.drain()
                        await asyncio.sleep(delay)
                    writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    def _answer(self, transaction: int, pdu: bytes, history: list[bytes]) -> list[tuple[float, bytes]]:
        """(delay before, octets) to send for one request."""
        good_pdu = self.image.answer(pdu)
        good = mbap_frame(transaction, self.unit, good_pdu)
        if not self.mutating:
            return [(0.0, good)]
        self.replies += 1
        rng = self.rng
        if rng.random() < self.good_fraction:
            self.kinds["good"] += 1
            history.append(good)
            return [(0.0, good)]
        how = rng.choice(MUTATIONS)
        self.kinds[how] += 1
        self.spoilt += 1
        frame = bytearray(mbap_frame(transaction, self.unit, poisoned(good_pdu)))
        plan: list[tuple[float, bytes]]
        if how == "silence":
            plan = []
        elif how == "exception":
            body = bytes([pdu[0] | 0x80, rng.choice((1, 2, 3, 4, 6, 11, rng.randrange(256)))])
            body += bytes(rng.randrange(256) for _ in range(rng.choice((0, 0, 1, 3))))
            plan = [(0.0, mbap_frame(transaction, self.unit, body))]
        elif how == "garbage":
            plan = [(0.0, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 41))))]
        elif how == "duplicate":
            second = _byte_mutation(rng, bytearray(frame), rng.choice(_BYTE_LEVEL), pdu[0])
            plan = [(0.0, bytes(frame) + bytes(second))]
        elif how == "replay" and history:
            old = rng.choice(history[-20:])
            if old[:2] == frame[:2]:  # the same transaction id would be a correct reply
                old = b""
            plan = [(0.0, old + bytes(_byte_mutation(rng, frame, rng.choice(_BYTE_LEVEL), pdu[0])))]
        elif how in ("split", "late"):
            cut = rng.randrange(1, len(frame))
            delay = rng.uniform(0, self.late_s / 2) if how == "split" else self.late_s * rng.uniform(1.0, 2.0)
            plan = [(0.0, bytes(frame[:cut])), (delay, bytes(frame[cut:]))]
        else:
            for step in ([how] if how != "combo" else rng.sample(_BYTE_LEVEL, rng.randrange(2, 4))):
                frame = _byte_mutation(rng, frame, step, pdu[0])
            plan = [(0.0, bytes(frame))]
        whole, restored = restore(b"".join(data for _, data in plan), good) if self.restore_valid else (b"", 0)
        self.restored += restored
        if restored:  # re-cut the restored octets where the plan cut them
            cuts, at = [], 0
            for delay, data in plan:
                cuts.append((delay, whole[at:at + len(data)]))
                at += len(data)
            plan = cuts
        if plan:
            history.append(b"".join(data for _, data in plan))
            del history[:-50]
        return plan


def judge_samples(rows: list[tuple[str, object, int]], truth: dict[str, object],
                  same: Callable[[object, object], bool]) -> tuple[int, int, list[str]]:
    """(good rows checked, bad values, examples): every row with quality 0 of a point in ``truth`` must
    carry its true value."""
    checked, bad, examples = 0, 0, []
    for point, value, quality in rows:
        if quality != 0 or point not in truth:
            continue
        checked += 1
        if not same(value, truth[point]):
            bad += 1
            if len(examples) < 10:
                examples.append(f"{point} = {value!r} (true {truth[point]!r})")
    return checked, bad, examples
