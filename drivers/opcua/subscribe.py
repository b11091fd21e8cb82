"""The subscription of one device: monitored items built by hand (asyncua's helpers take either a
sampling interval or a filter, never both), and every notification handed to the driver.

Each monitored item reports on status and value (``DataChangeTrigger.StatusValue``, so a change
of StatusCode alone arrives), with the point's deadband (absolute, or percent of the server's
EURange), sampling interval and queue size (oldest discarded).

Notifications take the shortest way: ``CheckedSubscription.publish_callback`` hands each value
to ``deliver`` as a ``Reading`` from inside asyncua's publish loop (its handler API starts an
asyncio task per notification, its iterator API a queue entry and an event object), and the
session's ``publish`` is replaced (``fast_publish``) so the common message is read by
``publishcodec`` rather than asyncua's generic decoder, which cost as much as the whole Modbus
path. Both lean on asyncua 2.1's ``UaSession._send_request`` and its publish loop calling
``session.publish``: the one seam it has; any message ``publishcodec`` does not read is decoded
by asyncua as before. The driver publishes one batch per reactor turn (``gateway.batching``).

A notification message asyncua cannot decode is dropped by asyncua's publish loop without a
word, and never acknowledged: the points it carried would stay good with their old values.
``CheckedSubscription`` follows the message sequence numbers (Part 4, 5.13.1: each message with
data takes the next number, a keep-alive announces the next one) and asks for a missing message
again (Republish, which the server keeps until acknowledged); what the server no longer has
goes to ``on_gap``, and the driver reads the subscribed points afresh.
"""

import logging
from typing import Any, Awaitable, Callable

from asyncua import ua
from asyncua.client.ua_session import UaSession
from asyncua.common.subscription import OverflowPolicy, Subscription
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaStructParsingError

from drivers.opcua.codec import reading_of
from drivers.opcua.profile import OpcUaProfile
from drivers.opcua.publishcodec import Published, Reading, data_changes
from drivers.opcua.session import Session

log = logging.getLogger(__name__)

Deliver = Callable[[str, Reading], None]
Lost = Callable[[str], None]
OnGap = Callable[[list[int], int], Awaitable[None]]
REPUBLISH_AT_MOST = 16  # messages asked for again one by one; a longer gap is read afresh at once


def item_request(handle: int, node_id: ua.NodeId, profile: OpcUaProfile, point_id: str,
                 publishing_ms: int) -> ua.MonitoredItemCreateRequest:
    """The create request of one point's monitored item (pure: unit-tested without a server)."""
    point = profile.point(point_id)
    settings = profile.subscription_of(point)  # type: ignore[arg-type]
    flt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue)
    if settings.deadband is not None:
        percent = settings.deadband.percent is not None
        flt.DeadbandType = ua.DeadbandType.Percent if percent else ua.DeadbandType.Absolute
        # an absolute deadband is in the node's raw units: the profile gives engineering units
        flt.DeadbandValue = settings.deadband.percent if percent else settings.deadband.absolute / abs(point.scale or 1)
    sampling = settings.sampling_ms if settings.sampling_ms is not None else publishing_ms
    parameters = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=float(sampling), Filter=flt,
                                         QueueSize=settings.queue_size or 1, DiscardOldest=True)
    return ua.MonitoredItemCreateRequest(ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value),
                                         MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=parameters)


class CheckedSubscription(Subscription):
    """asyncua's subscription, handing values straight to the driver and asking for lost messages
    again (module docstring)."""

    def __init__(self, session: Any, params: ua.CreateSubscriptionParameters, handles: dict[int, str],
                 deliver: Deliver, lost: Lost, on_gap: OnGap) -> None:
        super().__init__(session, params, None, queue_maxsize=1, overflow=OverflowPolicy.WARN)
        self.handles = handles
        self._deliver_to, self._lost, self._on_gap = deliver, lost, on_gap
        self._expected: int | None = None  # the sequence number the next message with data takes

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        message = publish_result.NotificationMessage
        number = int(message.SequenceNumber)
        expected, self._expected = self._expected, number + 1 if message.NotificationData else number
        if expected is not None and number > expected:
            await self._refill(list(range(expected, number)))
        self._hand_on(message.NotificationData or [])

    def _hand_on(self, notifications: list[Any]) -> None:
        deliver, handles = self._deliver_to, self.handles
        for notification in notifications:
            if isinstance(notification, Published):
                for handle, reading in notification.changes:
                    if handle in handles:
                        deliver(handles[handle], reading)
            elif isinstance(notification, ua.DataChangeNotification):
                for item in notification.MonitoredItems:
                    if item.ClientHandle in handles:
                        deliver(handles[item.ClientHandle], reading_of(item.Value))
            elif isinstance(notification, ua.StatusChangeNotification):
                self._lost(f"subscription status {notification.Status}")

    async def _refill(self, missing: list[int]) -> None:
        republished = 0
        for number in missing[:REPUBLISH_AT_MOST]:
            try:
                message = await self.server.republish(self.subscription_id, number)
            except Exception as exc:  # not had back, or not decodable again: the message in hand goes on
                log.debug("republish %s: %s", number, exc)
                break
            self._hand_on(message.NotificationData or [])
            republished += 1
        await self._on_gap(missing, republished)


def fast_publish(session: UaSession) -> None:
    """Replace the session's ``publish`` with one that reads the common message with
    ``publishcodec`` and leaves the others to asyncua (module docstring)."""
    async def publish(acks: list[ua.SubscriptionAcknowledgement]) -> Any:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks or []
        data = await session._send_request(request, timeout=0)
        published = data_changes(bytes(data))
        if published is None:
            try:
                return struct_from_binary(ua.PublishResponse, data)
            except Exception as exc:  # as asyncua's own publish: the loop skips the message
                raise UaStructParsingError from exc
        message = ua.NotificationMessage(SequenceNumber=published.sequence,
                                          NotificationData=[published] if published.notifications else [])
        return ua.PublishResponse(Parameters=ua.PublishResult(SubscriptionId=published.subscription_id,
                                                              NotificationMessage=message))
    session.publish = publish  # type: ignore[method-assign]


class Subscribed:
    """A live subscription and the points the server refused."""

    def __init__(self, subscription: Subscription | None, refused: dict[str, int]) -> None:
        self.subscription = subscription
        self.refused = refused


async def subscribe(session: Session, profile: OpcUaProfile, publishing_ms: int, deliver: Deliver, lost: Lost,
                    on_gap: OnGap) -> Subscribed:
    """Create the subscription and one monitored item per ``mode: subscribe`` point; each value goes
    to ``deliver``, a status change of the subscription itself (the server timed it out) to
    ``lost``, lost messages not all republished to ``on_gap`` (module docstring)."""
    points = [p.id for p in profile.points if p.mode == "subscribe"]
    if not points:
        return Subscribed(None, {})
    handles = {n + 1: point for n, point in enumerate(points)}
    params = ua.CreateSubscriptionParameters(RequestedPublishingInterval=float(publishing_ms),
                                             RequestedLifetimeCount=300, RequestedMaxKeepAliveCount=10,
                                             MaxNotificationsPerPublish=10_000, PublishingEnabled=True, Priority=0)
    uasession = session.client.uaclient.session
    fast_publish(uasession)
    subscription = CheckedSubscription(uasession, params, handles, deliver, lost, on_gap)
    await subscription.init()
    requests = [item_request(h, session.watched[p].node.nodeid, profile, p, publishing_ms) for h, p in handles.items()]
    results = await subscription.create_monitored_items(requests)
    refused = {handles[h]: r.value for h, r in zip(handles, results) if isinstance(r, ua.StatusCode)}
    return Subscribed(subscription, refused)
