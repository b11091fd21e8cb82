"""The demo's live table: every point, or the faulty ones first when the terminal is too small."""

from pathlib import Path

from drivers.modbus.profile import ModbusConnection, ModbusPoint, ModbusProfile
from gateway.model import Device, Quality, Sample
from gateway.points import PointTable
from gateway.simulation.livetable import render


def _device() -> Device:
    profile = ModbusProfile(model="T", kind="meter", protocol="modbus",
                            points=[ModbusPoint(id=f"p{i}", address=i, unit="V") for i in range(10)])
    return Device("m", profile, Path("t.yaml"), ModbusConnection(host="127.0.0.1"))


def _table() -> PointTable:
    table = PointTable()
    table.publish([Sample(f"m.p{i}", float(i), Quality.NT if i == 7 else Quality.GOOD, 100.0, 100.0) for i in range(10)])
    return table


def test_every_point_with_value_unit_quality_and_age() -> None:
    """Without a height limit every point has a row: value, unit, quality, age."""
    lines = render([_device()], _table(), now=101.5)
    assert len(lines) == 11
    assert lines[8].split() == ["m", "p7", "7.000", "V", "NT", "1.5s"]


def test_a_small_terminal_shows_faulty_points_first() -> None:
    """Limited to 4 rows, the NT point is shown and the rest is counted."""
    lines = render([_device()], _table(), now=101.5, max_rows=4)
    assert lines[1].split()[1] == "p7"
    assert lines[-1].startswith("... 7 more points, all good")
