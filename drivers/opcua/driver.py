"""The IDriver of one OPC UA device: a session kept alive, values as they are pushed, commands.

A device is subscribed, not polled: asyncua calls back once per notification and the driver
publishes through ``gateway.batching`` (one batch per reactor turn) and ``gateway.health``
(NT at once when the connection is lost, IV and ``_online`` False once it has been down for
``offline_after_s``). Reconnecting uses the shared backoff (``gateway.retry``: 0.5 s doubling to
8 s) and a new session each time, so a server that restarted, regenerated its certificate or lost
nodes is taken as it is now: items the server refuses are IV with the node named in the log,
the rest of the device stays live. An absent server at start is a device offline, not a
start-up failure. A command writes the point's node, or calls the point's method (``profile``:
``method``), and reads the node back either way.
"""

import asyncio
import logging
from datetime import datetime
from typing import Any

from asyncua import ua
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from drivers.opcua.codec import BadValue, EncodeError, decoded, reading_of, to_raw
from drivers.opcua.profile import OpcUaConnection, OpcUaPoint, OpcUaProfile
from drivers.opcua.publishcodec import Reading
from drivers.opcua.quality import keeps_last_value, quality_of, status_name
from drivers.opcua.session import Session
from drivers.opcua.subscribe import subscribe
from drivers.opcua.trust import UntrustedServer
from gateway.aio import as_deferred
from gateway.batching import TurnBatcher
from gateway.errors import CommandFailed, CommandRejected, DeviceError
from gateway.health import DeviceHealth, TurnValues
from gateway.interfaces import IDriver, ISampleSink
from gateway.metrics import Metrics
from gateway.model import Command, CommandResult, Device, Quality, Value
from gateway.retry import Backoff
from gateway.writecheck import check_readback, writable_point

log = logging.getLogger(__name__)
# asyncua logs every lost connection at ERROR with a traceback ("Publish iteration crashed"), and a
# warning at every connect; the driver reports failures itself, once per episode, naming the cause.
logging.getLogger("asyncua").setLevel(logging.CRITICAL)

BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 8.0
GOOD = Quality.GOOD
REFUSED_WRITES = frozenset({ua.StatusCodes.BadWriteNotSupported, ua.StatusCodes.BadTypeMismatch,
                            ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadNotWritable,
                            ua.StatusCodes.BadOutOfRange, ua.StatusCodes.BadNodeIdUnknown})


def _seconds(stamp: datetime | None) -> float | None:
    return stamp.timestamp() if stamp is not None else None


@implementer(IDriver)
class OpcUaDriver:
    """One device, one server connection; values pushed, commands written and read back."""

    def __init__(self, device: Device, sink: ISampleSink, reactor: Any, metrics: Metrics | None = None) -> None:
        self.device = device
        self.devices = [device.name]
        self.profile: OpcUaProfile = device.profile  # type: ignore[assignment]
        self.connection: OpcUaConnection = device.connection  # type: ignore[assignment]
        metrics = metrics or Metrics()
        self._specs: dict[str, OpcUaPoint] = {p.id: p for p in self.profile.points}  # type: ignore[misc]
        self.batcher: TurnBatcher[tuple[str, Reading]] = TurnBatcher(self._publish_turn, reactor)
        self.health = DeviceHealth(device.name, list(self._specs), sink, reactor, None,
                                   metrics=metrics, offline_after_s=self.connection.offline_after_s)
        self._backoff = Backoff(reactor, BACKOFF_START_S, BACKOFF_MAX_S)
        self._count = {key: metrics.counter(f"gridgate_opcua_{key}_total", text, device=device.name) for key, text in
                       (("notifications", "values pushed by the server"), ("connects", "sessions opened"))}
        self._session: Session | None = None
        self._task: asyncio.Future | None = None
        self._lost: asyncio.Event | None = None
        self._refused: dict[str, str] = {}  # point -> why its node is not served
        self._rejected: dict[str, str] = {}  # point -> why its last value was not taken (logged once)
        self._metrics = metrics
        self._lost_reason: Exception = DeviceError(device.name, "connection lost")
        self._reactor = reactor
        self._stopping = False

    def start(self) -> Deferred:
        """Connect in the background; an absent server is retried, never a start-up failure."""
        self._task = asyncio.ensure_future(self._run())
        return succeed(None)

    def stop(self) -> Deferred:
        """End the session and the reconnect loop."""
        async def stop() -> None:
            self._stopping = True
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            await self._close()
        return as_deferred(stop())

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a server's failure must not end the loop: it is retried
                self.health.failed(_cause(exc), exc)
            await self._close()
            if not self._stopping:
                await asyncio.sleep(self._backoff.failed())

    async def _serve(self) -> None:
        """One session: connect, subscribe, read, until the connection is lost."""
        lost = self._lost = asyncio.Event()
        self._session = await Session.open(self.device.name, self.connection, self.profile, self._on_lost)
        self._count["connects"].inc()
        subscribed = await subscribe(self._session, self.profile, self.connection.publishing_interval_ms,
                                     self._deliver, lambda why: self._lose(DeviceError(self.device.name, why)),
                                     self._on_gap)
        self._note_refused(subscribed.refused)
        self._backoff.succeeded()
        reads = asyncio.ensure_future(self._guarded(self._read_loop(self._session)))
        try:
            await lost.wait()
        finally:
            reads.cancel()
        raise self._lost_reason

    async def _guarded(self, loop: Any) -> None:
        """A read loop that fails ends the session (it is made again), never silently: a dead loop
        with a live session would leave the points good and stale."""
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a server's answer must not kill the loop unnoticed
            self._lose(exc)

    async def _on_lost(self, exc: Exception) -> None:
        self._lose(exc)

    def _lose(self, exc: Exception) -> None:
        self._lost_reason = DeviceError(self.device.name, f"connection to {self.connection.endpoint} lost: "
                                                          f"{type(exc).__name__} {exc}".rstrip())
        if self._lost is not None:
            self._lost.set()

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _note_refused(self, refused: dict[str, int]) -> None:
        """Items the server refused: IV, and the node named once per session (the rest stays live)."""
        self._refused = {}
        for point, status in refused.items():
            node = self._session.watched[point].node.nodeid.to_string() if self._session else "?"
            self._refused[point] = status_name(status)
            log.warning("%s.%s: node %s not served: %s; point IV", self.device.name, point, node, status_name(status))
            self.health.publish({point: (self.health.last(point), Quality.IV)})

    async def _on_gap(self, missing: list[int], republished: int) -> None:
        """Notification messages lost on the way (the server's answer could not be decoded): what
        was not republished is made good by reading every subscribed point afresh."""
        self._metrics.counter("gridgate_opcua_messages_lost_total", "notification messages not decoded",
                              device=self.device.name).inc(len(missing))
        log.warning("%s: notification messages %d..%d from %s not decoded; %d republished%s", self.device.name,
                    missing[0], missing[-1], self.connection.endpoint, republished,
                    "" if republished == len(missing) else ", subscribed points read afresh")
        if republished == len(missing) or self._session is None:
            return
        points = [p.id for p in self.profile.points if p.mode == "subscribe"]
        try:
            values = await self._session.read(points)
        except Exception as exc:  # the session is in doubt: it is made again
            self._lose(exc)
            return
        for point, value in values.items():
            self._deliver(point, reading_of(value))

    async def _read_loop(self, session: Session) -> None:
        """The ``mode: read`` points, every ``read_s``."""
        points = [p.id for p in self.profile.points if p.mode == "read"]
        while points:
            for point, value in (await session.read(points)).items():
                self._deliver(point, reading_of(value))
            await asyncio.sleep(self.connection.read_s)

    def _deliver(self, point: str, reading: Reading) -> None:
        """One value from the server, published with the others of this reactor turn."""
        self.batcher.add((point, reading))

    def _publish_turn(self, items: list[tuple[str, Reading]]) -> None:
        """A turn's values: quality from each StatusCode, a Bad one or one the point cannot take
        keeping the last value; one batch per round (a point queued twice in one turn starts the
        next round, so none is lost). Source times are per value."""
        self._count["notifications"].inc(len(items))
        turn = TurnValues()
        for point, reading in items:
            value, quality = self._taken(point, reading, turn)
            turn.put(point, value, quality, reading[3])
        turn.publish(self.health)

    def _taken(self, point: str, reading: Reading, turn: TurnValues) -> tuple[Value, Quality]:
        """One value as the point's value and quality (see ``quality`` and ``codec.decoded``)."""
        status = reading[2]
        if keeps_last_value(status):
            return turn.last_valid(point, self.health.last(point)), quality_of(status)
        try:
            engineering = decoded(self._specs[point], reading)
        except BadValue as exc:
            self._reject(point, exc)
            return turn.last_valid(point, self.health.last(point)), Quality.IV
        self._rejected.pop(point, None)
        return engineering, quality_of(status) if status else GOOD

    def _reject(self, point: str, exc: BadValue) -> None:
        """Counted by cause; logged once per point until it sends a value it can take again."""
        self._metrics.counter("gridgate_opcua_values_refused_total", "values a point could not take",
                              device=self.device.name, reason=exc.reason).inc()
        if self._rejected.get(point) != exc.reason:
            self._rejected[point] = exc.reason
            node = self._session.watched[point].node.nodeid.to_string() if self._session else "?"
            log.warning("%s.%s: node %s sent %s; point IV, last value kept", self.device.name, point, node, exc)

    def execute(self, command: Command) -> Deferred:
        """Write the node (a DataValue without timestamps, in its own type), read it back, compare."""
        return as_deferred(self._execute(command))

    async def _execute(self, command: Command) -> CommandResult:
        spec: OpcUaPoint = writable_point(self.profile, command)  # type: ignore[assignment]
        session = self._session
        if session is None:
            raise CommandFailed(f"{command.device}.{command.point}: not connected to {self.connection.endpoint}", False)
        watched = session.watched[spec.id]
        if watched.method_problem is not None:
            raise CommandFailed(f"{command.device}.{command.point}: {watched.method_problem}", False)
        try:
            raw = to_raw(spec, command.value, spec.method.command_argument().data_type if spec.method else None)
        except EncodeError as exc:
            raise CommandRejected(str(exc)) from exc
        remaining = command.deadline - self._reactor.seconds()
        if remaining <= 0:
            raise CommandRejected(f"{command.device}.{command.point}: deadline passed before writing")
        node = watched.node.nodeid.to_string()
        if spec.method is not None:
            await self._call(command, session, raw, remaining)
        else:
            await self._write(command, session, raw, remaining, node)
        return await self._read_back(command, spec, session, node)

    async def _write(self, command: Command, session: Session, raw: Any, remaining: float, node: str) -> None:
        try:
            status = await asyncio.wait_for(session.write(command.point, raw), remaining)
        except (asyncio.TimeoutError, OSError, ua.UaError) as exc:
            raise CommandFailed(f"{command.device}.{command.point}: write to {node} not acknowledged: {exc!r}",
                                None) from exc
        if not status.is_good():
            raise CommandFailed(f"{command.device}.{command.point}: node {node} refused the write: "
                                f"{status_name(status.value)}", False)

    async def _call(self, command: Command, session: Session, raw: Any, remaining: float) -> None:
        """Call the point's method; a refusal names the method, its StatusCode and each argument's."""
        method = session.watched[command.point].method[1].to_string()  # type: ignore[index]
        try:
            called = await asyncio.wait_for(session.call(command.point, raw), remaining)
        except (asyncio.TimeoutError, OSError, ua.UaError) as exc:
            raise CommandFailed(f"{command.device}.{command.point}: call of {method} not answered: {exc!r}",
                                None) from exc
        if not called.status.is_good():
            arguments = ", ".join(status_name(r.value) for r in called.argument_results)
            raise CommandFailed(f"{command.device}.{command.point}: method {method} refused the call: "
                                f"{status_name(called.status.value)}" + (f" (arguments: {arguments})" if arguments else ""),
                                False)

    async def _read_back(self, command: Command, spec: OpcUaPoint, session: Session, node: str) -> CommandResult:
        try:
            value = (await session.read([spec.id]))[spec.id]
        except (asyncio.TimeoutError, OSError, ua.UaError) as exc:
            raise CommandFailed(f"{command.device}.{command.point}: written, read-back of {node} failed: {exc!r}",
                                True) from exc
        engineering, quality = self._taken(spec.id, reading_of(value), TurnValues())
        self.health.publish({spec.id: (engineering, quality)})
        check_readback(command, spec, None if quality & Quality.IV else engineering, quality)
        return CommandResult(command, engineering, self._reactor.seconds())

    def stats(self) -> dict[str, Any]:
        """Connection state, pushed values, sessions opened, nodes not served."""
        return {"endpoint": self.connection.endpoint, "connected": self._session is not None,
                "notifications": int(self._count["notifications"].value), "connects": int(self._count["connects"].value),
                "not_served": dict(self._refused), "batches": self.batcher.stats(),
                "devices": {self.device.name: {"offline": self.health.offline, "failures": dict(self.health.causes)}}}


def _cause(exc: BaseException) -> str:
    """The counter a failed session goes under."""
    if isinstance(exc, UntrustedServer):
        return "untrusted"
    return "connection" if isinstance(exc, DeviceError) else "internal"
