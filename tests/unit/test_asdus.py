"""Samples to IEC 104 elements and ASDUs: ranges, counters, CP56Time2a in the wire zone, packing limits."""

import datetime

import pytest
from hat.drivers.iec60870.encodings import iec104 as enc

from gateway.iec104.wiretime import WireClock
from gateway.model import Quality
from gateway.northbound.iec104.asdus import InfoObject, cause, cp56, element, from_cp56, objects_per_asdu, pack
from gateway.northbound.iec104.section import PointMap
from tests import wire104 as w


def _map(type_name: str, **extra: object) -> PointMap:
    return PointMap(point="d.p", ioa=1, type=type_name, **extra)


def test_counter_keeps_the_resolution_its_multiplier_asks_for() -> None:
    """1234.56 kWh x 100 is the count 123456; IV passes through; a count past 2^31 wraps and sets CY."""
    value, quality = element("M_IT_NA_1", _map("M_IT_TB_1", multiplier=100), 1234.56, 0)
    assert (value.value, quality.invalid) == (123456, False)
    assert element("M_IT_NA_1", _map("M_IT_NA_1"), 5, int(Quality.IV)).quality.invalid
    wrapped = element("M_IT_NA_1", _map("M_IT_NA_1"), 2**31, 0)
    assert (wrapped.value.value, wrapped.quality.overflow) == (-(2**31), True)


def test_normalized_and_scaled_values_clip_with_overflow() -> None:
    """Beyond full scale or int16 the value is clipped and OV set; NaN goes out as IV."""
    normalized = element("M_ME_TD_1", _map("M_ME_TD_1", full_scale=100), 250.0, 0)
    assert normalized.value.value == pytest.approx(32767 / 32768) and normalized.quality.overflow
    scaled = element("M_ME_NB_1", _map("M_ME_NB_1", multiplier=10), 4000.0, 0)
    assert scaled.value.value == 32767 and scaled.quality.overflow
    assert element("M_ME_NC_1", _map("M_ME_NC_1"), float("nan"), 0).quality.invalid


def test_cp56_is_wall_time_in_the_wire_zone_and_round_trips() -> None:
    """The same instant is 08:00 on a UTC wire and 16:00 on an Asia/Shanghai wire; both read back exactly."""
    ts = datetime.datetime(2026, 11, 30, 8, 0, 0, 123000, tzinfo=datetime.timezone.utc).timestamp()
    for zone, hour in (("UTC", 8), ("Asia/Shanghai", 16)):
        clock = WireClock(zone)
        tag = cp56(clock, ts)
        assert (tag.hours, tag.milliseconds, tag.day_of_week) == (hour, 123, 1)
        assert from_cp56(clock, tag) == pytest.approx(ts, abs=1e-6)


def test_invalid_or_impossible_time_tags_are_refused() -> None:
    """IV set, or month 0: ValueError naming the problem."""
    tag = cp56(WireClock("UTC"), 1.8e9)
    with pytest.raises(ValueError, match="IV"):
        from_cp56(WireClock("UTC"), tag._replace(invalid=True))
    with pytest.raises(ValueError, match="not a date"):
        from_cp56(WireClock("UTC"), tag._replace(months=0))


@pytest.mark.parametrize("type_name,tagged", [("M_SP_TB_1", True), ("M_ME_TF_1", True), ("M_ME_NC_1", False),
                                              ("M_IT_NA_1", False)])
def test_pack_fills_asdus_to_the_limit_and_the_octets_decode_independently(type_name: str, tagged: bool) -> None:
    """300 objects pack into ASDUs of at most 249 octets; the independent decoder reads every IOA back in order."""
    clock, encoder = WireClock("UTC"), enc.Encoder()
    mapping = _map(type_name, multiplier=1)
    objects = [InfoObject(i, element(type_name, mapping, 1, 0), cp56(clock, 1.8e9) if tagged else None)
               for i in range(1, 301)]
    asdus = [bytes(encoder.encode_asdu(a)) for a in pack(type_name, cause(3), 7, objects)]
    assert all(len(a) <= 249 for a in asdus)
    assert len(asdus) == -(-300 // objects_per_asdu(type_name, tagged))
    decoded = [w.decode_asdu(a) for a in asdus]
    assert [o.ioa for a in decoded for o in a.objects] == list(range(1, 301))
    assert {(a.type_name, a.cot, a.ca) for a in decoded} == {(type_name, 3, 7)}
