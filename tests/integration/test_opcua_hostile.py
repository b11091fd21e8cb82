"""A hostile OPC UA server: values of the wrong type, arrays, empty values, NaN and infinity,
status codes of odd layouts, null time stamps, and a notification message the client library
cannot decode. The server is asyncua's, its variables written behind its own type checks
(``write_attribute_value``); what it really sent is read off the wire by ``tests.opcua_wire``, a
decoder written from OPC UA Part 6 that shares no code with asyncua, so each verdict is about
bytes that were on the wire, not about what the library thinks it sent.

The gateway must take none of these as a good value and let none of them raise out of the
driver: a point that gets a value it cannot take is IV with its last value kept, the others of
the device stay live, and a lost notification message is asked for again.
"""

import asyncio
import logging
import math
import struct
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from asyncua import Server, ua
from twisted.internet import reactor

from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.profile import OpcUaConnection, OpcUaOptions, OpcUaPoint, OpcUaProfile
from gateway.aio import as_deferred, await_deferred
from gateway.metrics import Metrics
from gateway.model import Device, Quality
from tests.aio import on_asyncio, until
from tests.opcua_wire import PUBLISH_RESPONSE, REPUBLISH_RESPONSE, PublishTap, service
from tests.ports import next_ports
from tests.sinks import RecordingSink

pytestmark = pytest.mark.integration

NS = "urn:gridgate:test:hostile"
V = ua.VariantType
# point -> (profile data type, the node's declared type, its first value)
NODES = {"f_str": ("Float", V.Float, 1.0), "d_arr": ("Double", V.Double, 2.0), "f_nan": ("Float", V.Float, 3.0),
         "d_inf": ("Double", V.Double, 4.0), "f_empty": ("Float", V.Float, 5.0), "b_int": ("Boolean", V.Boolean, True),
         "s_num": ("String", V.String, "ok"), "i_wide": ("Int16", V.Int16, 7), "f_reserved": ("Float", V.Float, 8.0),
         "f_limit": ("Float", V.Float, 9.0), "f_null_time": ("Float", V.Float, 10.0),
         "f_no_time": ("Float", V.Float, 11.0), "live": ("Double", V.Double, 0.0)}
HANDLES = {point: n + 1 for n, point in enumerate(NODES)}  # the driver numbers its items in profile order
PROFILE = OpcUaProfile(model="hostile", kind="ems", protocol="opcua", opcua=OpcUaOptions(namespace=NS, sampling_ms=0),
                       points=[OpcUaPoint(id=p, node=f"s={p}", data_type=t) for p, (t, _, _) in NODES.items()])
SERVER_TIME = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
NULL_TIME = datetime(1601, 1, 1, tzinfo=timezone.utc)
ANY = ua.NodeId(ua.ObjectIds.BaseDataType)


class Hostile:
    """asyncua's server with one variable of any data type per point, written as the test says."""

    def __init__(self) -> None:
        self.port = next_ports(1)[0]
        self.server = Server()
        self.nodes: dict[str, Any] = {}

    async def start(self) -> None:
        await self.server.init()
        self.server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}")
        index = await self.server.register_namespace(NS)
        for point, (_, kind, first) in NODES.items():
            self.nodes[point] = await self.server.nodes.objects.add_variable(
                ua.NodeId(point, index), point, ua.Variant(first, kind), datatype=ANY)
        await self.server.start()

    async def send(self, point: str, value: Any, kind: V, status: int = 0, source: datetime | None = None,
                   server: datetime | None = None, array: bool = False) -> None:
        """Write a DataValue as it is, past the server's type check (which compares with the value the
        node holds, and lets anything replace none)."""
        variant = ua.Variant(value, kind, is_array=array) if kind != V.Null else ua.Variant()
        now = datetime.now(timezone.utc)
        data = ua.DataValue(variant, StatusCode=ua.StatusCode(status), SourceTimestamp=source or now,
                            ServerTimestamp=server or now)
        nodeid = self.nodes[point].nodeid
        self.server.iserver.aspace[nodeid].attributes[ua.AttributeIds.Value].value = None
        await self.server.write_attribute_value(nodeid, data)


@pytest_twisted.async_yield_fixture
async def hostile() -> AsyncIterator[Hostile]:
    server = Hostile()
    await as_deferred(server.start())
    try:
        yield server
    finally:
        await as_deferred(server.server.stop())


class Watching:
    """The driver, connected through a tap, publishing into a recording table."""

    def __init__(self, tap: PublishTap) -> None:
        self.sink, self.metrics, self.tap = RecordingSink(), Metrics(), tap
        self.driver: OpcUaDriver | None = None

    def sample(self, point: str) -> Any:
        return self.sink.get(f"ems.{point}")

    def is_(self, point: str, value: Any, quality: Quality) -> bool:
        sample = self.sample(point)
        return sample is not None and sample.value == value and sample.quality == quality

    async def __aenter__(self) -> "Watching":
        await self.tap.start()
        connection = OpcUaConnection(endpoint=f"opc.tcp://127.0.0.1:{self.tap.port}", publishing_interval_ms=50,
                                     timeout_s=2.0, offline_after_s=3.0)
        self.driver = OpcUaDriver(Device("ems", PROFILE, Path("hostile.yaml"), connection, {}), self.sink, reactor,
                                  self.metrics)
        await await_deferred(self.driver.start())
        await until(lambda: all(self.is_(p, first, Quality.GOOD) for p, (_, _, first) in NODES.items()), 15,
                    "every first value good")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.driver is not None:
            await await_deferred(self.driver.stop())
        await self.tap.stop()


async def keep_moving(server: Hostile, stop: asyncio.Event) -> None:
    """The device's other point: it must stay live whatever its neighbours send."""
    n = 0
    while not stop.is_set():
        n += 1
        await server.send("live", float(n), V.Double)
        await asyncio.sleep(0.05)


@on_asyncio
async def test_values_a_point_cannot_take_are_iv_with_the_last_value_and_the_rest_stays_live(
        hostile: Hostile, caplog: pytest.LogCaptureFixture) -> None:
    """Wrong types, arrays, empty values, NaN and infinity are IV with the last value kept, a wider
    integer is taken, odd status layouts follow the table, null times fall back to the server's."""
    caplog.set_level(logging.WARNING, logger="drivers.opcua.driver")
    async with Watching(PublishTap(hostile.port)) as watch:
        stop = asyncio.Event()
        mover = asyncio.ensure_future(keep_moving(hostile, stop))
        await hostile.send("f_str", "12.5", V.String)
        await hostile.send("d_arr", [1.0, 2.0], V.Double, array=True)
        await hostile.send("f_nan", math.nan, V.Float)
        await hostile.send("d_inf", math.inf, V.Double)
        await hostile.send("f_empty", None, V.Null)
        await hostile.send("b_int", 2, V.Int32)
        await hostile.send("s_num", 3.0, V.Double)
        await hostile.send("i_wide", 70000, V.Int64)
        await hostile.send("f_reserved", 18.0, V.Float, status=0xC0000000)  # severity 11: reserved, taken as Bad
        await hostile.send("f_limit", 19.0, V.Float, status=0x00000700)  # Good, DataValue info: limit constant
        await hostile.send("f_null_time", 20.0, V.Float, source=NULL_TIME, server=SERVER_TIME)
        await hostile.send("f_no_time", 21.0, V.Float, source=NULL_TIME, server=NULL_TIME)
        refused = {"f_str": 1.0, "d_arr": 2.0, "f_nan": 3.0, "d_inf": 4.0, "f_empty": 5.0, "b_int": True,
                   "s_num": "ok", "f_reserved": 8.0}
        taken = {"i_wide": 70000, "f_limit": 19.0, "f_null_time": 20.0, "f_no_time": 21.0}
        await until(lambda: all(watch.is_(p, v, Quality.IV) for p, v in refused.items())
                    and all(watch.is_(p, v, Quality.GOOD) for p, v in taken.items()), 10,
                    "verdicts published")
        before = watch.sample("live").value
        await until(lambda: watch.sample("live").value >= before + 5, 5, "the live point keeps moving")
        assert watch.sample("live").quality == Quality.GOOD and watch.sample("_online").value is True
        stop.set()
        await mover

        wire = {p: watch.tap.values_of(HANDLES[p])[-1] for p in NODES}
        assert (wire["f_str"].type_id, wire["f_str"].value) == (12, "12.5")
        assert wire["d_arr"].is_array and wire["d_arr"].value == [1.0, 2.0]
        assert math.isnan(wire["f_nan"].value) and wire["d_inf"].value == math.inf
        assert wire["f_empty"].type_id == 0 and wire["f_empty"].status == 0
        assert (wire["b_int"].type_id, wire["s_num"].type_id, wire["i_wide"].type_id) == (6, 11, 8)
        assert wire["f_reserved"].status == 0xC0000000 and wire["f_limit"].status == 0x00000700
        assert wire["f_null_time"].source_ticks == 0 and wire["f_no_time"].source_ticks == 0
        assert watch.sample("f_null_time").source_time == SERVER_TIME.timestamp()
        assert abs(watch.sample("f_no_time").source_time - time.time()) < 5

        refusals = [r.getMessage() for r in caplog.records if "last value kept" in r.getMessage()]
        assert len(refusals) == 7, refusals  # one line per point (f_reserved is a status, not a refusal)
        assert any("ems.f_str: node ns=2;s=f_str sent String '12.5' where the profile says Float" in m
                   for m in refusals)
        assert watch.metrics.counter("gridgate_opcua_values_refused_total", "", device="ems", reason="type").value == 3

        await hostile.send("f_str", 13.5, V.Float)
        await hostile.send("b_int", False, V.Boolean)
        await until(lambda: watch.is_("f_str", 13.5, Quality.GOOD) and watch.is_("b_int", False, Quality.GOOD), 5,
                    "points good again once the server sends what they take")


def corrupting(value: float, services: tuple[int, ...], times: int | None) -> Any:
    """A mutation that gives the Variant Float ``value`` an undefined type (31) in the first ``times``
    (None: every) responses of ``services`` carrying it: the client cannot decode them."""
    scalar = bytes([10]) + struct.pack("<f", value)
    done: list[bool] = []

    def mutate(chunk: bytes) -> bytes:
        at = chunk.find(scalar)
        kind = service(chunk)
        if at < 0 or kind is None or kind[1] not in services or (times is not None and len(done) >= times):
            return chunk
        done.append(True)
        return chunk[:at] + bytes([31]) + chunk[at + 1:]
    return mutate


async def lose_a_value(hostile: Hostile, tap: PublishTap, watch: "Watching") -> None:
    """Send 42.0 on f_str, then a value on another point, whose message shows the gap."""
    await hostile.send("f_str", 42.0, V.Float)
    await until(lambda: any(v.value == 42.0 for v in tap.values_of(HANDLES["f_str"])), 5, "the value on the wire")
    await hostile.send("live", 1.0, V.Double)
    await until(lambda: watch.is_("f_str", 42.0, Quality.GOOD), 5, "the lost value had back")


@on_asyncio
async def test_a_notification_message_that_cannot_be_decoded_is_asked_for_again(
        hostile: Hostile, caplog: pytest.LogCaptureFixture) -> None:
    """A PublishResponse asyncua drops as undecodable would leave its points good and stale: the
    driver sees the gap in sequence numbers, republishes, and the value arrives."""
    caplog.set_level(logging.WARNING, logger="drivers.opcua.driver")
    tap = PublishTap(hostile.port, corrupting(42.0, (PUBLISH_RESPONSE,), times=1))
    async with Watching(tap) as watch:
        await lose_a_value(hostile, tap, watch)
        assert watch.metrics.counter("gridgate_opcua_messages_lost_total", "", device="ems").value == 1
        assert any("not decoded; 1 republished" in r.getMessage() for r in caplog.records)


@on_asyncio
async def test_a_message_that_cannot_be_had_back_is_made_good_by_reading_the_points(
        hostile: Hostile, caplog: pytest.LogCaptureFixture) -> None:
    """The republished message is as undecodable as the first: the driver reads the subscribed
    points afresh and the value arrives all the same."""
    caplog.set_level(logging.WARNING, logger="drivers.opcua.driver")
    tap = PublishTap(hostile.port, corrupting(42.0, (PUBLISH_RESPONSE, REPUBLISH_RESPONSE), times=None))
    async with Watching(tap) as watch:
        await lose_a_value(hostile, tap, watch)
        assert any("not decoded; 0 republished, subscribed points read afresh" in r.getMessage()
                   for r in caplog.records)
