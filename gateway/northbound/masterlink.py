"""One master's connection to an outstation group, on hat-drivers' APCI layer.

hat's ``apci.Connection`` does the link rules of IEC 60870-5-104 section 5 (STARTDT/STOPDT/TESTFR,
N(S)/N(R), k and w windows, t1/t2/t3) and, unlike c104, tells when the master acknowledged an
I-frame: ``send(data, wait_ack=True)`` returns only after the master's N(R) covered it. That is
what lets the event buffer delete an event only once the master has it (DESIGN convention 10).

Every ASDU goes out through ``send``, which hands it to hat at once and in call order (hat's send
queue takes an entry synchronously while it is not full) and returns a future that resolves when
the master acknowledged that ASDU, or fails when the connection was stopped or broke first.
"""

import asyncio
import itertools
import logging
from typing import Any, Awaitable, Callable

from hat.drivers.iec60870 import apci
from hat.drivers.iec60870.encodings import iec104 as enc

log = logging.getLogger(__name__)

SEND_QUEUE = 4096  # ASDUs hat may hold before send() would wait; the event pump keeps far fewer in flight
_ids = itertools.count(1)


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
        remote = connection.info.remote_addr
        self.peer = f"{remote.host}:{remote.port}"
        self.host = remote.host

    @property
    def started(self) -> bool:
        """STARTDT received and no STOPDT since: I-frames may go out."""
        return self._conn.is_enabled and self._conn.is_open

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

    async def close(self) -> None:
        """Close the connection; unacknowledged sends fail with ``LinkClosed``."""
        await self._conn.async_close()
