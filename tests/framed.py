"""Framed-serial devices for tests: a Device on a connection, and the plugin's drivers for some
devices publishing into a recording table."""

from pathlib import Path
from typing import Any

from twisted.internet import reactor

from drivers.serial_framed import DRIVER
from drivers.serial_framed.profile import FramedConnection, FramedProfile
from gateway.aio import await_deferred
from gateway.metrics import Metrics
from gateway.model import Device
from tests.sinks import RecordingSink

FAST_POLLING = {"poll_s": 0.2, "timeout_s": 0.3, "retries": 0, "offline_after": 2}


def framed_device(name: str, profile: FramedProfile, **connection: Any) -> Device:
    """A Device of ``profile`` on ``connection`` (serial or host/port, address, polling settings)."""
    return Device(name, profile, Path(f"{name}.yaml"), FramedConnection(**(FAST_POLLING | connection)), {})


class FramedGateway:
    """The plugin's drivers for ``devices``; an async context that starts and stops them."""

    def __init__(self, devices: list[Device]) -> None:
        self.devices = devices
        self.sink, self.metrics = RecordingSink(), Metrics()
        self.drivers = DRIVER.build(devices, self.sink, reactor, self.metrics)

    def value(self, point: str) -> Any:
        sample = self.sink.get(point)
        return None if sample is None else sample.value

    def quality(self, *points: str) -> set[Any]:
        return {s.quality if (s := self.sink.get(p)) is not None else None for p in points}

    def counter(self, key: str) -> float:
        """A line counter summed over the buses (``gridgate_framed_<key>_total``)."""
        return self.metrics.total(f"gridgate_framed_{key}_total")

    async def __aenter__(self) -> "FramedGateway":
        for driver in self.drivers:
            await await_deferred(driver.start())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for driver in self.drivers:
            await await_deferred(driver.stop())
