"""A simulated device's nodes in one asyncua server's address space.

Each device is an Object under Objects (``ns=1;s=<device>``, namespace 1 being the server's own
application URI), and each point a Variable under it with exactly the NodeId its profile names,
in the index the server gave the point's namespace URI. The properties a client may rely on sit
beside it: ``EURange`` (a percent deadband is computed against it) and ``EngineeringUnits``.
Properties and objects get string NodeIds in namespace 1, derived from the device and point
names, so they can never take an identifier a profile names in its own namespace.
"""

import warnings
from datetime import datetime

from asyncua import Node, Server, ua

from drivers.opcua.profile import OpcUaPoint
from drivers.opcua.sim.device import SimulatedDevice, variant_type

OWN_NAMESPACE = 1  # the server's application URI
UNECE_UNITS = "http://www.opcfoundation.org/UA/units/un/cefact"


def point_nodeid(point: OpcUaPoint, namespace_index: int) -> ua.NodeId:
    """The NodeId the profile names for ``point``, in the index its namespace URI got."""
    return ua.NodeId.from_string(f"ns={namespace_index};{point.node}")


def device_nodeid(device: SimulatedDevice) -> ua.NodeId:
    """The device's Object node."""
    return ua.NodeId(device.name, OWN_NAMESPACE)


def eu_range(point: OpcUaPoint) -> tuple[float, float] | None:
    """The range a percent deadband refers to: the simulated bounds, else the writable limits."""
    if point.data_type in ("Boolean", "String"):
        return None
    if point.sim is not None and point.sim.min is not None and point.sim.max is not None:
        return point.sim.min, point.sim.max
    if point.writable is not None:
        return point.writable.min, point.writable.max
    return None


async def add_device(server: Server, device: SimulatedDevice, indices: dict[str, int],
                     when: datetime) -> dict[str, ua.NodeId]:
    """Create the device's Object and the nodes of its points that are not removed; their NodeIds."""
    parent = await server.nodes.objects.add_object(device_nodeid(device),
                                                   ua.QualifiedName(device.name, OWN_NAMESPACE))
    nodeids: dict[str, ua.NodeId] = {}
    for point in device.profile.points:
        nodeid = point_nodeid(point, indices[device.profile.namespace_of(point)])
        nodeids[point.id] = nodeid
        if point.id not in device.removed:
            await add_point(server, parent, device, point.id, nodeid, when)
    return nodeids


async def add_point(server: Server, parent: Node, device: SimulatedDevice, point_id: str,
                    nodeid: ua.NodeId, when: datetime) -> None:
    """Create one point's Variable (value, status, timestamps, access level) and its properties."""
    point = device.points[point_id]
    datatype = ua.NodeId(getattr(ua.ObjectIds, point.data_type))
    node = await parent.add_variable(nodeid, ua.QualifiedName(point.id, nodeid.NamespaceIndex),
                                     device.raw[point.id], variant_type(point), datatype)
    await server.write_attribute_value(nodeid, device.datavalue(point.id, when))
    if point.writable is not None:
        await node.set_writable()  # AccessLevel and UserAccessLevel: CurrentRead | CurrentWrite
    prefix = f"{device.name}.{point.id}"
    bounds = eu_range(point)
    if bounds is not None:
        await node.add_property(ua.NodeId(f"{prefix}.EURange", OWN_NAMESPACE), ua.QualifiedName("EURange", 0),
                                ua.Range(Low=bounds[0], High=bounds[1]), datatype=ua.NodeId(ua.ObjectIds.Range))
    if point.unit:
        units = ua.EUInformation(NamespaceUri=UNECE_UNITS, UnitId=-1, DisplayName=ua.LocalizedText(point.unit),
                                 Description=ua.LocalizedText(point.unit))
        await node.add_property(ua.NodeId(f"{prefix}.EngineeringUnits", OWN_NAMESPACE),
                                ua.QualifiedName("EngineeringUnits", 0), units,
                                datatype=ua.NodeId(ua.ObjectIds.EUInformation))


async def remove_point(server: Server, nodeid: ua.NodeId, when: datetime) -> None:
    """Delete a point's node with its properties, telling its subscribers BadNodeIdUnknown first.

    asyncua 2.1.0 means to notify monitored items of a deleted node, but calls their async
    callback without awaiting it: nobody is told, and a "never awaited" RuntimeWarning is all
    that happens. So the node first gets a BadNodeIdUnknown value (a normal, awaited data change)
    and that warning is silenced for the deletion.
    """
    gone = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown),
                        SourceTimestamp=when, ServerTimestamp=when)
    await server.write_attribute_value(nodeid, gone)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"coroutine .*datachange_callback.* was never awaited", RuntimeWarning)
        await server.delete_nodes([server.get_node(nodeid)], recursive=True)
