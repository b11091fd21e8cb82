"""The OPC UA part of profiles and site files: nodes by namespace URI, data types, subscription
settings, and how a device is reached (endpoint, security, user).

Nodes are named by namespace **URI** plus identifier (``s=BESS.SOC``, ``i=1001``, ``g=...``,
``b=...``): a server may renumber its namespace indices on restart, its URIs stay. The driver
resolves the index at every (re)connection.
"""

import re
from typing import Literal

from pydantic import Field, model_validator

from gateway.config.profile import PointSpec, ProfileSpec, Strict
from gateway.config.units import Duration

DataType = Literal["Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
                   "Float", "Double", "String"]
INTEGER_BITS = {"SByte": (8, True), "Byte": (8, False), "Int16": (16, True), "UInt16": (16, False),
                "Int32": (32, True), "UInt32": (32, False), "Int64": (64, True), "UInt64": (64, False)}


def integer_bounds(data_type: str) -> tuple[int, int]:
    """The raw range of an integer data type (KeyError for others)."""
    bits, signed = INTEGER_BITS[data_type]
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


IDENTIFIER = r"^(s=.+|i=\d+|g=[0-9a-fA-F-]{36}|b=[A-Za-z0-9+/=]+)$"
SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]
SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]


class Deadband(Strict):
    """A data-change filter's deadband: absolute (engineering units) or percent of the EURange."""

    absolute: float | None = Field(None, gt=0)
    percent: float | None = Field(None, gt=0, le=100)

    @model_validator(mode="after")
    def _one(self) -> "Deadband":
        if (self.absolute is None) == (self.percent is None):
            raise ValueError("give absolute or percent")
        return self


class Subscription(Strict):
    """How a point is watched; set per profile (``opcua:``) and overridden per point."""

    sampling_ms: int | None = Field(None, ge=0, le=3_600_000, description="server sampling; default: publishing")
    queue_size: int | None = Field(None, ge=1, le=10_000)
    deadband: Deadband | None = None


class MethodArgument(Strict):
    """One input argument of a method, in the method's order: a constant, or (no ``value``) the
    command's value in this argument's type."""

    name: str = ""
    data_type: DataType
    value: bool | int | float | str | None = None

    @model_validator(mode="after")
    def _carried(self) -> "MethodArgument":
        value, kind = self.value, self.data_type
        if value is None:
            return self
        fits = (isinstance(value, bool) if kind == "Boolean" else isinstance(value, str) if kind == "String" else
                not isinstance(value, (bool, str)) and (kind not in INTEGER_BITS or (
                    float(value).is_integer() and integer_bounds(kind)[0] <= value <= integer_bounds(kind)[1])))
        if not fits:
            raise ValueError(f"{value!r} is not a {kind}")
        return self


class MethodCall(Strict):
    """The method a command to the point calls instead of writing its node (a device whose
    setpoints are set through methods); the read-back is the point's node, as for a write."""

    object: str = Field(pattern=IDENTIFIER, description="the object the method is called on")
    node: str = Field(pattern=IDENTIFIER, description="the method's node")
    namespace: str | None = Field(None, description="namespace URI of both; default: the point's")
    arguments: list[MethodArgument] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_command_slot(self) -> "MethodCall":
        if sum(1 for a in self.arguments if a.value is None) != 1:
            raise ValueError("exactly one argument takes the command's value (the one without value:)")
        return self

    def command_argument(self) -> MethodArgument:
        """The argument the command's value goes into."""
        return next(a for a in self.arguments if a.value is None)


class OpcUaPoint(PointSpec):
    """A point at a variable node (``mode: subscribe``, the default, or ``read`` on the device's read
    period); commanded by writing the node, or by calling ``method``."""

    node: str = Field(pattern=IDENTIFIER, description="identifier: s=..., i=..., g=..., b=...")
    namespace: str | None = Field(None, description="namespace URI; default: the profile's opcua.namespace")
    data_type: DataType
    mode: Literal["subscribe", "read"] = "subscribe"
    sampling_ms: int | None = Field(None, ge=0, le=3_600_000)
    queue_size: int | None = Field(None, ge=1, le=10_000)
    deadband: Deadband | None = None
    group: str | None = Field(None, description="a named group of the profile's opcua.groups")
    method: MethodCall | None = None

    @model_validator(mode="after")
    def _method_commands(self) -> "OpcUaPoint":
        if self.method is not None and self.writable is None:
            raise ValueError("a point commanded by a method needs writable limits: writable: {min: ..., max: ...}")
        return self

    def value_kind(self) -> Literal["bool", "int", "float", "str"]:
        """bool, str, int (unscaled integer types) or float."""
        if self.data_type in ("Boolean", "String"):
            return "bool" if self.data_type == "Boolean" else "str"
        if self.data_type in INTEGER_BITS and self.scale == 1 and self.offset == 0:
            return "int"
        return "float"

    def value_range(self) -> tuple[float, float] | None:
        """The engineering range the node's integer type can carry (None for floats and strings)."""
        if self.data_type == "Boolean":
            return (0.0, 1.0)
        if self.data_type not in INTEGER_BITS:
            return None
        low, high = integer_bounds(self.data_type)
        ends = sorted((low * self.scale + self.offset, high * self.scale + self.offset))
        return (ends[0], ends[1])


class OpcUaOptions(Subscription):
    """Per-model defaults, and named groups of subscription settings points may join (``group:``)."""

    namespace: str = Field(description="namespace URI of the points that name none")
    groups: dict[str, Subscription] = Field(default_factory=dict, description="name -> sampling, queue, deadband")


class OpcUaProfile(ProfileSpec):
    """An OPC UA device model."""

    protocol: Literal["opcua"]
    opcua: OpcUaOptions
    points: list[OpcUaPoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _groups_named(self) -> "OpcUaProfile":
        for point in self.points:
            if point.group is not None and point.group not in self.opcua.groups:
                raise ValueError(f"{point.id}: no group {point.group!r} in opcua.groups "
                                 f"(it has {sorted(self.opcua.groups) or 'none'})")
        return self

    @model_validator(mode="after")
    def _methods_apart(self) -> "OpcUaProfile":
        """A method's object and node are not a point's node, and no two points call one method."""
        variables = {(self.namespace_of(p), p.node): p.id for p in self.points}
        methods: dict[tuple[str, str], str] = {}
        for point in (p for p in self.points if p.method is not None):
            assert point.method is not None
            uri = point.method.namespace or self.namespace_of(point)
            for what, identifier in (("object", point.method.object), ("node", point.method.node)):
                if (uri, identifier) in variables:
                    raise ValueError(f"{point.id}: method {what} {identifier} is the node of point "
                                     f"{variables[(uri, identifier)]}")
            if (uri, point.method.node) in methods:
                raise ValueError(f"{point.id}: method {point.method.node} is called by {methods[(uri, point.method.node)]} too")
            methods[(uri, point.method.node)] = point.id
        return self

    def namespace_of(self, point: OpcUaPoint) -> str:
        """The namespace URI of ``point``."""
        return point.namespace or self.opcua.namespace

    def reporting_deadband(self, point: PointSpec) -> float:
        """The point's deadband in engineering units; a percent one of the range the simulator
        serves as EURange (writable limits, else the sim's min..max)."""
        deadband = self.subscription_of(point).deadband  # type: ignore[arg-type]
        if deadband is None:
            return 0.0
        if deadband.absolute is not None:
            return deadband.absolute
        low, high = ((point.writable.min, point.writable.max) if point.writable is not None else
                     (point.sim.min, point.sim.max) if point.sim is not None else (None, None))
        return 0.0 if low is None or high is None else (deadband.percent or 0.0) / 100 * (high - low)

    def subscription_of(self, point: OpcUaPoint) -> Subscription:
        """The point's sampling, queue size and deadband: its own, else its group's, else the profile's."""
        group = self.opcua.groups[point.group] if point.group is not None else Subscription()
        sampling = next((v for v in (point.sampling_ms, group.sampling_ms, self.opcua.sampling_ms) if v is not None), None)
        return Subscription(sampling_ms=sampling, queue_size=point.queue_size or group.queue_size or self.opcua.queue_size,
                            deadband=point.deadband or group.deadband or self.opcua.deadband)


class Security(Strict):
    """Message security and the certificates of both sides. Paths are relative to the site file."""

    policy: SecurityPolicy = "None"
    mode: SecurityMode = "None"
    certificate: str | None = Field(None, description="the gateway's client certificate (DER or PEM)")
    private_key_file: str | None = Field(None, description="its private key (PEM)")
    trust: str | None = Field(None, description="folder of trusted server (or CA) certificates; CRLs beside them")
    trust_on_first_use: bool = Field(False, description="pin the certificate the server shows first; never by default")
    application_uri: str | None = Field(None, description="default: the URI in the certificate's SAN")

    @model_validator(mode="after")
    def _consistent(self) -> "Security":
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy None goes with mode None, and a policy needs Sign or SignAndEncrypt")
        if self.policy != "None" and not (self.certificate and self.private_key_file):
            raise ValueError(f"{self.policy} needs certificate and private_key_file")
        if self.policy != "None" and not self.trust and not self.trust_on_first_use:
            raise ValueError("name the trusted server certificates (trust: FOLDER); trust_on_first_use: true "
                             "only if you mean to accept whatever the server shows first")
        return self


class User(Strict):
    """A user name and the environment variable holding the password (never the site file)."""

    name: str = Field(min_length=1)
    password_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class OpcUaConnection(Strict):
    """Where an OPC UA server is and how the gateway talks to it. No poll period: values are
    subscribed; ``read_s`` is the period of the points with ``mode: read``."""

    endpoint: str = Field(pattern=r"^opc\.tcp://[^/\s]+(:\d+)?(/.*)?$")
    security: Security = Security()
    user: User | None = None
    publishing_interval_ms: int = Field(500, ge=10, le=3_600_000)
    read_s: Duration = Field(1.0, gt=0, description="period of the points with mode: read")
    timeout_s: Duration = Field(4.0, gt=0, description="one request's answer")
    offline_after_s: Duration = Field(10.0, gt=0, description="unreachable this long: points IV, device offline")

    @property
    def value_age_s(self) -> float:
        """How old a good value in the gateway may be: a change waits up to one publishing interval
        on the server, and the server samples it at most that often (commissioning checks use it)."""
        return 2 * self.publishing_interval_ms / 1000

    @property
    def host_port(self) -> tuple[str, int]:
        """The endpoint's host and port (4840 when it names none)."""
        match = re.match(r"^opc\.tcp://([^/:\s]+)(?::(\d+))?", self.endpoint)
        assert match is not None  # the field pattern holds
        return match.group(1), int(match.group(2) or 4840)
