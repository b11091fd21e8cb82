"""The read planner: which Modbus requests fetch a set of points. Pure.

Every request costs a round trip (tens of milliseconds on RS-485), so neighbouring points are
read together, across unused registers up to the profile's ``max_gap``. Many devices answer a
read that touches an unmapped register with exception 2 (illegal data address), so
``split_block`` gives the reads the client falls back to when a merged read fails that way.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drivers.modbus.profile import BIT_TABLES, ModbusPoint, ModbusProfile, Table

_FUNCTION_CODES: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_ADDRESSES = 0x10000  # a Modbus table has 65,536 registers or bits, PDU addresses 0-65535


class PlanError(ValueError):
    """A point cannot be read with one request: its message names the point and why."""


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request, and where each point it serves starts inside the answer."""

    table: Table
    start: int  # 0-based PDU address
    count: int  # registers or bits
    points: tuple[tuple[ModbusPoint, int], ...]  # (point, offset of its first register/bit)


def function_code(table: Table) -> int:
    """The Modbus read function of ``table``: coil 1, discrete 2, holding 3, input 4."""
    return _FUNCTION_CODES[table]


def plan_reads(profile: ModbusProfile, points: Sequence[ModbusPoint] | None = None) -> list[ReadBlock]:
    """The fewest reads that fetch ``points`` (default: all of the profile's), ordered by
    (table, start).

    Neighbours merge while the unused gap between them is at most ``max_gap`` and the request
    stays within ``max_read_registers`` (``max_read_bits`` for coils and discrete inputs). A point
    is never split; points sharing registers (bits of one register, overlapping views) share them.
    """
    by_table: dict[Table, list[tuple[int, ModbusPoint]]] = {}
    for point in profile.points if points is None else points:
        address = profile.pdu_address(point)
        _check_fits(point, address, _cap(profile, point.table))
        by_table.setdefault(point.table, []).append((address, point))
    blocks: list[ReadBlock] = []
    for table in sorted(by_table):
        located = sorted(by_table[table], key=_address)
        blocks.extend(_sweep(table, located, profile.modbus.max_gap, _cap(profile, table)))
    return blocks


def split_block(block: ReadBlock) -> list[ReadBlock]:
    """``block`` as one read per group of points that share registers, gaps left out."""
    located = sorted(((block.start + offset, point) for point, offset in block.points), key=_address)
    return _sweep(block.table, located, -1, block.count)


def _cap(profile: ModbusProfile, table: Table) -> int:
    """The most registers (or bits, for coils and discrete inputs) one read may span."""
    options = profile.modbus
    return options.max_read_bits if table in BIT_TABLES else options.max_read_registers


def _address(item: tuple[int, ModbusPoint]) -> int:
    return item[0]


def _check_fits(point: ModbusPoint, address: int, cap: int) -> None:
    """Fail at planning time, naming the point, rather than on the wire."""
    if address < 0 or address + point.count > _ADDRESSES:
        raise PlanError(f"point {point.id!r}: PDU address {address} (+{point.count}) is outside "
                        f"0-{_ADDRESSES - 1}; check address_base")
    if point.count > cap:
        raise PlanError(f"point {point.id!r}: needs {point.count} in one read, more than the "
                        f"profile's limit of {cap}")


def _sweep(table: Table, located: Iterable[tuple[int, ModbusPoint]], max_gap: int,
           cap: int) -> list[ReadBlock]:
    """Group address-sorted points into blocks.

    A point joins the open block when the registers between the block's end and the point are at
    most ``max_gap`` (negative: it must overlap) and the block's span stays within ``cap``.
    """
    blocks: list[ReadBlock] = []
    members: list[tuple[int, ModbusPoint]] = []
    start = end = 0
    for address, point in located:
        stop = address + point.count
        if members and address - end <= max_gap and max(end, stop) - start <= cap:
            end = max(end, stop)
        else:
            if members:
                blocks.append(_block(table, start, end, members))
            members, start, end = [], address, stop
        members.append((address, point))
    if members:
        blocks.append(_block(table, start, end, members))
    return blocks


def _block(table: Table, start: int, end: int, members: list[tuple[int, ModbusPoint]]) -> ReadBlock:
    return ReadBlock(table, start, end - start,
                     tuple((point, address - start) for address, point in members))
