"""The subscription of one device: monitored items built by hand (asyncua's helpers take either a
sampling interval or a filter, never both), and the loop that takes every notification.

Each monitored item reports on status and value (``DataChangeTrigger.StatusValue``, so a change
of StatusCode alone arrives), with the point's deadband (absolute, or percent of the server's
EURange), sampling interval and queue size (oldest discarded). Notifications are read with
asyncua's iterator API: its handler API starts an asyncio task per notification, which cost
more CPU than everything the gateway does with the value. Each DataValue goes to ``deliver``;
the driver publishes one batch per reactor turn (``gateway.batching``).
"""

from typing import Callable

from asyncua import ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent, Subscription

from drivers.opcua.profile import OpcUaProfile
from drivers.opcua.session import Session

Deliver = Callable[[str, ua.DataValue], None]


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


async def subscribe(session: Session, profile: OpcUaProfile, publishing_ms: int) -> Subscribed:
    """Create the subscription and one monitored item per ``mode: subscribe`` point."""
    points = [p.id for p in profile.points if p.mode == "subscribe"]
    if not points:
        return Subscribed(None, {}, {})
    handles = {n + 1: point for n, point in enumerate(points)}
    params = ua.CreateSubscriptionParameters(RequestedPublishingInterval=float(publishing_ms),
                                             RequestedLifetimeCount=300, RequestedMaxKeepAliveCount=10,
                                             MaxNotificationsPerPublish=10_000, PublishingEnabled=True, Priority=0)
    # the queue holds what arrived since the loop last ran; WARN logs if a stall ever fills it
    subscription = await session.client.create_subscription(params, None, queue_maxsize=max(100_000, 20 * len(points)),
                                                            overflow=OverflowPolicy.WARN)
    requests = [item_request(h, session.watched[p].node.nodeid, profile, p, publishing_ms) for h, p in handles.items()]
    results = await subscription.create_monitored_items(requests)
    refused = {handles[h]: r.value for h, r in zip(handles, results) if isinstance(r, ua.StatusCode)}
    return Subscribed(subscription, handles, refused)
