"""Lost notification messages: ``CheckedSubscription`` follows the sequence numbers of a
subscription's messages (data messages take the next number, keep-alives announce it), asks
the server for a missing one again, and tells the driver what could not be had back.

The server is a fake here (the integration test ``test_opcua_hostile`` corrupts a real one's
message on the wire): it answers Republish from a dict, BadMessageNotAvailable otherwise.
"""

from asyncua import ua
from asyncua.ua.uaerrors import BadMessageNotAvailable

from drivers.opcua.subscribe import CheckedSubscription
from tests.aio import on_asyncio


class Server:
    """Keeps the messages it may republish."""

    def __init__(self, kept: dict[int, ua.NotificationMessage]) -> None:
        self.kept = kept
        self.asked: list[int] = []

    async def republish(self, subscription_id: int, number: int) -> ua.NotificationMessage:
        self.asked.append(number)
        if number not in self.kept:
            raise BadMessageNotAvailable()
        return self.kept.pop(number)


def message(number: int, handle: int | None = 1) -> ua.NotificationMessage:
    """A data message for ``handle`` with value ``number``; a keep-alive when handle is None."""
    if handle is None:
        return ua.NotificationMessage(SequenceNumber=number, NotificationData=[])
    item = ua.MonitoredItemNotification(ClientHandle=handle, Value=ua.DataValue(ua.Variant(float(number))))
    return ua.NotificationMessage(SequenceNumber=number,
                                  NotificationData=[ua.DataChangeNotification(MonitoredItems=[item])])


async def received(kept: dict[int, ua.NotificationMessage], numbers: list[tuple[int, int | None]]) \
        -> tuple[Server, list[tuple[list[int], int]], list[float]]:
    """Feed messages to a subscription; what the server was asked, the gaps reported, the values handed on."""
    server, gaps, values = Server(kept), [], []

    async def on_gap(missing: list[int], republished: int) -> None:
        gaps.append((missing, republished))
    subscription = CheckedSubscription(server, ua.CreateSubscriptionParameters(), {1: "p"},
                                       lambda point, reading: values.append(reading[1]), lambda why: None, on_gap)
    subscription.subscription_id = 9
    for number, handle in numbers:
        await subscription.publish_callback(ua.PublishResult(9, NotificationMessage=message(number, handle)))
    return server, gaps, values


@on_asyncio
async def test_consecutive_messages_and_keep_alives_are_no_gap() -> None:
    """1, 2, keep-alive announcing 3, 3: nothing asked, nothing reported."""
    server, gaps, values = await received({}, [(1, 1), (2, 1), (3, None), (3, 1)])
    assert (server.asked, gaps, values) == ([], [], [1.0, 2.0, 3.0])


@on_asyncio
async def test_a_missing_message_is_republished_before_the_next_one() -> None:
    """1, 3: message 2 is asked for and handed on before 3."""
    server, gaps, values = await received({2: message(2)}, [(1, 1), (3, 1)])
    assert (server.asked, gaps, values) == ([2], [([2], 1)], [1.0, 2.0, 3.0])


@on_asyncio
async def test_a_keep_alive_shows_a_lost_last_message() -> None:
    """1, keep-alive announcing 3: message 2 was lost though no data followed it."""
    server, gaps, values = await received({2: message(2)}, [(1, 1), (3, None)])
    assert (server.asked, gaps, values) == ([2], [([2], 1)], [1.0, 2.0])


@on_asyncio
async def test_what_the_server_no_longer_has_is_reported() -> None:
    """1, 4 with only 3 kept: asking stops at 2, the driver learns 2..3 were not all had back."""
    server, gaps, values = await received({3: message(3)}, [(1, 1), (4, 1)])
    assert (server.asked, gaps, values) == ([2], [([2, 3], 0)], [1.0, 4.0])
