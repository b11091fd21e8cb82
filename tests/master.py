"""A c104 dispatch master for tests: records everything it receives, thread-safely.

c104 callbacks run on c104's threads, so the record is a locked list that tests poll; the
blocking calls (start, GI, clock sync, stop) are plain methods tests run in a thread
(``deferToThread``) when the reactor must keep running meanwhile.
This module must not use ``from __future__ import annotations`` (c104 checks annotations).
"""

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import c104


@dataclass(frozen=True)
class Received:
    """One information object as the master saw it."""

    ioa: int
    type: str
    cot: str
    value: Any
    quality: int
    recorded_at: Any
    at: float


def plain(value: Any) -> Any:
    """c104's value wrappers (Int16, NormalizedFloat, Double) as plain Python numbers."""
    if isinstance(value, c104.Int16):
        return int(value)
    if isinstance(value, c104.NormalizedFloat):
        return float(value)
    if isinstance(value, c104.Double):
        return int(value.value)
    return value


class TestMaster:
    """A c104 client connected to one outstation, recording what it receives."""

    __test__ = False  # not a pytest class

    def __init__(self, port: int, common_address: int, host: str = "127.0.0.1") -> None:
        self.common_address = common_address
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._client = c104.Client(tick_rate_ms=50, command_timeout_ms=5000)
        # Init.INTERROGATION: c104 sends STARTDT and a GI itself once the link is up.
        self.connection = self._client.add_connection(ip=host, port=port, init=c104.Init.INTERROGATION)
        self._client.on_new_point(callable=self._on_new_point)

    def _on_new_point(self, client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type) -> None:
        station.add_point(io_address=io_address, type=point_type).on_receive(callable=self._on_receive)

    def _on_receive(self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage) -> c104.ResponseState:
        quality = point.quality
        item = Received(point.io_address, message.type.name, message.cot.name, plain(point.value),
                        int(quality.value) if quality is not None else 0, point.recorded_at, time.time())
        with self._lock:
            self._received.append(item)
        return c104.ResponseState.NONE

    def connect(self, timeout_s: float = 10.0) -> bool:
        """Open the link (STARTDT and a first GI); False when the outstation refused or never answered."""
        self._client.start()
        deadline = time.monotonic() + timeout_s
        muted_since: float | None = None
        while self.connection.state != c104.ConnectionState.OPEN:
            now = time.monotonic()
            if now > deadline:
                return False
            muted_since = (muted_since or now) if self.connection.state == c104.ConnectionState.OPEN_MUTED else None
            if muted_since is not None and now - muted_since > 0.5:
                # c104 2.2.1 sometimes leaves a link muted (no STARTDT), e.g. after a first
                # refused attempt. unmute() only once the link has been stably up: on a link the
                # outstation is closing it crashes c104 (segmentation fault).
                self.connection.unmute()
                muted_since = None
            time.sleep(0.01)
        return True

    def interrogate(self) -> bool:
        """General interrogation; True once ACT_TERM arrived."""
        return self.connection.interrogation(common_address=self.common_address)

    def clock_sync(self) -> bool:
        """C_CS_NA_1 with this process's clock; True on a positive confirmation."""
        return self.connection.clock_sync(common_address=self.common_address)

    def received(self, where: Callable[[Received], bool] = lambda r: True) -> list[Received]:
        """What arrived so far (filtered), oldest first."""
        with self._lock:
            return [r for r in self._received if where(r)]

    def wait_for(self, condition: Callable[["TestMaster"], bool], timeout_s: float = 10.0) -> bool:
        """Poll ``condition(self)`` until it holds or the time is up."""
        deadline = time.monotonic() + timeout_s
        while not condition(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        """Close the link."""
        self._client.stop()
