"""One serial port (pyserial through Twisted's ``SerialPort``) or one TCP serial server: octets in,
frames out, one transaction in flight.

An RS-485 line carries several addresses and answers one request at a time, so every device of a
bus transacts through one ``FramedLink``: its lock holds the line from the request to the matching
reply (or the response timeout). Octets go through one ``FrameScanner``; a silence of
``inter_byte_timeout_s`` inside a frame ends it as truncated. A frame nobody awaits is a streamed
one: it goes to ``on_frame`` (a device that talks by itself), else it is counted as unexpected.
A TCP serial server is reconnected with the shared backoff; a serial port that cannot be opened
is tried again the same way (a USB adapter unplugged and back).
"""

import asyncio
import logging
from typing import Any, Callable

from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from drivers.serial_framed.framing import Frame, FrameFormat, FrameScanner
from drivers.serial_framed.profile import FramedConnection
from gateway.errors import DeviceError, DeviceTimeout
from gateway.metrics import Metrics
from gateway.retry import Backoff

log = logging.getLogger(__name__)

BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 8.0
SCANNER_COUNTERS = {"frames": "frames taken from the line",
                    "garbage_octets": "octets dropped while looking for a frame",
                    "bad_checksum": "frames dropped for a wrong checksum",
                    "bad_length": "frames dropped for an impossible length",
                    "bad_format": "frames dropped for a broken layout",
                    "truncated": "frames cut off by silence"}


class _LineProtocol(Protocol):
    def __init__(self, link: "FramedLink") -> None:
        self.link = link

    def connectionMade(self) -> None:
        self.link.connected(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.link.received(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.link.lost(reason)


class _Dialer(ClientFactory):
    def __init__(self, link: "FramedLink") -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> _LineProtocol:
        return _LineProtocol(self.link)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.link.lost(reason)


class FramedLink:
    """A bus: its transport, its scanner, and its one transaction in flight."""

    def __init__(self, connection: FramedConnection, fmt: FrameFormat, name: str, reactor: Any,
                 metrics: Metrics | None = None) -> None:
        self.connection, self.name = connection, name
        self._reactor = reactor
        self._scanner = FrameScanner(fmt)
        self._transport: Any = None
        self._lock = asyncio.Lock()
        self._awaiting: tuple[Callable[[Frame], bool], asyncio.Future] | None = None
        self._expiry: Any = None
        self._backoff = Backoff(reactor, BACKOFF_START_S, BACKOFF_MAX_S)
        self._opening: Any = None
        self._closed = False
        self.on_frame: Callable[[Frame], None] | None = None
        metrics = metrics or Metrics()
        self._counted = dict.fromkeys(SCANNER_COUNTERS, 0)
        self._counters = {key: metrics.counter(f"gridgate_framed_{key}_total", text, bus=name)
                          for key, text in SCANNER_COUNTERS.items()}
        self._unexpected = metrics.counter("gridgate_framed_unexpected_total", "frames nobody awaited", bus=name)
        self._late = metrics.counter("gridgate_framed_late_total", "frames dropped in the quiet after a timeout",
                                     bus=name)
        self._quiet_until = 0.0
        self._why_closed = "not opened yet"

    # ---- the line -------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the port or dial the server now, and again after every loss (backoff)."""
        self._opening = None
        if self._closed or self._transport is not None:
            return
        if self.connection.serial is not None:
            self._open_serial()
        else:
            self._reactor.connectTCP(self.connection.host, self.connection.port, _Dialer(self),
                                     timeout=max(1.0, self.connection.timeout_s))

    def _open_serial(self) -> None:
        from twisted.internet.serialport import SerialPort  # pyserial, imported only for a serial bus
        try:
            SerialPort(_LineProtocol(self), self.connection.serial, self._reactor, baudrate=self.connection.baudrate,
                       bytesize=self.connection.bytesize, parity=self.connection.parity,
                       stopbits=self.connection.stopbits)
        except Exception as exc:  # pylint: disable=broad-except  # pyserial raises SerialException, OSError...
            self.lost(Failure(exc))

    def connected(self, transport: Any) -> None:
        self._transport = transport
        self._backoff.succeeded()
        log.info("%s: open", self.name)

    def lost(self, reason: Failure) -> None:
        """The line went away (or never came): fail the transaction, try again after the backoff."""
        was_open, self._transport = self._transport is not None, None
        self._why_closed = reason.getErrorMessage()
        if was_open:
            log.warning("%s: lost: %s", self.name, reason.getErrorMessage())
        self._fail_waiting(DeviceError(self.name, reason.getErrorMessage()))
        if not self._closed and self._opening is None:
            self._opening = self._reactor.callLater(self._backoff.failed(), self.open)

    def close(self) -> None:
        """Close the line for good."""
        self._closed = True
        if self._opening is not None and self._opening.active():
            self._opening.cancel()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        if self._transport is not None:
            self._transport.loseConnection()

    # ---- frames ---------------------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        for frame in self._scanner.feed(data):
            self._dispatch(frame)
        self._count()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        if self._scanner.pending:
            self._expiry = self._reactor.callLater(self.connection.inter_byte_timeout_s, self._expire)

    def _expire(self) -> None:
        """Silence inside a frame: the scanner drops the partial one (and may find a frame behind a
        false start in it)."""
        for frame in self._scanner.expire():
            self._dispatch(frame)
        self._count()
        if self._scanner.pending:
            self._expiry = self._reactor.callLater(self.connection.inter_byte_timeout_s, self._expire)

    def _count(self) -> None:
        for key, total in self._scanner.counters.items():
            if key in self._counted and total > self._counted[key]:
                self._counters[key].inc(total - self._counted[key])
                self._counted[key] = total

    def _dispatch(self, frame: Frame) -> None:
        if self._awaiting is not None and self._awaiting[0](frame):
            matches, future = self._awaiting
            self._awaiting = None
            if not future.done():
                future.set_result(frame)
        elif self.on_frame is not None:
            self.on_frame(frame)
        elif self._reactor.seconds() < self._quiet_until:
            self._late.inc()
        else:
            self._unexpected.inc()

    def _fail_waiting(self, error: Exception) -> None:
        if self._awaiting is not None and not self._awaiting[1].done():
            self._awaiting[1].set_exception(error)
        self._awaiting = None

    async def transact(self, request: bytes, matches: Callable[[Frame], bool], timeout_s: float) -> Frame:
        """Send ``request`` (a whole frame) and return the first frame ``matches`` accepts; the
        line stays ours until then. DeviceTimeout after ``timeout_s``, DeviceError when closed.

        After a timeout the line stays quiet for another ``timeout_s`` before the next request:
        a slow device's late reply must not be taken for the reply to the next request (two
        messages of a device may look alike); frames in that quiet are dropped as late."""
        async with self._lock:
            quiet = self._quiet_until - self._reactor.seconds()
            if quiet > 0:
                await asyncio.sleep(quiet)
            if self._transport is None:
                raise DeviceError(self.name, f"not open ({self._why_closed})")
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            self._awaiting = (matches, future)
            self._transport.write(request)
            try:
                return await asyncio.wait_for(future, timeout_s)
            except asyncio.TimeoutError:
                self._quiet_until = self._reactor.seconds() + timeout_s
                raise DeviceTimeout(self.name, f"no reply within {timeout_s:g} s") from None
            finally:
                self._awaiting = None

    @property
    def is_open(self) -> bool:
        """Whether the port is open (or the server connected) now."""
        return self._transport is not None

    def stats(self) -> dict[str, int]:
        """The scanner's counters."""
        return dict(self._scanner.counters)
