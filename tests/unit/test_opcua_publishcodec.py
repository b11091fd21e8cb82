"""``publishcodec`` reads the common PublishResponse as asyncua reads it, leaves every other shape
to asyncua (None), and never raises, whatever the bytes."""

import datetime
import random

import pytest
from asyncua import ua
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from drivers.opcua.codec import reading_of
from drivers.opcua.publishcodec import ARRAY, data_changes

V = ua.VariantType
AT = datetime.datetime(2026, 6, 1, 12, 0, 0, 250000, tzinfo=datetime.timezone.utc)
NULL_TIME = datetime.datetime(1601, 1, 1, tzinfo=datetime.timezone.utc)
VALUES = [ua.Variant(True, V.Boolean), ua.Variant(-5, V.SByte), ua.Variant(200, V.Byte), ua.Variant(-300, V.Int16),
          ua.Variant(60000, V.UInt16), ua.Variant(-70000, V.Int32), ua.Variant(4_000_000_000, V.UInt32),
          ua.Variant(-2**40, V.Int64), ua.Variant(2**63, V.UInt64), ua.Variant(1.5, V.Float),
          ua.Variant(-2.25, V.Double), ua.Variant("Grüße", V.String), ua.Variant(None, V.String), ua.Variant()]


def response(notifications: list, available: list[int] | None = None) -> bytes:
    result = ua.PublishResult(SubscriptionId=7, AvailableSequenceNumbers=available or [], Results=[ua.StatusCode()],
                              NotificationMessage=ua.NotificationMessage(SequenceNumber=42, PublishTime=AT,
                                                                         NotificationData=notifications))
    return struct_to_binary(ua.PublishResponse(Parameters=result))


def items(values: list[ua.DataValue]) -> ua.DataChangeNotification:
    return ua.DataChangeNotification(MonitoredItems=[ua.MonitoredItemNotification(ClientHandle=n + 1, Value=v)
                                                     for n, v in enumerate(values)])


def test_the_common_message_reads_as_asyncua_reads_it() -> None:
    values = [ua.DataValue(v, StatusCode=ua.StatusCode(status), SourceTimestamp=source, ServerTimestamp=AT)
              for v in VALUES for status, source in ((0, AT), (0x40900000, None), (0x808D0000, NULL_TIME))]
    data = response([items(values[:20]), items(values[20:])], available=[40, 41])
    published = data_changes(data)
    assert published is not None and (published.subscription_id, published.sequence) == (7, 42)
    theirs = struct_from_binary(ua.PublishResponse, ua.utils.Buffer(data)).Parameters.NotificationMessage
    expected = [(i.ClientHandle, reading_of(i.Value)) for n in theirs.NotificationData for i in n.MonitoredItems]
    assert published.changes == expected and len(expected) == 3 * len(VALUES)
    assert expected[0][1][3] == AT.timestamp() and expected[2][1][3] == AT.timestamp()  # null source: server's


def test_a_keep_alive_has_no_notifications() -> None:
    published = data_changes(response([]))
    assert published is not None and (published.notifications, published.changes) == (0, [])


@pytest.mark.parametrize("notifications", [
    [ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout))],
    [items([ua.DataValue(ua.Variant([1.0, 2.0], V.Double, is_array=True))])],
    [items([ua.DataValue(ua.Variant(AT, V.DateTime))])],
    [items([ua.DataValue(ua.Variant(1.0, V.Double))]), ua.StatusChangeNotification(Status=ua.StatusCode())],
])
def test_other_shapes_are_left_to_asyncua(notifications: list) -> None:
    assert data_changes(response(notifications)) is None


def test_an_array_reaches_the_driver_as_an_array_through_asyncua() -> None:
    value = ua.DataValue(ua.Variant([1.0, 2.0], V.Double, is_array=True))
    assert reading_of(value)[0] == ARRAY


def test_no_bytes_make_it_raise() -> None:
    data = response([items([ua.DataValue(v, SourceTimestamp=AT) for v in VALUES])])
    rng = random.Random(7)
    for cut in range(len(data)):
        assert data_changes(data[:cut]) is None
    for _ in range(3000):
        spoiled = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            spoiled[rng.randrange(len(spoiled))] = rng.randrange(256)
        data_changes(bytes(spoiled))  # a value or None, never an exception
