"""A PublishResponse's data changes read straight off the bytes, for the common case only.

Why by hand: asyncua decodes every notification generically (a dataclass per DataValue, Variant
and MonitoredItemNotification, two datetimes per value), which costs 0.088 CPU s per 10,000
values on this machine, as much as the whole Modbus path from poll to spool (0.099). The
gateway needs per value only the variant type, the value, the StatusCode and a POSIX time, so
``data_changes`` reads those with precompiled ``struct`` calls, following OPC UA Part 6 (5.2.2
built-in types) and Part 4 (5.13.2 Publish).

Only the common case is read: a message whose notifications are all DataChangeNotifications
carrying scalars of the types a profile names (Boolean ... Double, String), with empty
diagnostics and no string table. Anything else (a status change, an event, an array, a
DiagnosticInfo, a byte out of place) returns None and asyncua's own decoder takes the message,
so the rare shapes keep the library's full coverage and nothing a server sends raises here.
"""

import struct
from typing import Any

PUBLISH_RESPONSE_ID = b"\x01\x00\x3d\x03"  # FourByte NodeId ns=0;i=829 (PublishResponse_Encoding_DefaultBinary)
DATA_CHANGE_ID = b"\x01\x00\x2b\x03"  # ns=0;i=811 (DataChangeNotification_Encoding_DefaultBinary)
EMPTY_HEADER_TAIL = b"\x00\x00\x00"  # AdditionalHeader: a null TwoByte NodeId, no body
TICKS_PER_S, EPOCH_TICKS = 10_000_000, 116_444_736_000_000_000  # 100 ns since 1601; 1970 in them
MAX_TICKS = 2_650_467_743_990_000_000  # DateTime's end (9999-12-31 23:59): no time, as 0 is
ARRAY, NULL = -1, 0  # Reading's type for an array (never taken by a point), and for no value

# A value as the driver takes it: (variant type id, or ARRAY; value; StatusCode; POSIX seconds
# of the source time, else the server time, else None)
Reading = tuple[int, Any, int, float | None]

_U32, _I32, _I64, _U8, _U16 = (struct.Struct(f) for f in ("<I", "<i", "<q", "<B", "<H"))
_SCALARS = {1: struct.Struct("<?"), 2: struct.Struct("<b"), 3: _U8, 4: struct.Struct("<h"), 5: _U16,
            6: _I32, 7: _U32, 8: _I64, 9: struct.Struct("<Q"), 10: struct.Struct("<f"), 11: struct.Struct("<d")}
_STRING = 12
_KNOWN_MASK = 0x3F  # Value, StatusCode, SourceTimestamp, ServerTimestamp, and their picoseconds


class NotRead(Exception):
    """A shape this reader leaves to asyncua."""


def posix_seconds(ticks: int) -> float | None:
    """A DateTime as POSIX seconds; DateTime's null and its end are no time."""
    if ticks <= 0 or ticks >= MAX_TICKS:
        return None
    return (ticks - EPOCH_TICKS) / TICKS_PER_S


class Published:
    """A PublishResponse's parameters as asyncua's publish loop reads them, with the data changes
    as ``(client handle, Reading)`` pairs."""

    def __init__(self, subscription_id: int, sequence: int, changes: list[tuple[int, Reading]],
                 notifications: int) -> None:
        self.subscription_id = subscription_id
        self.sequence = sequence
        self.changes = changes
        self.notifications = notifications  # NotificationData entries: none is a keep-alive


def data_changes(body: bytes) -> Published | None:
    """The data changes of a PublishResponse body (from its type NodeId on), or None when it is
    not the common case (module docstring)."""
    try:
        return _read(body)
    except (NotRead, struct.error, IndexError, UnicodeDecodeError, ValueError):
        return None


def _read(body: bytes) -> Published:
    if body[:4] != PUBLISH_RESPONSE_ID:
        raise NotRead("not a PublishResponse")
    at = 4 + 8 + 4  # after Timestamp and RequestHandle
    if _U32.unpack_from(body, at)[0] != 0 or body[at + 4] != 0:
        raise NotRead("a ServiceResult or diagnostics")
    at += 4 + 1
    if _I32.unpack_from(body, at)[0] > 0 or body[at + 4:at + 7] != EMPTY_HEADER_TAIL:
        raise NotRead("a string table or an additional header")
    at += 4 + 3
    subscription_id, available = _U32.unpack_from(body, at)[0], _I32.unpack_from(body, at + 4)[0]
    at += 8 + 4 * max(available, 0) + 1  # the sequence numbers available, MoreNotifications
    sequence, count = _U32.unpack_from(body, at)[0], _I32.unpack_from(body, at + 12)[0]  # PublishTime between
    at += 16
    changes: list[tuple[int, Reading]] = []
    for _ in range(max(count, 0)):
        at = _data_change(body, at, changes)
    at = _empty_tail(body, at)
    if at != len(body):
        raise NotRead("bytes after the message")
    return Published(subscription_id, sequence, changes, max(count, 0))


def _data_change(body: bytes, at: int, changes: list[tuple[int, Reading]]) -> int:
    """One ExtensionObject of NotificationData, a DataChangeNotification; the offset after it."""
    if body[at:at + 4] != DATA_CHANGE_ID or body[at + 4] != 1:
        raise NotRead("a notification other than a data change")
    end = at + 9 + _I32.unpack_from(body, at + 5)[0]
    count = _I32.unpack_from(body, at + 9)[0]
    at += 13
    for _ in range(max(count, 0)):
        handle = _U32.unpack_from(body, at)[0]
        at, reading = _data_value(body, at + 4)
        changes.append((handle, reading))
    if _I32.unpack_from(body, at)[0] > 0:
        raise NotRead("diagnostic infos")
    at += 4
    if at != end:
        raise NotRead("a data change of another length than it says")
    return at


def _data_value(body: bytes, at: int) -> tuple[int, Reading]:
    """A DataValue (Part 6, 5.2.2.17); the offset after it and its Reading."""
    mask = body[at]
    if mask & ~_KNOWN_MASK:
        raise NotRead("reserved DataValue bits")
    at += 1
    kind, value = NULL, None
    if mask & 0x01:
        kind = body[at]
        at += 1
        if kind & 0xC0:
            raise NotRead("an array")
        at, value = _scalar(body, at, kind)
    status = 0
    if mask & 0x02:
        status = _U32.unpack_from(body, at)[0]
        at += 4
    source = server = None
    if mask & 0x04:
        source = posix_seconds(_I64.unpack_from(body, at)[0])
        at += 8
    if mask & 0x10:
        at += 2
    if mask & 0x08:
        server = posix_seconds(_I64.unpack_from(body, at)[0])
        at += 8
    if mask & 0x20:
        at += 2
    return at, (kind, value, status, source if source is not None else server)


def _scalar(body: bytes, at: int, kind: int) -> tuple[int, Any]:
    if kind == NULL:
        return at, None
    if kind == _STRING:
        length = _I32.unpack_from(body, at)[0]
        if length < 0:
            return at + 4, None
        if at + 4 + length > len(body):
            raise NotRead("a string past the end")
        return at + 4 + length, body[at + 4:at + 4 + length].decode("utf-8")
    shape = _SCALARS.get(kind)
    if shape is None:
        raise NotRead(f"variant type {kind}")
    return at + shape.size, shape.unpack_from(body, at)[0]


def _empty_tail(body: bytes, at: int) -> int:
    """The Results (StatusCodes of the acknowledgements) and an empty DiagnosticInfos."""
    results = _I32.unpack_from(body, at)[0]
    at += 4 + 4 * max(results, 0)
    if _I32.unpack_from(body, at)[0] > 0:
        raise NotRead("diagnostic infos")
    return at + 4

