"""IEC 104 APCI parameters (IEC 60870-5-104 section 5), the same for both ends of a link: the
outstation's master groups and the master driver's downstream connections take them from here."""

from pydantic import Field, model_validator

from gateway.config.profile import Strict
from gateway.config.units import Duration


class Timers(Strict):
    """k, w and t0..t3 with the standard's defaults and its rules between them."""

    k: int = Field(12, ge=1, le=32767)
    w: int = Field(8, ge=1, le=32767)
    t0: Duration = 30.0
    t1: Duration = 15.0
    t2: Duration = 10.0
    t3: Duration = 20.0

    @model_validator(mode="after")
    def _window(self) -> "Timers":
        if self.w > self.k * 2 / 3:
            raise ValueError(f"w ({self.w}) should not exceed 2/3 of k ({self.k})")
        if not self.t2 < self.t1:
            raise ValueError("t2 must be shorter than t1")
        return self
