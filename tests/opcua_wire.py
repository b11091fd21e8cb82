"""What an OPC UA server really sent: a decoder of the binary encoding written from the octet layout
of OPC UA Part 6 (5.2 built-in types, 6.7 message chunks), sharing no code with asyncua, and a
loopback proxy that decodes (and on request corrupts) the server's notification messages.

Only what the hostile-peer tests judge is decoded: the MessageChunk header (6.7.2), the symmetric
security header and sequence header of SecurityPolicy None, the PublishResponse (Part 4, 5.13.2)
down to each MonitoredItemNotification's DataValue (5.2.2.17) and Variant (5.2.2.16) for the
scalar and array types 1..13. Anything else raises ``WireError``.
"""

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

PUBLISH_RESPONSE, REPUBLISH_RESPONSE, DATA_CHANGE_NOTIFICATION = 829, 835, 811  # binary encoding ids (NodeIds.csv)
SCALARS = {1: "<?", 2: "<b", 3: "<B", 4: "<h", 5: "<H", 6: "<i", 7: "<I", 8: "<q", 9: "<Q", 10: "<f", 11: "<d",
           13: "<q"}
STRING = 12
BODY = 8 + 4 + 4 + 8  # a MSG chunk's header, channel id, token id, sequence number and request id


class WireError(ValueError):
    """Bytes this decoder does not read."""


@dataclass
class WireValue:
    """One MonitoredItemNotification as it was on the wire."""

    handle: int
    type_id: int | None  # the Variant's built-in type (None: no Value in the DataValue)
    is_array: bool
    value: Any
    status: int  # 0 when the DataValue carries none (Good)
    source_ticks: int | None  # 100 ns since 1601, as sent


@dataclass
class WirePublish:
    """One PublishResponse: its NotificationMessage's sequence number and data-change items."""

    sequence: int
    values: list[WireValue] = field(default_factory=list)


class Reader:
    """Little-endian reads over a chunk, keeping the offset."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data, self.at = data, offset

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise WireError(f"{fmt} at {self.at} runs past the end ({len(self.data)} bytes)")
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value

    def skip(self, size: int) -> None:
        if size < 0 or self.at + size > len(self.data):
            raise WireError(f"{size} bytes at {self.at} run past the end")
        self.at += size

    def string(self) -> str | None:
        length = self.take("<i")
        if length < 0:
            return None
        self.skip(length)
        return self.data[self.at - length:self.at].decode("utf-8", "replace")


def node_id(r: Reader) -> tuple[int, Any]:
    """(namespace, identifier) of a NodeId (5.2.2.9); numeric forms only, as service ids are."""
    encoding = r.take("<B") & 0x3F
    if encoding == 0:
        return 0, r.take("<B")
    if encoding == 1:
        return r.take("<B"), r.take("<H")
    if encoding == 2:
        return r.take("<H"), r.take("<I")
    raise WireError(f"NodeId encoding {encoding} not read here")


def diagnostic_info(r: Reader) -> None:
    """Skip a DiagnosticInfo (5.2.2.12)."""
    mask = r.take("<B")
    for bit in (0x01, 0x02, 0x04, 0x08):
        if mask & bit:
            r.take("<i")
    if mask & 0x10:
        r.string()
    if mask & 0x20:
        r.take("<I")
    if mask & 0x40:
        diagnostic_info(r)


def variant(r: Reader) -> tuple[int, bool, Any]:
    """(type id, is array, value) of a Variant (5.2.2.16)."""
    mask = r.take("<B")
    type_id, is_array = mask & 0x3F, bool(mask & 0x80)
    count = r.take("<i") if is_array else 1
    items = [_scalar(r, type_id) for _ in range(max(count, 0))]
    if mask & 0x40:
        r.skip(4 * r.take("<i"))
    return type_id, is_array, items if is_array else items[0]


def _scalar(r: Reader, type_id: int) -> Any:
    if type_id == 0:
        return None
    if type_id == STRING:
        return r.string()
    if type_id not in SCALARS:
        raise WireError(f"Variant type {type_id} not read here")
    return r.take(SCALARS[type_id])


def data_value(r: Reader, handle: int) -> WireValue:
    """A DataValue (5.2.2.17): mask, then Value, Status, SourceTimestamp, SourcePicoseconds,
    ServerTimestamp, ServerPicoseconds, each present by its mask bit."""
    mask = r.take("<B")
    type_id, is_array, value = variant(r) if mask & 0x01 else (None, False, None)
    status = r.take("<I") if mask & 0x02 else 0
    source = r.take("<q") if mask & 0x04 else None
    if mask & 0x10:
        r.take("<H")
    if mask & 0x08:
        r.take("<q")
    if mask & 0x20:
        r.take("<H")
    return WireValue(handle, type_id, is_array, value, status, source)


def service(chunk: bytes) -> tuple[int, Any] | None:
    """The encoding id of the service message in a final MSG chunk of SecurityPolicy None."""
    if chunk[:4] != b"MSGF":
        return None
    return node_id(Reader(chunk, BODY))


def publish_response(chunk: bytes) -> WirePublish | None:
    """The PublishResponse in a final MSG chunk of SecurityPolicy None; None for other messages."""
    if service(chunk) != (0, PUBLISH_RESPONSE):
        return None
    r = Reader(chunk, BODY)
    node_id(r)
    r.skip(8 + 4 + 4)  # ResponseHeader: Timestamp, RequestHandle, ServiceResult
    diagnostic_info(r)
    for _ in range(max(r.take("<i"), 0)):  # StringTable
        r.string()
    node_id(r)  # AdditionalHeader: an ExtensionObject, empty in practice
    if r.take("<B") & 0x01:
        r.skip(r.take("<i"))
    r.take("<I")  # SubscriptionId
    r.skip(4 * max(r.take("<i"), 0))  # AvailableSequenceNumbers
    r.take("<B")  # MoreNotifications
    published = WirePublish(r.take("<I"))
    r.take("<q")  # PublishTime
    for _ in range(max(r.take("<i"), 0)):
        kind = node_id(r)
        r.take("<B")
        end = r.take("<i") + r.at
        if kind == (0, DATA_CHANGE_NOTIFICATION):
            for _ in range(max(r.take("<i"), 0)):
                published.values.append(data_value(r, r.take("<I")))
        r.at = end
    return published


Mutate = Callable[[bytes], bytes]


class PublishTap:
    """A TCP proxy on 127.0.0.1 in front of an OPC UA server (SecurityPolicy None) that decodes every
    PublishResponse the server sends and may replace any chunk (``mutate``) before the client sees it."""

    def __init__(self, server_port: int, mutate: Mutate | None = None) -> None:
        self.server_port = server_port
        self.mutate = mutate
        self.published: list[WirePublish] = []
        self.port = 0
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def values_of(self, handle: int) -> list[WireValue]:
        return [v for p in self.published for v in p.values if v.handle == handle]

    async def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.server_port)
        for task in (self._pipe(client_in, server_out), self._chunks(server_in, client_out)):
            running = asyncio.ensure_future(task)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
        finally:
            sink.close()

    async def _chunks(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await source.readexactly(8)
                chunk = header + await source.readexactly(struct.unpack_from("<I", header, 4)[0] - 8)
                published = publish_response(chunk)
                if published is not None:
                    self.published.append(published)
                sink.write(self.mutate(chunk) if self.mutate is not None else chunk)
        except asyncio.IncompleteReadError:
            pass
        finally:
            sink.close()
