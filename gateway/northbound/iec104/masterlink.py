"""One master's connection to an outstation group, on hat-drivers' APCI layer.

hat's ``apci.Connection`` does the link rules of IEC 60870-5-104 section 5 (STARTDT/STOPDT/TESTFR,
N(S)/N(R), k and w windows, t1/t2/t3) and, unlike c104, tells when the master acknowledged an
I-frame: ``send(data, wait_ack=True)`` returns only after the master's N(R) covered it. That is
what lets the event buffer delete an event only once the master has it (DESIGN convention 10).

Every ASDU goes out through ``send``, which hands it to hat at once and in call order (hat's send
queue takes an entry synchronously while it is not full) and returns a future that resolves when
the master acknowledged that ASDU, or fails when the connection was stopped or broke first.

Whether data transfer was started is judged per ASDU as it was when hat *received* it
(``received_started``), not when gridgate reads it. hat's read loop handles every APDU of a TCP
segment without yielding: an I-frame's ASDU goes into its receive queue, a STARTDT act right
behind it in the same segment turns ``is_enabled`` on and writes STARTDT con, and only then does
the outstation's reader get the ASDU. Judged by ``started`` alone, a command sent *before*
STARTDT in the same write was executed (tests/integration/test_outstation_wire.py pins both
orders). hat 0.10.10 calls the enabled callbacks from that read loop, after queueing every ASDU
received before the U-frame and before queueing any after it, so the queue's length at that
moment is the boundary.

hat closes a connection on an APCI violation (a bad start octet or length, an unknown U-frame,
a wrong N(S), an N(R) for nothing sent), on t1 and on a TESTFR left unanswered, and logs each
such close as a WARNING with a traceback on ``hat.drivers.iec60870.apci.connection``: one
traceback per connection of a master sending garbage. ``HatCloseCauses`` takes these records out
of the log and keeps their cause for ``MasterLink.close_cause``; the outstation logs the close
in one line, rate-limited per master host. With that logger at DEBUG, hat's records stay too.
"""

import asyncio
import collections
import itertools
import logging
from typing import Any, Awaitable, Callable

from hat.drivers.iec60870 import apci
from hat.drivers.iec60870.encodings import iec104 as enc

log = logging.getLogger(__name__)

SEND_QUEUE = 4096  # ASDUs hat may hold before send() would wait; the event pump keeps far fewer in flight
HAT_CONNECTION_LOGGER = "hat.drivers.iec60870.apci.connection"
_ids = itertools.count(1)
Address = tuple[str, int, str, int]  # local host, local port, remote host, remote port


class HatCloseCauses(logging.Filter):
    """A filter for hat's connection logger: its WARNING and ERROR records about one connection are
    kept as that connection's close cause (the first one) instead of being logged."""

    def __init__(self, keep: int = 1024) -> None:
        super().__init__()
        self._causes: collections.OrderedDict[Address, str] = collections.OrderedDict()
        self._keep = keep  # causes of connections no MasterLink asks about (none expected) do not pile up

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "meta", None)
        if (record.levelno < logging.WARNING or not isinstance(meta, dict)
                or meta.get("type") != "Iec60870ApciConnection"):
            return True
        try:
            local, remote = meta["local_addr"], meta["remote_addr"]
            address = (local["host"], local["port"], remote["host"], remote["port"])
        except (KeyError, TypeError):
            return True
        self._causes.setdefault(address, _hat_cause(record))
        while len(self._causes) > self._keep:
            self._causes.popitem(last=False)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def pop(self, address: Address) -> str | None:
        """The cause hat logged for the connection at ``address``, once."""
        return self._causes.pop(address, None)


def _hat_cause(record: logging.LogRecord) -> str:
    """One line from hat's record: ``read loop error: invalid start identifier`` -> ``protocol error: invalid
    start identifier``; t1 expiries said as such; anything else as hat wrote it (without the traceback)."""
    what = str(record.msg).split(":", 1)[0]
    exc = record.exc_info[1] if record.exc_info else None
    if what == "read loop error" and exc is not None:
        return f"protocol error: {exc or type(exc).__name__}"
    if what == "test loop error" and isinstance(exc, TimeoutError):
        return "t1 expired: TESTFR act not confirmed"
    if what.startswith("response timeout"):
        return "t1 expired: I-frames sent were not acknowledged"
    return record.getMessage()


CLOSE_CAUSES = HatCloseCauses()
logging.getLogger(HAT_CONNECTION_LOGGER).addFilter(CLOSE_CAUSES)


class LinkClosed(ConnectionError):
    """The connection was stopped (STOPDT) or closed before the master acknowledged an ASDU."""


class MasterLink:
    """A connected master: its address, whether data transfer is started, ordered acked sends."""

    def __init__(self, connection: apci.Connection, encoder: enc.Encoder, group: str) -> None:
        self.id = next(_ids)
        self.group = group
        self._conn = connection
        self._encoder = encoder
        self._pending: set[asyncio.Future] = set()
        local, remote = connection.info.local_addr, connection.info.remote_addr
        self.peer = f"{remote.host}:{remote.port}"
        self.host = remote.host
        self._address: Address = (local.host, local.port, remote.host, remote.port)
        self._received_queue = connection._receive_queue  # hat 0.10.10's, read for its length only
        self._taken = 0  # ASDUs handed to receive_each's handler so far
        self._boundaries: collections.deque[tuple[int, bool]] = collections.deque()  # (ASDUs before, started)
        self._received_started = connection.is_enabled
        connection.register_enabled_cb(self._on_enabled)

    @property
    def started(self) -> bool:
        """STARTDT received and no STOPDT since: I-frames may go out."""
        return self._conn.is_enabled and self._conn.is_open

    @property
    def received_started(self) -> bool:
        """Data transfer was started when hat received the ASDU being handled (a STARTDT before it in
        the byte stream, no STOPDT between): what ``started`` said then, not now."""
        return self._received_started

    def _on_enabled(self, started: bool) -> None:
        """Called by hat's read loop on STARTDT / STOPDT: the ASDUs received so far (handed out or still
        queued) came before it."""
        self._boundaries.append((self._taken + self._received_queue.qsize(), started))

    @property
    def open(self) -> bool:
        """The TCP connection is up."""
        return self._conn.is_open

    def on_started(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(started)`` on every STARTDT / STOPDT."""
        self._conn.register_enabled_cb(callback)

    def send(self, asdu: enc.ASDU | bytes) -> "asyncio.Future[None]":
        """Queue ``asdu`` (encoded, or raw bytes to mirror) behind everything sent before it."""
        data = asdu if isinstance(asdu, (bytes, bytearray)) else bytes(self._encoder.encode_asdu(asdu))
        future = asyncio.ensure_future(self._send(data))
        self._pending.add(future)
        future.add_done_callback(self._settled)
        return future

    def _settled(self, future: "asyncio.Future[None]") -> None:
        """Forget a finished send; its failure is the caller's to read (the event pump does), so it
        is marked retrieved here rather than logged as never retrieved."""
        self._pending.discard(future)
        if not future.cancelled():
            future.exception()

    async def _send(self, data: bytes) -> None:
        try:
            await self._conn.send(data, wait_ack=True)
        except ConnectionError as exc:
            raise LinkClosed(f"{self.peer}: not acknowledged ({type(exc).__name__})") from None

    async def receive_each(self, handle: Callable[["MasterLink", bytes], Awaitable[None] | None]) -> None:
        """Hand every received ASDU to ``handle`` until the connection closes; a handler that
        raises is logged and the next ASDU is read (nothing a master sends may end the loop)."""
        while True:
            try:
                data = bytes(await self._conn.receive())
            except ConnectionError:
                return
            index, self._taken = self._taken, self._taken + 1
            while self._boundaries and self._boundaries[0][0] <= index:
                self._received_started = self._boundaries.popleft()[1]
            try:
                result = handle(self, data)
                if result is not None:
                    await result
            except Exception:  # noqa: BLE001 - logged with the frame, connection kept
                log.exception("104 group %s: master %s: error handling ASDU %s", self.group, self.peer, data.hex())

    def peer_certificate(self) -> bytes | None:
        """The master's TLS certificate (DER), None on plain TCP."""
        ssl_object: Any = self._conn.ssl_object
        return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None

    def close_cause(self) -> str | None:
        """Why hat closed the connection (``protocol error: ...``, ``t1 expired: ...``); None when the master
        or the outstation closed it. Read it once, after ``receive_each`` returned."""
        return CLOSE_CAUSES.pop(self._address)

    async def close(self) -> None:
        """Close the connection; unacknowledged sends fail with ``LinkClosed``."""
        await self._conn.async_close()
