"""The OPC UA driver's data-change filters, status handling and method calls against a second,
independent server: node-opcua (tests/conformant/server.js), since asyncua's server compares an
absolute deadband with the previous sample instead of the last reported value, drops status-only
changes on filtered items, has no percent deadband and checks no method argument. The driver
must be right against a conformant server.
"""

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from drivers.opcua.profile import (Deadband, MethodArgument, MethodCall, OpcUaConnection, OpcUaOptions, OpcUaPoint,
                                   OpcUaProfile)
from gateway.aio import await_deferred
from gateway.config.profile import Limits
from gateway.errors import CommandFailed
from gateway.model import Command, Device, Quality
from tests.integration.test_opcua_driver import Running
from tests.aio import on_asyncio, until
from tests.ports import next_ports

pytestmark = pytest.mark.integration

SERVER = Path(__file__).resolve().parents[1] / "conformant" / "server.js"
PROFILE = OpcUaProfile(
    model="conformant", kind="other", protocol="opcua",
    opcua=OpcUaOptions(namespace="urn:gridgate:conformant", sampling_ms=50),
    points=[OpcUaPoint(id="level", node="s=Level", data_type="Double", deadband=Deadband(percent=1.0)),
            OpcUaPoint(id="flow", node="s=Flow", data_type="Double", deadband=Deadband(absolute=1.0)),
            OpcUaPoint(id="state", node="s=State", data_type="Double", deadband=Deadband(absolute=0.5)),
            OpcUaPoint(id="setpoint", node="s=Setpoint", data_type="Double",
                       writable=Limits(min=-5000, max=5000, readback_tolerance=0.001),  # wider than the server's
                       method=MethodCall(object="s=Plant", node="s=SetSetpoint",
                                         arguments=[MethodArgument(data_type="Double"),
                                                    MethodArgument(data_type="UInt32", value=5)]))])


class NodeServer:
    """tests/conformant/server.js in a node process; ``change`` writes one JSON line to it."""

    def __init__(self) -> None:
        if shutil.which("node") is None or not (SERVER.parent / "node_modules").is_dir():
            raise RuntimeError("node-opcua missing: npm ci --prefix tests/conformant (.ci/run does it)")
        [self.port] = next_ports(1)
        self.process = subprocess.Popen(["node", str(SERVER), str(self.port)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.process.stdout:  # type: ignore[union-attr]
            if line.strip() == "ready":
                return
        raise RuntimeError("the node-opcua server ended before it listened")

    def change(self, **change: Any) -> None:
        self.process.stdin.write(json.dumps(change) + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def node_server() -> Iterator[NodeServer]:
    server = NodeServer()
    yield server
    server.stop()


def _device(port: int, profile: OpcUaProfile = PROFILE) -> Device:
    return Device("plant", profile, Path("x.yaml"),
                  OpcUaConnection(endpoint=f"opc.tcp://127.0.0.1:{port}", publishing_interval_ms=50), {})


def _values(run: Running, point: str) -> list[float]:
    return [s.value for s in run.sink.samples_of(f"plant.{point}") if s.quality == Quality.GOOD]


async def _settle() -> None:
    """Eight publishing intervals for the server to report, or (rightly) not to: absence can
    only be shown by waiting."""
    await asyncio.sleep(0.4)


@on_asyncio
async def test_absolute_deadband_compares_with_the_last_reported_value(node_server: NodeServer) -> None:
    async with Running(_device(node_server.port)) as run:
        await until(lambda: _values(run, "flow") == [10.0], 10, "initial value")
        for value in (10.4, 10.8):
            node_server.change(node="Flow", value=value)
            await _settle()
        assert _values(run, "flow") == [10.0]  # each step is under the deadband
        node_server.change(node="Flow", value=11.2)  # 1.2 from the last reported value: reported
        await until(lambda: _values(run, "flow") == [10.0, 11.2], 5, "11.2 reported")


@on_asyncio
async def test_percent_deadband_is_a_share_of_the_eurange(node_server: NodeServer) -> None:
    async with Running(_device(node_server.port)) as run:
        await until(lambda: _values(run, "level") == [50.0], 10, "initial value")
        node_server.change(node="Level", value=50.5)  # 0.5 % of 0..100: under 1 %
        await _settle()
        assert _values(run, "level") == [50.0]
        node_server.change(node="Level", value=51.2)
        await until(lambda: _values(run, "level") == [50.0, 51.2], 5, "51.2 reported")


@on_asyncio
async def test_a_status_only_change_arrives_and_sets_the_quality(node_server: NodeServer) -> None:
    async with Running(_device(node_server.port)) as run:
        await until(lambda: run.good("state"), 10, "initial value")
        node_server.change(node="State", status="UncertainLastUsableValue")
        await until(lambda: run.sample("state").quality == Quality.NT, 5, "Uncertain -> NT with the same value")
        assert run.sample("state").value == 5.0
        node_server.change(node="State", status="BadOutOfService")
        await until(lambda: run.sample("state").quality == Quality.BL | Quality.IV, 5, "BadOutOfService -> BL IV")
        assert run.sample("state").value == 5.0
        node_server.change(node="State", status="Good")
        await until(lambda: run.good("state"), 5, "Good again")


def _command(value: float) -> Command:
    return Command("plant", "setpoint", value, time.time() + 5)


@on_asyncio
async def test_a_command_calls_the_method_with_typed_arguments_and_reads_the_point_back(node_server: NodeServer) -> None:
    """node-opcua checks the call's arguments against the method's InputArguments: the call is taken,
    the read-only point moves and is read back; a value the method refuses names it and its StatusCode."""
    async with Running(_device(node_server.port)) as run:
        await until(lambda: run.good("setpoint"), 10, "setpoint good")
        result = await await_deferred(run.driver.execute(_command(-250.5)))
        assert result.readback == -250.5 and run.sample("setpoint").value == -250.5
        with pytest.raises(CommandFailed, match=r"method ns=\d+;s=SetSetpoint refused the call: BadOutOfRange") as failed:
            await await_deferred(run.driver.execute(_command(4000.0)))
        assert failed.value.written is False


@on_asyncio
async def test_a_method_whose_arguments_differ_from_the_profile_refuses_commands_without_calling(
        node_server: NodeServer) -> None:
    """The server's InputArguments (Double, UInt32) are read at connection: a profile giving
    (Float, UInt32) has its commands refused naming both, and a method the server lacks too."""
    wrong = PROFILE.model_copy(update={"points": [
        PROFILE.point("setpoint").model_copy(update={"method": MethodCall(
            object="s=Plant", node="s=SetSetpoint",
            arguments=[MethodArgument(data_type="Float"), MethodArgument(data_type="UInt32", value=5)])}),
        OpcUaPoint(id="missing", node="s=Flow", data_type="Double", writable=Limits(min=0, max=1),
                   method=MethodCall(object="s=Plant", node="s=NoSuchMethod", arguments=[MethodArgument(data_type="Double")]))]})
    async with Running(_device(node_server.port, wrong)) as run:
        await until(lambda: run.good("setpoint", "missing"), 10, "points good")
        with pytest.raises(CommandFailed, match=r"SetSetpoint takes \(Double, UInt32\), the profile gives \(Float, UInt32\)"):
            await await_deferred(run.driver.execute(_command(10.0)))
        with pytest.raises(CommandFailed, match=r"method ns=\d+;s=NoSuchMethod not served: BadNodeIdUnknown"):
            await await_deferred(run.driver.execute(Command("plant", "missing", 1.0, time.time() + 5)))
