"""The client of the simulator control API (``simcontrol``): what a simulated site serves, and
changes on demand. Blocking (urllib): it is for commissioning tools and benchmarks, which run
outside the gateway's reactor.
"""

import json
import urllib.error
import urllib.request
from typing import Any


class ControlError(Exception):
    """The simulator control API did not answer as expected."""


class SimulatorControl:
    """Client of ``gateway.simulation.simcontrol``: the simulator's values, and changes on demand."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s

    def values(self) -> dict[str, Any]:
        """``device.point`` -> the value the simulator serves now."""
        return self._call(urllib.request.Request(f"{self.url}/values"))

    def set(self, point: str, value: Any) -> Any:
        """Serve ``value`` at ``point``; the value served afterwards (registers quantise it)."""
        body = json.dumps({"point": point, "value": value}).encode()
        request = urllib.request.Request(f"{self.url}/set", data=body, method="POST",
                                         headers={"content-type": "application/json"})
        return self._call(request)["value"]

    def _call(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise ControlError(f"{request.full_url}: HTTP {exc.code} {exc.read().decode(errors='replace')}") from None
        except (OSError, ValueError) as exc:
            raise ControlError(f"{request.full_url}: {exc}") from None
