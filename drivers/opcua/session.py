"""One connection to one OPC UA server: security and trust, user, namespaces, node ids, and the
requests the driver makes (subscribe, read, write). A new ``Session`` (and a new asyncua
``Client``) is made for every connection attempt: asyncua does not reconnect to a server that
regenerated its certificate, and a fresh client resolves the namespace indices again.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies, uacrypto
from cryptography.hazmat.primitives import serialization

from drivers.opcua.profile import OpcUaConnection, OpcUaPoint, OpcUaProfile, Security
from drivers.opcua.quality import status_name
from drivers.opcua.trust import application_uris, check_server, load_certificate
from gateway.errors import DeviceError

log = logging.getLogger(__name__)

POLICIES: dict[str, Any] = {"Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
                            "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
                            "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss}
VARIANTS = {name: getattr(ua.VariantType, name) for name in (
    "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float", "Double", "String")}
PUBLIC = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
TYPE_NAMES = {getattr(ua.ObjectIds, name): name for name in VARIANTS}  # a standard DataType's NodeId -> its name


@dataclass
class Watched:
    """A point the session watches: its node, the variant type its writes use, and for a point
    commanded by a method the object and method nodes, or why the server's method cannot take
    the profile's arguments."""

    point: OpcUaPoint
    node: Node
    variant: Any
    method: tuple[ua.NodeId, ua.NodeId] | None = None
    method_problem: str | None = None


@dataclass
class Called:
    """A method call's outcome: the server's StatusCode and each input argument's."""

    status: ua.StatusCode
    argument_results: list[ua.StatusCode]


class Session:
    """A connected client and the nodes of one device's profile."""

    def __init__(self, device: str, client: Client, watched: dict[str, Watched]) -> None:
        self.device = device
        self.client = client
        self.watched = watched

    @classmethod
    async def open(cls, device: str, connection: OpcUaConnection, profile: OpcUaProfile,
                   on_lost: Callable[[Exception], Awaitable[None]]) -> "Session":
        """Connect (checking the server certificate first), resolve every point's node id."""
        client = await prepared_client(device, connection, watchdog_intervall=1.0)
        client.connection_lost_callback = on_lost
        try:
            await client.connect()
        except Exception as exc:  # asyncua raises OSError, TimeoutError, UaStatusCodeError...
            await _quietly_close(client)
            raise DeviceError(device, f"cannot connect to {connection.endpoint}: {_reason(exc)}") from exc
        session = cls(device, client, {})
        try:
            session.watched = await session._resolve(profile)
        except Exception:
            await session.close()
            raise
        return session

    async def _resolve(self, profile: OpcUaProfile) -> dict[str, Watched]:
        namespaces = await self.client.get_namespace_array()
        watched = {}
        for point in profile.points:
            uri = profile.namespace_of(point)
            if uri not in namespaces:
                raise DeviceError(self.device, f"the server has no namespace {uri!r} (it has {namespaces})")
            node = self.client.get_node(ua.NodeId.from_string(f"ns={namespaces.index(uri)};{point.node}"))
            watched[point.id] = Watched(point, node, VARIANTS[point.data_type])
            if point.method is not None:
                watched[point.id].method = self._method_ids(point, uri, namespaces)
        await self._server_types(watched)
        for item in (w for w in watched.values() if w.method is not None):
            item.method_problem = await self._method_problem(item)
        return watched

    def _method_ids(self, point: OpcUaPoint, uri: str, namespaces: list[str]) -> tuple[ua.NodeId, ua.NodeId]:
        assert point.method is not None
        uri = point.method.namespace or uri
        if uri not in namespaces:
            raise DeviceError(self.device, f"the server has no namespace {uri!r} (it has {namespaces})")
        index = namespaces.index(uri)
        return (ua.NodeId.from_string(f"ns={index};{point.method.object}"),
                ua.NodeId.from_string(f"ns={index};{point.method.node}"))

    async def _method_problem(self, item: Watched) -> str | None:
        """Why the server's method cannot take the profile's call: not served, not a method, or
        other arguments (number and types, from its InputArguments property); read once per
        session. None when it can, or does not say (the call will tell)."""
        assert item.point.method is not None and item.method is not None
        method = self.client.get_node(item.method[1])
        problem = await self._not_a_method(method)
        if problem is None:
            try:
                declared = await (await method.get_child("0:InputArguments")).read_value()
            except (ua.UaError, ValueError) as exc:  # a server need not expose InputArguments
                log.debug("%s.%s: InputArguments not read: %s", self.device, item.point.id, exc)
                return None
            served = [TYPE_NAMES.get(a.DataType.Identifier, a.DataType.to_string())
                      if a.DataType.NamespaceIndex == 0 else a.DataType.to_string() for a in declared]
            wanted = [a.data_type for a in item.point.method.arguments]
            if served != wanted:
                problem = (f"method {method.nodeid.to_string()} takes ({', '.join(served)}), "
                           f"the profile gives ({', '.join(wanted)})")
        if problem is not None:
            log.warning("%s.%s: %s; its commands are refused", self.device, item.point.id, problem)
        return problem

    @staticmethod
    async def _not_a_method(method: Node) -> str | None:
        try:
            node_class = await method.read_node_class()
        except ua.UaStatusCodeError as exc:
            return f"method {method.nodeid.to_string()} not served: {status_name(exc.code)}"
        if node_class != ua.NodeClass.Method:
            return f"{method.nodeid.to_string()} is a {node_class.name}, not a method"
        return None

    async def _server_types(self, watched: dict[str, Watched]) -> None:
        """Writes go in the node's own data type, read once per session (a Python float to a
        Float node is BadTypeMismatch); a profile that says otherwise is logged, the server wins."""
        for item in (w for w in watched.values() if w.point.writable is not None and w.point.method is None):
            try:
                served = await item.node.read_data_type_as_variant_type()
            except (ua.UaError, ValueError) as exc:  # a missing node is reported by the subscription
                log.debug("%s.%s: data type not read: %s", self.device, item.point.id, exc)
                continue
            if served != item.variant:
                log.warning("%s.%s: the profile says %s, node %s is %s; writing %s", self.device, item.point.id,
                            item.point.data_type, item.node.nodeid.to_string(), served.name, served.name)
                item.variant = served

    async def close(self) -> None:
        """Disconnect; never raises (the server may already be gone)."""
        await _quietly_close(self.client)

    async def read(self, points: list[str]) -> dict[str, ua.DataValue]:
        """Each point's DataValue (a Bad StatusCode in its slot for a node that failed)."""
        nodes = [self.watched[p].node for p in points]
        values = await self.client.read_attributes(nodes, ua.AttributeIds.Value)
        return dict(zip(points, values))

    async def write(self, point: str, raw: Any) -> ua.StatusCode:
        """Write ``raw`` as a DataValue without timestamps (strict servers refuse a write that
        carries a SourceTimestamp) in the node's variant type; the server's StatusCode."""
        item = self.watched[point]
        value = ua.DataValue(ua.Variant(raw, item.variant), SourceTimestamp=None, ServerTimestamp=None)
        params = ua.WriteParameters()
        params.NodesToWrite = [ua.WriteValue(NodeId=item.node.nodeid, AttributeId=ua.AttributeIds.Value, Value=value)]
        [status] = await self.client.uaclient.write(params)
        return status


    async def call(self, point: str, raw: Any) -> Called:
        """Call the point's method with the profile's arguments, ``raw`` in the command's slot."""
        item = self.watched[point]
        assert item.point.method is not None and item.method is not None
        arguments = [ua.Variant(raw if a.value is None else a.value, VARIANTS[a.data_type])
                     for a in item.point.method.arguments]
        request = ua.CallMethodRequest(ObjectId=item.method[0], MethodId=item.method[1], InputArguments=arguments)
        [result] = await self.client.uaclient.call([request])
        return Called(result.StatusCode, list(result.InputArgumentResults or []))


async def prepared_client(who: str, connection: OpcUaConnection, **options: Any) -> Client:
    """An asyncua client set up for ``connection`` (not yet connected): the endpoint offering the
    policy and mode found and its certificate trusted first, then the user; DeviceError naming
    ``who`` (UntrustedServer among them) when it cannot be."""
    client = Client(connection.endpoint, timeout=connection.timeout_s, **options)
    await _secure(who, client, connection)
    if connection.user is not None:
        client.set_user(connection.user.name)
        client.set_password(os.environ.get(connection.user.password_env, ""))
    return client


def security_problems(security: Security) -> list[str]:
    """What stops a secured connection before it is tried: files missing or unreadable, a key that
    is not the certificate's, a client certificate without an application URI, a trust folder that
    does not exist (asyncua would fail later with a traceback or a bare timeout)."""
    if security.policy == "None":
        return []
    problems = []
    for what, name in (("certificate", security.certificate), ("private_key_file", security.private_key_file)):
        if name is not None and not Path(name).is_file():
            problems.append(f"security.{what}: {name} does not exist (gridgate certs issue DIR --role opcua --uri URN)")
    if not problems:
        problems += _pair_problems(Path(security.certificate or ""), Path(security.private_key_file or ""),
                                   security.application_uri is None)
    if security.trust and not security.trust_on_first_use and not Path(security.trust).is_dir():
        problems.append(f"security.trust: folder {security.trust} does not exist (put the server's certificate there)")
    return problems


def _pair_problems(cert_path: Path, key_path: Path, needs_uri: bool) -> list[str]:
    try:
        cert = load_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        return [f"security.certificate: {cert_path} is not a certificate (PEM or DER): {exc}"]
    data = key_path.read_bytes()
    try:
        key = (serialization.load_pem_private_key(data, None) if data.lstrip().startswith(b"-----")
               else serialization.load_der_private_key(data, None))
    except (ValueError, TypeError) as exc:
        return [f"security.private_key_file: {key_path} is not an unencrypted private key (PEM or DER): {exc}"]
    problems = []
    if key.public_key().public_bytes(*PUBLIC) != cert.public_key().public_bytes(*PUBLIC):
        problems.append(f"security.private_key_file: {key_path} is not the key of {cert_path}")
    if needs_uri and not application_uris(cert):
        problems.append(f"security.certificate: {cert_path} has no application URI in its SAN "
                        "(issue it with gridgate certs issue --role opcua --uri URN)")
    return problems


async def _secure(device: str, client: Client, connection: OpcUaConnection) -> None:
    security = connection.security
    if security.policy == "None":
        return
    assert security.certificate and security.private_key_file  # the model checks both are given
    cert_path, key_path = Path(security.certificate), Path(security.private_key_file)
    client.application_uri = security.application_uri or _uri_of(cert_path)
    mode = getattr(ua.MessageSecurityMode, security.mode)
    server_der = await _server_certificate(device, connection, security)
    await client.set_security(POLICIES[security.policy], _file(cert_path), _file(key_path),
                              server_certificate=server_der, mode=mode)


async def _server_certificate(device: str, connection: OpcUaConnection, security: Security) -> bytes:
    """The certificate of the endpoint offering the policy and mode, once it is trusted."""
    probe = Client(connection.endpoint, timeout=connection.timeout_s)
    try:
        endpoints = await probe.connect_and_get_server_endpoints()
    except Exception as exc:
        raise DeviceError(device, f"cannot list the endpoints of {connection.endpoint}: {_reason(exc)}") from exc
    uri = POLICIES[security.policy].URI
    mode = getattr(ua.MessageSecurityMode, security.mode)
    offered = [e for e in endpoints if e.SecurityPolicyUri == uri and e.SecurityMode == mode]
    if not offered:
        have = sorted({(e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode.name) for e in endpoints})
        raise DeviceError(device, f"{connection.endpoint} offers no {security.policy} {security.mode} endpoint "
                                  f"(it offers {have})")
    der = _first_certificate(offered[0].ServerCertificate)
    check_server(device, connection.host_port, der, Path(security.trust) if security.trust else None,
                       security.trust_on_first_use)
    return der


def _file(path: Path) -> uacrypto.CertProperties:
    """A certificate or key file, its format told by its content (asyncua goes by the suffix:
    ``gridgate certs`` writes PEM as ``.crt`` and ``.key``)."""
    data = path.read_bytes()
    return uacrypto.CertProperties(data, extension="pem" if data.lstrip().startswith(b"-----") else "der")


def _first_certificate(chain: bytes) -> bytes:
    """A server may send its chain; the leaf is the first DER SEQUENCE."""
    length = int.from_bytes(chain[2:4], "big") + 4
    return chain[:length]


def _uri_of(cert_path: Path) -> str:
    uris = application_uris(load_certificate(cert_path.read_bytes()))
    if not uris:
        raise DeviceError(str(cert_path), "the client certificate has no application URI in its SAN "
                                          "(issue it with gridgate certs issue --role opcua --uri URN)")
    return uris[0]


async def _quietly_close(client: Client) -> None:
    try:
        await client.disconnect()
    except Exception as exc:  # the server is gone or hung: nothing to close politely
        log.debug("disconnect: %s", exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__} ({exc})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
