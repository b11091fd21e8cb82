"""The settings of a driver that polls: how often, how long to wait, when to give up.

A driver that polls (Modbus) puts these into its connection model by inheriting
``PollingConnection``; a driver that is pushed to (a 104 master, a streaming sensor) has none.
The site file writes them beside ``connection:`` (``devices[i].poll_s``), as it always did.
"""

from pydantic import Field

from gateway.config.profile import Strict
from gateway.config.units import Duration


class PollingConnection(Strict):
    """Poll period, per-request timeout and retries, and consecutive failures before offline."""

    poll_s: Duration = Field(1.0, gt=0)
    timeout_s: Duration = Field(1.0, gt=0)
    retries: int = Field(1, ge=0, le=5)
    offline_after: int = Field(3, ge=1, description="consecutive failed polls before IV")

    @property
    def value_age_s(self) -> float:
        """How old a good value in the gateway may be: one poll period plus the request that read it
        (commissioning checks use it)."""
        return self.poll_s + self.timeout_s
