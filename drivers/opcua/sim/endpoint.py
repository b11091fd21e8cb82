"""One simulated OPC UA endpoint (host:port): the asyncua Server behind it, rebuilt on restart.

An endpoint offers exactly the security its devices' connections name, with its own certificate
(``certs``), and refuses anonymous sessions once a device names a user. A restart builds a fresh
``Server`` rather than restarting the old one: asyncua's ``Server.start`` after ``stop`` would add
its endpoints and policies a second time, and a real restart loses every session and
subscription, which is what a client's recovery must be tested against. Building costs about 1.5 s
(asyncua loads the standard address space in a thread), so the outage lasts at least that long.

A stall holds every connection of the server (``Connections``) instead of stopping it: sockets
open, nothing read or written, new ones accepted by TCP and held too. Inside, the server goes on
(node writes, sessions, subscriptions), so what a client sees is only a peer that no longer
answers, as with a hung PLC. A restart ends a stall, as restarting a hung server does.
"""

import asyncio
import hmac
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from drivers.opcua.profile import OpcUaConnection
from drivers.opcua.sim import nodes
from drivers.opcua.sim.certs import CertificateFiles, application_uri, kept_certificate, write_certificate
from drivers.opcua.sim.device import SimulatedDevice


class Connections(list[asyncio.Transport]):
    """One server's live connections, which a stall holds: nothing read, nothing written, socket open.

    It takes the place of asyncua 2.1's ``InternalServer.asyncio_transports``, the one list of a
    server's connections: ``OPCUAProtocol.connection_made`` appends each before anything is read
    from it (so one made during a stall is held before its Hello is read), ``connection_lost``
    removes it. What the server writes to a held connection (answers to requests read before the
    stall, subscription notifications) is kept and sent on resume, in order, as a hung process
    that continues sends it: dropping it would break the secure channel's sequence numbers.
    """

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[asyncio.Transport, list[bytes]] | None = None  # kept writes; None: not stalled

    def append(self, transport: asyncio.Transport) -> None:
        super().append(transport)
        if self._held is not None:
            self._hold(transport, self._held)

    def stall(self) -> None:
        """Hold every connection, and every one made until ``resume``."""
        if self._held is None:
            self._held = {}
            for transport in self:
                self._hold(transport, self._held)

    def resume(self) -> None:
        """Send what was kept and read again, on the connections still open."""
        held, self._held = self._held or {}, None
        for transport, writes in held.items():
            del transport.write  # the transport's own method again
            if transport.is_closing():
                continue
            for data in writes:
                transport.write(data)
            transport.resume_reading()

    @staticmethod
    def _hold(transport: asyncio.Transport, held: dict[asyncio.Transport, list[bytes]]) -> None:
        transport.pause_reading()
        writes = held[transport] = []
        transport.write = writes.append  # type: ignore[method-assign]  # asyncua's UaProcessor writes here


def _node_keys(device: SimulatedDevice) -> list[tuple[str, str]]:
    """(namespace URI, identifier) of every node the device's profile names: its points' nodes, and
    its methods with the objects they are called on (a device may name one object twice)."""
    profile = device.profile
    keys = [(profile.namespace_of(p), p.node) for p in profile.points]
    for point in (p for p in profile.points if p.method is not None):
        assert point.method is not None
        uri = point.method.namespace or profile.namespace_of(point)
        keys += [(uri, point.method.node)] + ([] if (uri, point.method.object) in keys else [(uri, point.method.object)])
    return keys


def security_policy(policy: str, mode: str) -> ua.SecurityPolicyType:
    """asyncua's name for a profile's policy and mode (``Basic256Sha256`` + ``Sign``...)."""
    if policy == "None":
        return ua.SecurityPolicyType.NoSecurity
    return ua.SecurityPolicyType[f"{policy}_{mode}"]


class PasswordUsers(UserManager):
    """Accepts the named users with the password in their environment variable, nobody else.

    The variable is read at each activation, so a test may set it after the simulator is built;
    an unset variable refuses the user.
    """

    def __init__(self, password_envs: dict[str, str]) -> None:
        self._password_envs = password_envs

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        env = self._password_envs.get(username or "")
        expected = os.environ.get(env) if env else None
        if expected is None or password is None:
            return None
        if not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return User(role=UserRole.User, name=username)  # not Admin: access levels apply to writes


class Endpoint:
    """The devices served on one host:port and the server serving them."""

    def __init__(self, connection: OpcUaConnection, cert_dir: Path, clock: Callable[[], float]) -> None:
        self.host, self.port = connection.host_port
        self.url = connection.endpoint
        self.devices: list[SimulatedDevice] = []
        self.files: CertificateFiles = kept_certificate(cert_dir, self.host, self.port)
        self._cert_dir = cert_dir
        self._clock = clock
        self._policies: set[ua.SecurityPolicyType] = set()
        self._password_envs: dict[str, str] = {}
        self._owners: dict[tuple[str, str], str] = {}  # (namespace URI, identifier) -> device
        self._server: Server | None = None  # the listening one; None while down
        self._nodeids: dict[tuple[str, str], ua.NodeId] = {}  # (device, point) -> NodeId in _server
        self._targets: dict[ua.NodeId, tuple[SimulatedDevice, str]] = {}
        self._wanted = False  # opened and not closed since: a restart in progress may listen again
        self._restarting = False
        self._connections = Connections()  # those of _server
        self._resume_call: asyncio.TimerHandle | None = None  # the end of a stall with a duration

    def add(self, device: SimulatedDevice, connection: OpcUaConnection) -> None:
        """Serve ``device`` here too; ValueError for a NodeId another point already has (here or in
        another device: asyncua would only refuse it when building), or a user named twice differently."""
        owners = dict(self._owners)
        for uri, identifier in _node_keys(device):
            if (uri, identifier) in owners:
                raise ValueError(f"{device.name}: node {identifier} of {uri} on {self.host}:{self.port} "
                                 f"is already served for {owners[(uri, identifier)]}")
            owners[(uri, identifier)] = device.name
        user = connection.user
        if user is not None and self._password_envs.get(user.name, user.password_env) != user.password_env:
            raise ValueError(f"{device.name}: user {user.name} on {self.host}:{self.port} has another "
                             f"password variable ({self._password_envs[user.name]})")
        if user is not None:
            self._password_envs[user.name] = user.password_env
        self._policies.add(security_policy(connection.security.policy, connection.security.mode))
        self._owners = owners
        self.devices.append(device)

    def now(self) -> datetime:
        """The simulator's clock as a timestamp (the reactor's, so tests with a fake clock agree)."""
        return datetime.fromtimestamp(self._clock(), timezone.utc)

    def regenerate_certificate(self) -> Path:
        """A new key and certificate in the same files; the server shows it from its next start."""
        self.files = write_certificate(self._cert_dir, self.host, self.port)
        return self.files.certificate

    async def open(self) -> None:
        """Build the server and listen."""
        self._wanted = True
        await self._listen(await self._build())

    async def close(self) -> None:
        """Stop listening and drop every session; a pending restart does not listen again."""
        self._wanted = False
        await self._shut_down()

    async def restart(self, down_s: float, new_certificate: bool) -> None:
        """Go down for ``down_s`` (at least the build time), optionally with a new certificate."""
        if self._restarting:
            raise RuntimeError(f"{self.host}:{self.port} is already restarting")
        self._restarting = True
        try:
            loop = asyncio.get_running_loop()
            went_down = loop.time()
            await self._shut_down()
            if new_certificate:
                self.regenerate_certificate()
            server = await self._build()
            await asyncio.sleep(max(0.0, down_s - (loop.time() - went_down)))
            if self._wanted:
                await self._listen(server)
        finally:
            self._restarting = False

    def stall(self, for_s: float | None) -> None:
        """Stop answering every connection, current and new, until ``resume`` or for ``for_s`` seconds.

        RuntimeError while the endpoint is down: there is no server to hang.
        """
        if self._server is None:
            raise RuntimeError(f"{self.host}:{self.port} is down: no server to stall")
        self._cancel_resume()
        self._connections.stall()
        if for_s is not None:
            self._resume_call = asyncio.get_running_loop().call_later(for_s, self.resume)

    def resume(self) -> None:
        """Answer again: what the server wrote meanwhile is sent, then requests are read (a no-op unless stalled)."""
        self._cancel_resume()
        self._connections.resume()

    def _cancel_resume(self) -> None:
        if self._resume_call is not None:
            self._resume_call.cancel()
            self._resume_call = None

    async def _shut_down(self) -> None:
        """Stop the server; held connections are closed with what they kept (a hung server killed sends nothing)."""
        self._cancel_resume()
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _listen(self, server: Server) -> None:
        self._connections = Connections()
        server.iserver.asyncio_transports = self._connections
        await server.start()
        self._server = server
        for device in self.devices:  # what happened while the server was being built
            await self._sync(server, device)

    async def _sync(self, server: Server, device: SimulatedDevice) -> None:
        """Make the server's nodes match the device: removed points absent, the others present and current."""
        parent = server.get_node(nodes.device_nodeid(device))
        when = self.now()
        for point_id in device.points:
            nodeid = self._nodeids[(device.name, point_id)]
            exists = server.read_attribute_value(nodeid, ua.AttributeIds.NodeClass).StatusCode.is_good()
            if point_id in device.removed and exists:
                await nodes.remove_point(server, nodeid, when)
            elif point_id not in device.removed and not exists:
                await nodes.add_point(server, parent, device, point_id, nodeid, when)
            elif exists:
                await server.write_attribute_value(nodeid, device.datavalue(point_id, when))

    async def _build(self) -> Server:
        users = PasswordUsers(self._password_envs) if self._password_envs else None
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name(f"gridgate simulator {self.host}:{self.port}")
        await server.set_application_uri(application_uri(self.host, self.port))
        await server.load_certificate(str(self.files.certificate), format="der")
        await server.load_private_key(str(self.files.private_key), format="pem")
        server.set_security_policy(sorted(self._policies, key=lambda policy: policy.value))
        server.set_identity_tokens([ua.UserNameIdentityToken] if users else [ua.AnonymousIdentityToken])
        server.subscribe_server_callback(CallbackType.PostWrite, self._client_wrote)
        indices: dict[str, int] = {}
        for device in self.devices:
            for point in device.profile.points:
                uri = device.profile.namespace_of(point)
                if uri not in indices:
                    indices[uri] = await server.register_namespace(uri)
        when = self.now()
        self._nodeids.clear()
        self._targets.clear()
        for device in self.devices:
            for point_id, nodeid in (await nodes.add_device(server, device, indices, when, self._called)).items():
                self._nodeids[(device.name, point_id)] = nodeid
                self._targets[nodeid] = (device, point_id)
        return server

    async def _client_wrote(self, event: ServerItemCallback, _: Any) -> None:
        """A client's write went through: the engine takes the value, the node gets our timestamp."""
        if not event.is_external:
            return  # the server's own writes at start-up
        for item, result in zip(event.request_params.NodesToWrite, event.response_params):
            target = self._targets.get(item.NodeId)
            if target is None or item.AttributeId != ua.AttributeIds.Value or not result.is_good():
                continue
            device, point_id = target
            device.accept(point_id, item.Value.Value.Value)
            await self.write(device, [point_id])

    async def _called(self, device: SimulatedDevice, point_id: str, raw: Any) -> None:
        """A client's method call went through: the engine takes its value, as for a write."""
        device.accept(point_id, raw)
        await self.write(device, [point_id])

    async def write(self, device: SimulatedDevice, point_ids: list[str]) -> None:
        """Serve the points' current values and status (a no-op while the server is down)."""
        server = self._server
        if server is None:
            return
        when = self.now()
        for point_id in point_ids:
            if point_id not in device.removed:
                await server.write_attribute_value(self._nodeids[(device.name, point_id)],
                                                   device.datavalue(point_id, when))

    async def remove(self, device: SimulatedDevice, point_id: str) -> None:
        """Delete the point's node; it stays deleted, across restarts too, until ``recreate``."""
        device.removed.add(point_id)
        if self._server is not None:
            await self._sync(self._server, device)

    async def recreate(self, device: SimulatedDevice) -> None:
        """Create the device's removed nodes again, with their current values."""
        device.removed.clear()
        if self._server is not None:
            await self._sync(self._server, device)
