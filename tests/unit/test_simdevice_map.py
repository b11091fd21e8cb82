"""The simulated address map and function codes, derived from each shipped profile, are the ones
the profile's own header documents."""

from pathlib import Path

import pytest
import yaml

from drivers.modbus.profile import ModbusProfile
from drivers.modbus.sim.device import TABLES, _Table, functions_of, implemented_ranges

PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"

# [start, stop) PDU ranges per table, copied from the "Register map" comment of each profile
DOCUMENTED = {
    "pcs/gridgate-pcs-250": {"holding": [(0, 10), (1000, 1028), (1100, 1106), (2000, 2005)],
                             "coil": [(0, 1)]},
    "bms/gridgate-bms-tcp": {"holding": [(3000, 3028), (3100, 3106), (3200, 3203)]},
    # doc 30001-30014, 40101 and 00001, address_base 1
    "bms/gridgate-bms-rtu": {"input": [(0, 14)], "holding": [(100, 101)], "coil": [(0, 1)]},
    "meter/gridgate-meter-3p": {"input": [(0, 40), (256, 264)]},
}


def _profile(name: str) -> ModbusProfile:
    return ModbusProfile.model_validate(yaml.safe_load((PROFILES / f"{name}.yaml").read_text()))


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_each_profile_serves_exactly_its_documented_blocks(name: str) -> None:
    """Point spans joined across gaps up to max_gap give the profile's documented blocks, no more."""
    profile = _profile(name)
    served = {t: _Table(t, profile, [p for p in profile.points if p.table == t]).ranges for t in TABLES}
    assert {t: r for t, r in served.items() if r} == DOCUMENTED[name]


def test_only_the_fc16_only_bms_lacks_fc6() -> None:
    """single_register_write: 16 removes FC6; every profile keeps the reads, FC5 and FC16."""
    functions = {name: sorted(functions_of(_profile(name))) for name in DOCUMENTED}
    assert functions.pop("bms/gridgate-bms-rtu") == [1, 2, 3, 4, 5, 16]
    assert all(codes == [1, 2, 3, 4, 5, 6, 16] for codes in functions.values())


def test_ranges_join_gaps_up_to_max_gap_only() -> None:
    """A gap of max_gap registers is served, one more splits the range; overlaps merge."""
    spans = [(0, 2), (4, 5), (4, 5), (10, 12)]
    assert implemented_ranges(spans, 2) == [(0, 5), (10, 12)]
    assert implemented_ranges(spans, 5) == [(0, 12)]
    assert implemented_ranges(spans, 0) == [(0, 2), (4, 5), (10, 12)]
