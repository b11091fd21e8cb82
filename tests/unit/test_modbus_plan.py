"""The read planner: merging, caps, tables, shared registers and the exception-2 fallback."""

import pytest

from drivers.modbus.plan import PlanError, ReadBlock, function_code, plan_reads, split_block
from drivers.modbus.profile import ModbusPoint, ModbusProfile


def reg(id: str, address: int, type: str = "uint16", **fields: object) -> ModbusPoint:
    return ModbusPoint(id=id, address=address, type=type, **fields)


def profile(points: list[ModbusPoint], **modbus: object) -> ModbusProfile:
    return ModbusProfile(model="t", kind="pcs", protocol="modbus", points=points, modbus=modbus)


def shape(blocks: list[ReadBlock]) -> list[tuple[str, int, int, list[tuple[str, int]]]]:
    """Blocks as plain data: (table, start, count, [(point id, offset), ...])."""
    return [(b.table, b.start, b.count, [(p.id, offset) for p, offset in b.points]) for b in blocks]


def test_neighbours_within_the_gap_merge() -> None:
    """Points separated by at most max_gap unused registers are one read."""
    blocks = plan_reads(profile([reg("a", 0), reg("b", 5, "uint32")]))
    assert shape(blocks) == [("holding", 0, 7, [("a", 0), ("b", 5)])]


def test_gap_of_exactly_max_gap_merges_and_one_more_splits() -> None:
    """max_gap is the largest number of unused registers a read may span."""
    merged = plan_reads(profile([reg("a", 0), reg("b", 5)], max_gap=4))
    assert shape(merged) == [("holding", 0, 6, [("a", 0), ("b", 5)])]
    apart = plan_reads(profile([reg("a", 0), reg("b", 6)], max_gap=4))
    assert shape(apart) == [("holding", 0, 1, [("a", 0)]), ("holding", 6, 1, [("b", 0)])]


def test_max_gap_zero_merges_only_adjacent_points() -> None:
    """With max_gap 0, touching points merge and any hole starts a new read."""
    blocks = plan_reads(profile([reg("a", 0), reg("b", 1, "int32"), reg("c", 4)], max_gap=0))
    assert shape(blocks) == [("holding", 0, 3, [("a", 0), ("b", 1)]), ("holding", 4, 1, [("c", 0)])]


def test_reads_stop_at_125_registers() -> None:
    """No read spans more than 125 registers, however dense the map."""
    blocks = plan_reads(profile([reg(f"p{i}", i) for i in range(130)]))
    assert [(b.start, b.count) for b in blocks] == [(0, 125), (125, 5)]
    assert sum(len(b.points) for b in blocks) == 130


def test_a_point_is_never_split_at_the_cap() -> None:
    """A multi-register point that would cross the cap starts the next read."""
    points = [reg(f"p{i}", i) for i in range(124)] + [reg("wide", 124, "float64")]
    blocks = plan_reads(profile(points))
    assert [(b.start, b.count) for b in blocks] == [(0, 124), (124, 4)]
    assert shape(blocks)[1][3] == [("wide", 0)]


def test_device_limit_below_125_is_respected() -> None:
    """A profile's smaller max_read_registers caps every read."""
    blocks = plan_reads(profile([reg(f"p{i}", i) for i in range(25)], max_read_registers=10))
    assert [(b.start, b.count) for b in blocks] == [(0, 10), (10, 10), (20, 5)]


def test_point_wider_than_a_read_is_refused() -> None:
    """A point that no single read can hold raises PlanError naming it."""
    wide = reg("serial_no", 0, "string", length=20)
    with pytest.raises(PlanError, match="serial_no"):
        plan_reads(profile([wide], max_read_registers=10))


def test_point_outside_the_address_space_is_refused() -> None:
    """Address 0 in a 1-based profile has no PDU address: PlanError names the point."""
    with pytest.raises(PlanError, match="status.*address_base"):
        plan_reads(profile([reg("status", 0)], address_base=1))


def test_one_based_addresses_become_pdu_addresses() -> None:
    """Blocks start at 0-based protocol addresses."""
    blocks = plan_reads(profile([reg("a", 1), reg("b", 3)], address_base=1))
    assert shape(blocks) == [("holding", 0, 3, [("a", 0), ("b", 2)])]


def test_bits_of_one_register_share_it() -> None:
    """Several bool-with-bit points and the whole word occupy one register of one read."""
    points = [reg("run", 10, "bool", bit=0), reg("word", 10), reg("fault", 10, "bool", bit=7),
              reg("warn", 10, "bool", bit=15)]
    assert shape(plan_reads(profile(points))) == [
        ("holding", 10, 1, [("run", 0), ("word", 0), ("fault", 0), ("warn", 0)])]


def test_tables_are_never_merged() -> None:
    """Holding, input, coil and discrete points at the same addresses are separate reads."""
    points = [reg("h", 0), reg("i", 1, table="input"), reg("c", 0, "bool", table="coil"),
              reg("d", 0, "bool", table="discrete"), reg("h2", 1)]
    assert shape(plan_reads(profile(points))) == [
        ("coil", 0, 1, [("c", 0)]), ("discrete", 0, 1, [("d", 0)]),
        ("holding", 0, 2, [("h", 0), ("h2", 1)]), ("input", 1, 1, [("i", 0)])]


def test_bit_tables_use_the_bit_cap() -> None:
    """Coils merge up to max_read_bits, not max_read_registers."""
    coils = [reg(f"c{i}", i, "bool", table="coil") for i in range(300)]
    blocks = plan_reads(profile(coils, max_read_registers=10, max_read_bits=200))
    assert [(b.start, b.count) for b in blocks] == [(0, 200), (200, 100)]


def test_plan_is_deterministic_whatever_the_point_order() -> None:
    """Shuffled points give the same reads, ordered by (table, start)."""
    points = [reg("z", 50, table="input"), reg("b", 40), reg("a", 0), reg("y", 0, table="input")]
    reversed_points = points[::-1]
    blocks = plan_reads(profile(points))
    assert shape(blocks) == shape(plan_reads(profile(reversed_points)))
    assert [(b.table, b.start) for b in blocks] == sorted((b.table, b.start) for b in blocks)


def test_only_the_given_points_are_planned() -> None:
    """A subset of points (one poll group) plans only its own reads."""
    prof = profile([reg("a", 0), reg("b", 100), reg("c", 102)])
    assert shape(plan_reads(prof, [prof.points[2], prof.points[1]])) == [
        ("holding", 100, 3, [("b", 0), ("c", 2)])]


@pytest.mark.parametrize("table, code", [("coil", 1), ("discrete", 2), ("holding", 3), ("input", 4)])
def test_function_codes(table: str, code: int) -> None:
    """Each table is read with its Modbus function code."""
    assert function_code(table) == code


def test_split_block_reads_each_address_group_alone() -> None:
    """After exception 2, a merged read becomes one read per group of points, gaps skipped."""
    points = [reg("a", 0), reg("b", 3, "uint32"), reg("c", 10)]
    (merged,) = plan_reads(profile(points))
    assert shape(split_block(merged)) == [
        ("holding", 0, 1, [("a", 0)]), ("holding", 3, 2, [("b", 0)]), ("holding", 10, 1, [("c", 0)])]


def test_split_block_keeps_points_sharing_registers_together() -> None:
    """Bits of one register and overlapping views of it stay in one read after a split."""
    points = [reg("total", 20, "uint32"), reg("high", 20), reg("flag", 21, "bool", bit=2),
              reg("next", 22), reg("far", 30, table="input")]
    holding = plan_reads(profile(points))[0]
    assert shape(split_block(holding)) == [
        ("holding", 20, 2, [("total", 0), ("high", 0), ("flag", 1)]), ("holding", 22, 1, [("next", 0)])]


def test_split_of_a_single_group_is_itself() -> None:
    """A block with nothing to separate splits into the same single read."""
    (block,) = plan_reads(profile([reg("w", 5), reg("bit", 5, "bool", bit=1)]))
    assert split_block(block) == [block]


def test_split_block_keeps_the_table() -> None:
    """Split reads stay in the table of the block they came from."""
    (block,) = plan_reads(profile([reg("a", 0, table="input"), reg("b", 4, table="input")]))
    assert {b.table for b in split_block(block)} == {"input"}
