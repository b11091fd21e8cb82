"""A simulated device's nodes in one asyncua server's address space.

Each device is an Object under Objects (``ns=1;s=<device>``, namespace 1 being the server's own
application URI), and each point a Variable under it with exactly the NodeId its profile names,
in the index the server gave the point's namespace URI. The properties a client may rely on sit
beside it: ``EURange`` (a percent deadband is computed against it) and ``EngineeringUnits``.
Properties and objects get string NodeIds in namespace 1, derived from the device and point
names, so they can never take an identifier a profile names in its own namespace.

A point commanded by a method gets its method (and the object it is called on, under the
device's Object) with the NodeIds the profile names and the profile's InputArguments. asyncua's
server checks neither the number nor the types of a call's arguments, so ``method_call`` does,
answering as a conformant server would (BadArgumentsMissing, BadTooManyArguments,
BadInvalidArgument with BadTypeMismatch on the argument), and hands the command's value on.
"""

import warnings
from datetime import datetime
from typing import Any, Awaitable, Callable

from asyncua import Node, Server, ua

from drivers.opcua.profile import MethodCall, OpcUaPoint
from drivers.opcua.sim.device import SimulatedDevice, variant_type

Called = Callable[[SimulatedDevice, str, Any], Awaitable[None]]  # device, point, the command's raw value

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
                     when: datetime, called: Called) -> dict[str, ua.NodeId]:
    """Create the device's Object, the nodes of its points that are not removed and its methods;
    the points' NodeIds."""
    parent = await server.nodes.objects.add_object(device_nodeid(device),
                                                   ua.QualifiedName(device.name, OWN_NAMESPACE))
    nodeids: dict[str, ua.NodeId] = {}
    for point in device.profile.points:
        nodeid = point_nodeid(point, indices[device.profile.namespace_of(point)])
        nodeids[point.id] = nodeid
        if point.id not in device.removed:
            await add_point(server, parent, device, point.id, nodeid, when)
    objects: dict[ua.NodeId, Node] = {}
    for point in (p for p in device.profile.points if p.method is not None):
        assert point.method is not None
        index = indices[point.method.namespace or device.profile.namespace_of(point)]
        await add_method(parent, objects, index, point.method, _caller(device, point, called))
    return nodeids


async def add_method(parent: Node, objects: dict[ua.NodeId, Node], index: int, method: MethodCall,
                     call: Callable[..., Awaitable[ua.CallMethodResult]]) -> None:
    """The method under its object (made once per object, under the device's)."""
    object_id = ua.NodeId.from_string(f"ns={index};{method.object}")
    if object_id not in objects:
        name = method.object.split("=", 1)[1]
        objects[object_id] = await parent.add_object(object_id, ua.QualifiedName(name, index))
    inputs = [ua.Argument(Name=a.name or f"arg{n}", DataType=ua.NodeId(getattr(ua.ObjectIds, a.data_type)),
                          ValueRank=-1) for n, a in enumerate(method.arguments)]
    await objects[object_id].add_method(ua.NodeId.from_string(f"ns={index};{method.node}"),
                                        ua.QualifiedName(method.node.split("=", 1)[1], index), call, inputs, [])


def _caller(device: SimulatedDevice, point: OpcUaPoint, called: Called) -> Callable[..., Awaitable[ua.CallMethodResult]]:
    async def call(_: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        assert point.method is not None
        result = method_call(point.method, list(arguments))
        if result.StatusCode.is_good():
            slot = point.method.arguments.index(point.method.command_argument())
            await called(device, point.id, arguments[slot].Value)
        return result
    return call


def method_call(method: MethodCall, arguments: list[ua.Variant]) -> ua.CallMethodResult:
    """The answer to a call with ``arguments``: Good, or the refusal a conformant server gives."""
    wanted = [getattr(ua.VariantType, a.data_type) for a in method.arguments]
    if len(arguments) != len(wanted):
        code = ua.StatusCodes.BadArgumentsMissing if len(arguments) < len(wanted) else ua.StatusCodes.BadTooManyArguments
        return ua.CallMethodResult(StatusCode=ua.StatusCode(code))
    results = [ua.StatusCode() if a.VariantType == t else ua.StatusCode(ua.StatusCodes.BadTypeMismatch)
               for a, t in zip(arguments, wanted)]
    good = all(r.is_good() for r in results)
    return ua.CallMethodResult(StatusCode=ua.StatusCode() if good else ua.StatusCode(ua.StatusCodes.BadInvalidArgument),
                               InputArgumentResults=results)


async def add_point(server: Server, parent: Node, device: SimulatedDevice, point_id: str,
                    nodeid: ua.NodeId, when: datetime) -> None:
    """Create one point's Variable (value, status, timestamps, access level) and its properties."""
    point = device.points[point_id]
    datatype = ua.NodeId(getattr(ua.ObjectIds, point.data_type))
    node = await parent.add_variable(nodeid, ua.QualifiedName(point.id, nodeid.NamespaceIndex),
                                     device.raw[point.id], variant_type(point), datatype)
    await server.write_attribute_value(nodeid, device.datavalue(point.id, when))
    if point.writable is not None and point.method is None:
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
