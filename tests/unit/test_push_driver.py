"""A driver that is pushed to fits the core's contract with no poll period and no simulator.

``PushPlugin`` is the smallest such driver (a sensor streaming readings): its connection model
has no polling fields, it provides no ISimulatorPlugin, and it reports health through the core's
``DeviceHealth`` with a silence watchdog and publishes through ``SampleBatcher``. The real site
loader takes it as it takes Modbus.
"""

from pathlib import Path
from typing import Any, Sequence

import pytest
from pydantic import Field
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.batching import SampleBatcher
from gateway.config.loader import load_site
from gateway.config.profile import PointSpec, ProfileSpec, Strict
from gateway.config.source import ConfigErrors
from gateway.health import DeviceHealth
from gateway.interfaces import IDriver, IDriverPlugin, ISimulatorPlugin
from gateway.model import Quality
from gateway.registry import Plugins, load_plugins
from tests.sinks import RecordingSink


class StreamConnection(Strict):
    """Where the sensor streams from: nothing about polling."""

    port: str = Field(pattern=r"^/dev/")
    silence_s: float = Field(5.0, gt=0)


class StreamProfile(ProfileSpec):
    points: list[PointSpec]


@implementer(IDriver)
class StreamDriver:
    """Publishes what arrives (``received``), batched per reactor turn; silence makes its points NT, then IV."""

    def __init__(self, devices: Sequence[Any], sink: Any, clock: Any) -> None:
        self.devices = [d.name for d in devices]
        self.batcher = SampleBatcher(sink, clock)
        self.health = {d.name: DeviceHealth(d.name, [p.id for p in d.profile.points], self.batcher, clock, 2,
                                            silence_s=d.connection.silence_s) for d in devices}

    def start(self) -> Any:
        for health in self.health.values():
            health.start()
        return succeed(None)

    def stop(self) -> Any:
        for health in self.health.values():
            health.stop()
        return succeed(None)

    def execute(self, command: Any) -> Any:
        raise NotImplementedError("a sensor takes no commands")

    def stats(self) -> dict[str, Any]:
        return self.batcher.stats()

    def received(self, device: str, point: str, value: float) -> None:
        self.health[device].good({point: (value, Quality.GOOD)})


@implementer(IDriverPlugin)
class PushPlugin:
    name = "stream"
    profile_model = StreamProfile
    connection_model = StreamConnection

    def prepare(self, connection: Any, folder: Path) -> Any:
        return connection

    def profile_problems(self, profile: Any) -> list:
        return []

    def site_problems(self, devices: Sequence[Any]) -> list:
        return []

    def load_summary(self, devices: Sequence[Any]) -> str:
        return "pushed"

    def device_summary(self, device: Any) -> str:
        return "as they change"

    def build(self, devices: Sequence[Any], sink: Any, reactor: Any, metrics: Any) -> list:
        return [StreamDriver(devices, sink, reactor)]


def _plugins() -> Plugins:
    installed = load_plugins()
    return Plugins(drivers={**installed.drivers, "stream": PushPlugin()}, northbound=installed.northbound)


def _site(tmp_path: Path, device_keys: str = "") -> Path:
    (tmp_path / "dts.yaml").write_text("model: dts\nkind: sensor\nprotocol: stream\npoints:\n"
                                       "  - {id: t_max, unit: degC}\n  - {id: t_mean, unit: degC}\n")
    site = tmp_path / "site.yaml"
    site.write_text("site: s\ndevices:\n  - name: dts1\n    profile: dts.yaml\n"
                    "    connection: {port: /dev/ttyUSB0, silence_s: 2}\n" + device_keys)
    return site


def test_the_push_plugin_provides_the_driver_interface_and_no_simulator() -> None:
    plugin = PushPlugin()
    assert verifyObject(IDriverPlugin, plugin)
    assert not ISimulatorPlugin.providedBy(plugin)


def test_a_push_device_loads_without_a_poll_period_and_refuses_one(tmp_path: Path) -> None:
    site = load_site(_site(tmp_path), _plugins())
    [device] = site.devices
    assert not hasattr(device.connection, "poll_s") and not hasattr(device, "poll_s")
    with pytest.raises(ConfigErrors) as caught:
        load_site(_site(tmp_path, "    poll_s: 1s\n"), _plugins())
    [problem] = caught.value.problems
    assert (problem.line, problem.path, problem.message) == (6, "devices[0].poll_s", "unknown key")


def test_a_push_driver_publishes_batches_and_goes_offline_when_silent(tmp_path: Path) -> None:
    site = load_site(_site(tmp_path), _plugins())
    sink, clock = RecordingSink(), Clock()
    [driver] = PushPlugin().build(site.devices, sink, clock, None)
    driver.start()
    driver.received("dts1", "t_max", 41.5)
    driver.received("dts1", "t_mean", 30.25)
    assert sink.history == []  # one publish per reactor turn, not per item
    clock.advance(0)
    assert [(s.point, s.value) for s in sink.history] == [("dts1.t_max", 41.5), ("dts1._online", True),
                                                          ("dts1.t_mean", 30.25)]
    assert driver.stats()["batches"] == 1
    clock.pump([0.5] * 4)  # 2 s of silence
    clock.advance(0)
    assert sink.get("dts1.t_max").quality == Quality.NT
    clock.pump([0.5] * 4)
    clock.advance(0)
    assert sink.get("dts1.t_max").quality == Quality.IV | Quality.NT and sink.get("dts1._online").value is False
    driver.stop()
