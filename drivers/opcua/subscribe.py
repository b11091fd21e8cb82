"""The subscription of one device: monitored items built by hand (asyncua's helpers take either a
sampling interval or a filter, never both), and the loop that takes every notification.

Each monitored item reports on status and value (``DataChangeTrigger.StatusValue``, so a change
of StatusCode alone arrives), with the point's deadband (absolute, or percent of the server's
EURange), sampling interval and queue size (oldest discarded). Notifications are read with
asyncua's iterator API: its handler API starts an asyncio task per notification, which cost
more CPU than everything the gateway does with the value. Each DataValue goes to ``deliver``;
the driver publishes one batch per reactor turn (``gateway.batching``).

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
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent, Subscription

log = logging.getLogger(__name__)

from drivers.opcua.profile import OpcUaProfile
from drivers.opcua.session import Session

Deliver = Callable[[str, ua.DataValue], None]
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
    """asyncua's subscription, with lost notification messages asked for again (module docstring)."""

    def __init__(self, *args: Any, on_gap: OnGap, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_gap = on_gap
        self._expected: int | None = None  # the sequence number the next message with data takes

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        message = publish_result.NotificationMessage
        number = int(message.SequenceNumber)
        expected, self._expected = self._expected, number + 1 if message.NotificationData else number
        if expected is not None and number > expected:
            await self._refill(list(range(expected, number)))
        await super().publish_callback(publish_result)

    async def _refill(self, missing: list[int]) -> None:
        republished = 0
        for number in missing[:REPUBLISH_AT_MOST]:
            try:
                message = await self.server.republish(self.subscription_id, number)
            except Exception as exc:  # not had back, or not decodable again: the message in hand goes on
                log.debug("republish %s: %s", number, exc)
                break
            await super().publish_callback(ua.PublishResult(self.subscription_id, NotificationMessage=message))
            republished += 1
        await self._on_gap(missing, republished)


class Subscribed:
    """A live subscription: the points the server refused, and ``run`` handing every value on."""

    def __init__(self, subscription: Subscription | None, handles: dict[int, str], refused: dict[str, int]) -> None:
        self.subscription = subscription
        self.handles = handles
        self.refused = refused

    async def run(self, deliver: Deliver, lost: Callable[[str], None]) -> None:
        """Hand each notification to ``deliver`` until the subscription ends; a status change of the
        subscription itself (the server timed it out) is reported to ``lost``."""
        if self.subscription is None:
            return
        async for event in self.subscription:
            if isinstance(event, DataChangeEvent):
                point = self.handles.get(event.data.subscription_data.client_handle)
                if point is not None:
                    deliver(point, event.data.monitored_item.Value)
            elif isinstance(event, StatusChangeEvent):
                lost(f"subscription status {event.notification.Status}")


async def subscribe(session: Session, profile: OpcUaProfile, publishing_ms: int, on_gap: OnGap) -> Subscribed:
    """Create the subscription and one monitored item per ``mode: subscribe`` point; ``on_gap`` is
    told which lost messages could not all be republished (module docstring)."""
    points = [p.id for p in profile.points if p.mode == "subscribe"]
    if not points:
        return Subscribed(None, {}, {})
    handles = {n + 1: point for n, point in enumerate(points)}
    params = ua.CreateSubscriptionParameters(RequestedPublishingInterval=float(publishing_ms),
                                             RequestedLifetimeCount=300, RequestedMaxKeepAliveCount=10,
                                             MaxNotificationsPerPublish=10_000, PublishingEnabled=True, Priority=0)
    # the queue holds what arrived since the loop last ran; WARN logs if a stall ever fills it
    subscription = CheckedSubscription(session.client.uaclient.session, params, None, on_gap=on_gap,
                                       queue_maxsize=max(100_000, 20 * len(points)), overflow=OverflowPolicy.WARN)
    await subscription.init()
    requests = [item_request(h, session.watched[p].node.nodeid, profile, p, publishing_ms) for h, p in handles.items()]
    results = await subscription.create_monitored_items(requests)
    refused = {handles[h]: r.value for h, r in zip(handles, results) if isinstance(r, ua.StatusCode)}
    return Subscribed(subscription, handles, refused)
