"""A small HTTP JSON API that reads and steers running simulators.

A commissioning tool (``gridgate dispatch-test``) compares what a dispatch master receives with
what the simulated device serves, and provokes changes to time spontaneous transmission. It
runs in another process than the simulators, so it needs a wire: this API.

* ``GET /values`` -> ``{"device.point": value, ...}`` for every simulated point (non-finite
  floats as null, since JSON has no NaN);
* ``POST /set`` with ``{"point": "device.point", "value": v}`` -> ``{"point": ..., "value":
  served}``, the value the device now serves (registers quantise it); 404 for an unknown point,
  400 for bad JSON, and 400 with ``{"point": ..., "error": why}`` for a value the point cannot
  take: the wrong kind (a string for a number, a number for a bool), beyond what its register
  type and scale carry, or one that would encode to the profile's "not implemented" sentinel
  (a device serving the sentinel is a different test: the gateway shows IV, not the number).
  A refused value changes nothing.

It binds to 127.0.0.1 by default: anyone who reaches it can change "measurements", so it is a
test fixture, never something to expose on a site network.
"""

import json
import logging
import math
from typing import Any, Sequence

from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from gateway.config.profile import PointSpec
from gateway.interfaces import ISimulator
from gateway.model import Device

log = logging.getLogger(__name__)


class UnknownPoint(KeyError):
    """No simulated device serves this ``device.point``."""


class BadValue(ValueError):
    """The value does not fit the point (kind or range)."""


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``/``PORT``) as a pair; ValueError with the reason otherwise."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class SimulatedPoints:
    """Every point of the given devices, each routed to the simulator that serves its device."""

    def __init__(self, simulators: Sequence[ISimulator], devices: Sequence[Device]) -> None:
        self._devices = {d.name: d for d in devices}
        self._owner = {d.name: self._find_owner(simulators, d) for d in devices}

    @staticmethod
    def _find_owner(simulators: Sequence[ISimulator], device: Device) -> ISimulator | None:
        """The simulator serving ``device``: the one whose ``value`` does not raise KeyError."""
        first = device.profile.points[0].id
        for simulator in simulators:
            try:
                simulator.value(device.name, first)
            except KeyError:
                continue
            return simulator
        return None

    def values(self) -> dict[str, Any]:
        """``device.point`` -> the value served now, for every simulated point."""
        found: dict[str, Any] = {}
        for name, device in self._devices.items():
            owner = self._owner[name]
            if owner is None:
                continue
            for spec in device.profile.points:
                found[f"{name}.{spec.id}"] = _json_value(owner.value(name, spec.id))
        return found

    def set(self, point: str, value: Any) -> Any:
        """Serve ``value`` at ``point`` now; the value served afterwards."""
        device_name, _, point_id = point.partition(".")
        device, owner = self._devices.get(device_name), self._owner.get(device_name)
        if device is None or owner is None:
            raise UnknownPoint(point)
        try:
            spec = device.profile.point(point_id)
        except KeyError:
            raise UnknownPoint(point) from None
        _check_fits(spec, value)
        try:
            owner.set_value(device_name, point_id, value)
        except ValueError as exc:  # the simulator's own encoding refused it, nothing changed
            raise BadValue(str(exc).removeprefix(f"point {point_id!r}: ")) from None
        return _json_value(owner.value(device_name, point_id))


def _check_fits(spec: PointSpec, value: Any) -> None:
    """BadValue unless ``value`` has the point's kind and lies inside what its encoding carries."""
    kind = spec.value_kind()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool" and not isinstance(value, bool):
        raise BadValue("the point takes true/false")
    if kind == "str" and not isinstance(value, str):
        raise BadValue("the point takes a string")
    if kind in ("int", "float"):
        if not number or not math.isfinite(value):
            raise BadValue("the point takes a finite number")
        bounds = spec.value_range()
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise BadValue(f"its register carries {bounds[0]:g}..{bounds[1]:g}")


def _reply(request: Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode()


class _Values(Resource):
    isLeaf = True

    def __init__(self, points: SimulatedPoints) -> None:
        super().__init__()
        self._points = points

    def render_GET(self, request: Request) -> bytes:  # pylint: disable=invalid-name
        """Every simulated point's current value."""
        return _reply(request, 200, self._points.values())


class _Set(Resource):
    isLeaf = True

    def __init__(self, points: SimulatedPoints) -> None:
        super().__init__()
        self._points = points

    def render_POST(self, request: Request) -> bytes:  # pylint: disable=invalid-name
        """Set one point: 200 with the served value, 400 bad request, 404 unknown point."""
        try:
            body = json.loads(request.content.read() or b"null")
            point, value = body["point"], body["value"]
            if not isinstance(point, str):
                raise TypeError("point must be a string")
        except (ValueError, KeyError, TypeError) as exc:
            return _reply(request, 400, {"error": f'expected {{"point": "device.point", "value": v}}: {exc}'})
        try:
            served = self._points.set(point, value)
        except UnknownPoint:
            return _reply(request, 404, {"error": f"no simulated point {point!r}"})
        except BadValue as exc:
            return _reply(request, 400, {"point": point, "error": f"{point} cannot take {json.dumps(value)}: {exc}"})
        log.info("simulator control: %s set to %r (serves %r)", point, value, served)
        return _reply(request, 200, {"point": point, "value": served})


def control_site(simulators: Sequence[ISimulator], devices: Sequence[Device]) -> Site:
    """The twisted.web site of the control API (separate from listening, for tests)."""
    points = SimulatedPoints(simulators, devices)
    root = Resource()
    root.putChild(b"values", _Values(points))
    root.putChild(b"set", _Set(points))
    site = Site(root)
    site.noisy = False
    return site


def start_control(reactor: Any, simulators: Sequence[ISimulator], devices: Sequence[Device],
                  host: str = "127.0.0.1", port: int = 0) -> IListeningPort:
    """Listen for the control API on ``host:port`` (port 0: any free port; see getHost())."""
    return reactor.listenTCP(port, control_site(simulators, devices), interface=host)


def control_url(listening: IListeningPort) -> str:
    """The base URL a client uses for a listening control API."""
    address = listening.getHost()
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"http://{host}:{address.port}"
