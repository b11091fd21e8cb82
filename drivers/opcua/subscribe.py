"""The subscription of one device: monitored items built by hand (asyncua's helpers take either a
sampling interval or a filter, never both), and the handler asyncua calls once per notification.

Each monitored item reports on status and value (``DataChangeTrigger.StatusValue``, so a change
of StatusCode alone arrives), with the point's deadband (absolute, or percent of the server's
EURange), sampling interval and queue size (oldest discarded). The handler only hands each
DataValue to ``deliver``; the driver turns notifications into one published batch per reactor
turn (``gateway.batching``).
"""

from typing import Any, Callable

from asyncua import ua

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


class Handler:
    """asyncua's subscription handler: notification -> (point, DataValue); a status change of the
    subscription itself (the server timed it out) is reported to ``lost``."""

    def __init__(self, points: dict[int, str], deliver: Deliver, lost: Callable[[str], None]) -> None:
        self._points = points
        self._deliver = deliver
        self._lost = lost

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        point = self._points.get(data.subscription_data.client_handle)
        if point is not None:
            self._deliver(point, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        self._lost(f"subscription status {status.Status}")


async def subscribe(session: Session, profile: OpcUaProfile, publishing_ms: int, deliver: Deliver,
                    lost: Callable[[str], None]) -> dict[str, int]:
    """Create the subscription and one monitored item per ``mode: subscribe`` point; the points
    whose item the server refused, with its StatusCode (the rest are live)."""
    points = [p.id for p in profile.points if p.mode == "subscribe"]
    if not points:
        return {}
    handles = {n + 1: point for n, point in enumerate(points)}
    params = ua.CreateSubscriptionParameters(RequestedPublishingInterval=float(publishing_ms),
                                             RequestedLifetimeCount=300, RequestedMaxKeepAliveCount=10,
                                             MaxNotificationsPerPublish=10_000, PublishingEnabled=True, Priority=0)
    subscription = await session.client.create_subscription(params, Handler(handles, deliver, lost))
    requests = [item_request(h, session.watched[p].node.nodeid, profile, p, publishing_ms) for h, p in handles.items()]
    results = await subscription.create_monitored_items(requests)
    return {handles[h]: r.value for h, r in zip(handles, results) if isinstance(r, ua.StatusCode)}
