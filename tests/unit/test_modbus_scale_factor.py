"""Scale factors in Modbus profiles (SunSpec sunssf): decode, encode, the poller's same-poll rule,
the simulator's encoding and the profile checks. No sockets: the poller reads a scripted link."""

from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from pydantic import ValidationError
from twisted.internet.task import Clock

from drivers.modbus import DRIVER, codec
from drivers.modbus.poller import DevicePoller
from drivers.modbus.profile import ModbusOptions, ModbusPoint, ModbusProfile
from drivers.modbus.sim.device import SimulatedDevice
from gateway.aio import as_deferred
from gateway.config.profile import SimBehaviour
from gateway.errors import DeviceException
from gateway.model import Quality
from tests.devices import modbus_device
from tests.sinks import RecordingSink

W = ModbusPoint(id="w", address=0, type="int16", scale_factor="w_sf", unit="W")
W_SF = ModbusPoint(id="w_sf", address=1, type="int16")


def _profile(*points: ModbusPoint, max_gap: int = 16) -> ModbusProfile:
    return ModbusProfile(model="sf", kind="pv", protocol="modbus", modbus=ModbusOptions(max_gap=max_gap),
                         points=list(points))


@pytest.mark.parametrize(("raw", "exponent", "expected"), [
    (2345, -1, 234.5), (2345, 0, 2345.0), (2345, 2, 234500.0), (-1234, -2, -12.34), (1, -10, 1e-10)])
def test_decode_multiplies_by_ten_to_the_exponent(raw: int, exponent: int, expected: float) -> None:
    """raw x 10^sf, exactly the nearest float (2345 at -1 is 234.5, not 234.50000000000003)."""
    assert codec.decode(W, "ABCD", [raw & 0xFFFF], exponent) == (expected, Quality.GOOD)


def test_scale_and_offset_apply_after_the_exponent() -> None:
    """engineering = raw x 10^sf x scale + offset: a negative scale flips a sign convention."""
    point = W.model_copy(update={"scale": -1.0, "offset": 5.0})
    assert codec.decode(point, "ABCD", [2345], -1) == (-229.5, Quality.GOOD)


def test_decoder_gives_the_raw_number_and_sentinels_stay_invalid() -> None:
    """The precompiled decoder leaves the exponent to the poller; a sentinel is IV whatever the exponent."""
    assert codec.make_decoder(W, "ABCD")([1234], 0) == (1234, Quality.GOOD)
    assert codec.decode(W, "ABCD", [0x8000], 1) == (None, Quality.IV)


def test_decode_without_exponent_is_invalid() -> None:
    """An exponent not read, or not implemented, never turns into a number."""
    assert codec.decode(W, "ABCD", [1234], None) == (None, Quality.IV)


def test_encode_divides_by_ten_to_the_exponent_and_needs_it() -> None:
    """Writes invert the decode with the exponent given; without one the write is refused."""
    assert codec.encode(W, "ABCD", 234.5, -1) == [2345]
    assert codec.encode(W, "ABCD", 12340, 1) == [1234]
    assert codec.decode(W, "ABCD", codec.encode(W, "ABCD", -12.34, -2), -2) == (-12.34, Quality.GOOD)
    with pytest.raises(codec.EncodeError, match="scale factor 'w_sf' is not known"):
        codec.encode(W, "ABCD", 234.5)
    with pytest.raises(codec.EncodeError, match="outside int16"):
        codec.encode(W, "ABCD", 400000, 0)


def test_exponent_is_ignored_for_points_without_scale_factor() -> None:
    """A plain point encodes as before, whatever exponent a caller passes."""
    assert codec.encode(W_SF, "ABCD", -3, 2) == [0xFFFD]


def test_a_scale_factor_is_only_for_numbers() -> None:
    """A string or bool point with scale_factor is a profile error."""
    with pytest.raises(ValidationError, match="'scale_factor' is for numbers"):
        ModbusPoint(id="s", address=0, type="string", length=4, scale_factor="w_sf")


def test_scale_factored_point_is_a_float_without_fixed_range() -> None:
    """Its resolution is set at run time, so the register type bounds no engineering range."""
    assert W.value_kind() == "float" and W.value_range() is None
    assert W_SF.value_kind() == "int" and W_SF.value_range() == (-32768.0, 32767.0)


@pytest.mark.parametrize(("factor", "message"), [
    (None, "'w_sf' is no point of this profile"),
    (W_SF.model_copy(update={"type": "uint16"}), "'w_sf' is type uint16; a scale factor is an int16 register"),
    (W_SF.model_copy(update={"scale": 0.1}), "'w_sf' must be a plain int16"),
])
def test_profile_check_refuses_a_scale_factor_that_is_no_plain_int16(factor: ModbusPoint | None,
                                                                       message: str) -> None:
    """gridgate check names the point and why its scale factor cannot be one."""
    points = [W] + ([factor] if factor is not None else [])
    [(location, problem)] = DRIVER.profile_problems(_profile(*points))
    assert location == ("points", 0, "scale_factor") and message in problem
    assert DRIVER.profile_problems(_profile(W, W_SF)) == []


class ScriptedLink:
    """Answers each read with the next outcome: registers, or an exception to raise."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)

    async def call(self, device: str, timeout_s: float, retries: int, priority: bool, request: Any) -> Any:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return SimpleNamespace(registers=outcome, bits=[])


def _poller(profile: ModbusProfile, link: ScriptedLink, sink: RecordingSink) -> DevicePoller:
    device = modbus_device("inv", profile, host="127.0.0.1", port=1502)
    return DevicePoller(device, link, sink, Clock())  # type: ignore[arg-type]


def _seen(sink: RecordingSink, point: str) -> tuple[Any, Quality]:
    sample = sink.get(f"inv.{point}")
    return sample.value, sample.quality


@pytest_twisted.inlineCallbacks
def test_poll_scales_with_the_exponent_of_the_same_poll() -> None:
    """Each poll uses the exponent it read itself: a changed W_SF rescales at once, never a poll late."""
    sink = RecordingSink()
    poller = _poller(_profile(W, W_SF), ScriptedLink([1234, 1], [1234, 0xFFFF]), sink)
    yield as_deferred(poller.poll())
    assert _seen(sink, "w") == (12340.0, Quality.GOOD) and _seen(sink, "w_sf") == (1, Quality.GOOD)
    assert poller.exponent("w") == 1
    yield as_deferred(poller.poll())
    assert _seen(sink, "w") == (123.4, Quality.GOOD) and poller.exponent("w") == -1


@pytest_twisted.inlineCallbacks
def test_not_implemented_exponent_makes_its_points_invalid() -> None:
    """W_SF reading 0x8000 makes W IV with its last value, and no exponent is known for writes."""
    sink = RecordingSink()
    poller = _poller(_profile(W, W_SF), ScriptedLink([1234, 1], [999, 0x8000]), sink)
    yield as_deferred(poller.poll())
    yield as_deferred(poller.poll())
    assert _seen(sink, "w") == (12340.0, Quality.IV) and _seen(sink, "w_sf") == (None, Quality.IV)
    assert poller.exponent("w") is None
    assert poller.decode("w", [1234]) == (None, Quality.IV)


@pytest_twisted.inlineCallbacks
def test_exponent_in_a_refused_block_makes_its_points_invalid() -> None:
    """W_SF in its own block answered with exception 02: W, read fine, is IV too."""
    far_sf = W_SF.model_copy(update={"address": 100})
    sink = RecordingSink()
    poller = _poller(_profile(W, far_sf, max_gap=0), ScriptedLink([1234], [2], [1234], DeviceException("inv", 2)),
                     sink)
    yield as_deferred(poller.poll())
    assert _seen(sink, "w") == (123400.0, Quality.GOOD)
    yield as_deferred(poller.poll())
    assert _seen(sink, "w") == (123400.0, Quality.IV) and _seen(sink, "w_sf") == (2, Quality.IV)


@pytest_twisted.inlineCallbacks
def test_read_back_decodes_with_the_last_exponent() -> None:
    """A command's read-back of a scale-factored point uses the exponent the last poll read."""
    poller = _poller(_profile(W, W_SF), ScriptedLink([1234, -2 & 0xFFFF]), RecordingSink())
    assert poller.decode("w", [1234]) == (None, Quality.IV)
    yield as_deferred(poller.poll())
    assert poller.decode("w", [1500]) == (15.0, Quality.GOOD)
    assert poller.exponent("w_sf") is None  # a point without scale factor has none


def test_poller_without_scale_factors_keeps_plain_decoders() -> None:
    """Profiles without scale_factor pay nothing: no post-pass, the shared precompiled decoders."""
    plain = ModbusPoint(id="p", address=0, type="int16", scale=0.1)
    poller = _poller(_profile(plain), ScriptedLink(), RecordingSink())
    assert not poller._factored and poller._decoders["p"] is codec.make_decoder(plain, "ABCD")


def test_simulator_encodes_with_the_exponent_it_serves() -> None:
    """raw = value / 10^sf with the scale factor's served value; served() reads it back as a client would."""
    text = ModbusPoint(id="md", address=2, type="string", length=4, sim=SimBehaviour(text="GG-PV"))
    device = SimulatedDevice(modbus_device("inv", _profile(W, W_SF, text), host="127.0.0.1", port=0), 0)
    device.serve({"w": 54321.7, "w_sf": 1, "md": "GG-PV"})
    assert device.tables["holding"].data[:2] == [5432, 1]
    assert device.served("w") == 54320.0 and device.served("md") == "GG-PV"
    device.serve({"w": 54321.7, "w_sf": -1, "md": "GG-PV"})  # 543217 does not fit: the register keeps 5432
    assert device.tables["holding"].data[:2] == [5432, 0xFFFF] and device.served("w") == 543.2
    device.serve({"w": 123.46, "w_sf": -1, "md": "GG-PV"})
    assert device.tables["holding"].data[0] == 1235 and device.served("w") == 123.5


def test_sim_text_is_for_string_points() -> None:
    """sim.text on a number is a profile error, not a silently unserved value."""
    with pytest.raises(ValidationError, match="sim 'text' is what a string point serves"):
        ModbusPoint(id="n", address=0, type="uint16", sim=SimBehaviour(text="x"))
