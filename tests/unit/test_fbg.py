"""FBG gratings from a peak table: matching by window, the calibration polynomial and its inverse,
the reference grating's shift, and every reason a grating is IV. Peak tables built here with
struct from the documented layout, not by the module."""

import struct

import pytest

from drivers.serial_framed.fbg import Grating, PeakTable, grating_values
from drivers.serial_framed.fields import PayloadError
from gateway.model import Quality

TABLE = PeakTable(counts_at=12, channels=2, wavelengths_at=32, scale=0.0001)
T1 = Grating("t1", 1, (1529.0, 1531.0), 1530.0, (25.0, 100.0, 2.0), reference="ref")
T2 = Grating("t2", 2, (1529.0, 1531.0), 1530.0, (25.0, 100.0))
REF = Grating("ref", 1, (1549.0, 1551.0), 1550.0, (25.0, 100.0))


def payload(channels: list[list[float]]) -> bytes:
    counts = struct.pack("<2H", *[len(c) for c in channels])
    flat = [round(w / 0.0001) for c in channels for w in c]
    body = bytearray(32 + 4 * len(flat))
    body[12:16] = counts
    struct.pack_into(f"<{len(flat)}i", body, 32, *flat)
    return bytes(body)


def test_peaks_come_out_per_channel_in_nm() -> None:
    assert TABLE.peaks(payload([[1530.05, 1550.0], [1529.5]])) == [[pytest.approx(1530.05), pytest.approx(1550.0)],
                                                                   [pytest.approx(1529.5)]]
    assert TABLE.peaks(TABLE.payload([[1530.05, 1550.0], [1529.5]])) == TABLE.peaks(payload([[1530.05, 1550.0],
                                                                                             [1529.5]]))


def test_a_table_shorter_than_its_counts_say_is_refused() -> None:
    with pytest.raises(PayloadError, match="3 peaks need 44"):
        TABLE.peaks(payload([[1530.0, 1550.0], [1530.0]])[:40])
    with pytest.raises(PayloadError, match="the peak counts need 16"):
        TABLE.peaks(bytes(14))


def test_temperatures_follow_the_calibration_with_the_reference_shift_subtracted() -> None:
    values, reasons = grating_values([T1, T2, REF], TABLE.peaks(payload([[1530.06, 1550.01], [1529.9]])))
    shift = 0.06 - 0.01  # t1's shift minus the reference's
    assert values["t1"] == (pytest.approx(25.0 + 100.0 * shift + 2.0 * shift ** 2), Quality.GOOD)
    assert values["t2"] == (pytest.approx(25.0 - 10.0), Quality.GOOD)
    assert values["ref"] == (pytest.approx(26.0), Quality.GOOD) and reasons == {}


@pytest.mark.parametrize("channels, point, reason", [
    ([[1550.0], [1530.0]], "t1", "missing_peak"),
    ([[1530.0, 1530.4, 1550.0], [1530.0]], "t1", "ambiguous_peak"),
    ([[1530.0], [1530.0]], "t1", "reference_missing"),
    ([[1530.0, 1550.0], []], "t2", "missing_peak"),
])
def test_a_grating_without_one_good_match_is_iv_with_its_reason(channels: list[list[float]], point: str,
                                                                 reason: str) -> None:
    values, reasons = grating_values([T1, T2, REF], TABLE.peaks(payload(channels)))
    assert values[point] == (None, Quality.IV) and reasons[point] == reason
    assert all(q == Quality.GOOD for p, (_, q) in values.items() if p not in reasons)


def test_a_channel_the_interrogator_does_not_have_is_a_missing_peak() -> None:
    far = Grating("far", 5, (1529.0, 1531.0), 1530.0, (25.0, 100.0))
    assert grating_values([far], [[1530.0], [1530.0]]) == ({"far": (None, Quality.IV)}, {"far": "missing_peak"})


@pytest.mark.parametrize("grating", [T1, T2])
def test_the_shift_for_a_temperature_inverts_the_calibration(grating: Grating) -> None:
    for temperature in (-10.0, 25.0, 31.5, 80.0):
        assert grating.temperature(grating.shift_for(temperature)) == pytest.approx(temperature)
