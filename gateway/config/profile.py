"""The protocol-independent part of a device profile.

A profile describes a device *model*. Each driver extends ``PointSpec`` and ``ProfileSpec`` with
its addressing (registers, node ids, ...) so that points stay flat in YAML; the core validates a
profile with the model its driver declares. An entry with ``array:`` stands for a table of points;
the loader expands it (``gateway.config.arrays``) before these models see the points.
"""

from typing import Any, ClassVar, Literal, Mapping, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

POINT_ID = r"^[a-z][a-z0-9_]*$"
DIMENSION = r"^[a-z_][a-z0-9_]*$"
MAX_ARRAY_COUNT = 4096
DEVICE_POINT = r"^[A-Za-z][A-Za-z0-9_-]*\.[a-z_][a-z0-9_]*$"  # device.point, as site files name a point


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(Strict):
    """Bounds every command to a writable point must respect (engineering units)."""

    min: float
    max: float
    ramp_per_s: float | None = Field(None, gt=0, description="largest change per second")
    readback_tolerance: float = Field(0.0, ge=0, description="accepted |readback - written|")

    @model_validator(mode="after")
    def _ordered(self) -> "Limits":
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


def _sim_templates(schema: dict[str, Any]) -> None:
    """Editors see what the loader accepts: in an array entry a number under ``sim:`` may be a
    template (``position: "{zone}"``), formatted per element before validation."""
    template = {"type": "string", "pattern": r"\{", "description": "a template of an array entry"}
    for prop in schema.get("properties", {}).values():
        kinds = [prop] + prop.get("anyOf", [])
        if any(k.get("type") in ("number", "integer") for k in kinds):
            prop.setdefault("anyOf", [{"type": prop.pop("type")}] if "type" in prop else []).append(template)


class SimBehaviour(Strict):
    """How the simulator moves a point's value (engineering units)."""

    model_config = ConfigDict(json_schema_extra=_sim_templates)

    kind: Literal["constant", "ramp", "sine", "random_walk", "follow", "integrate", "hotspot", "session"] = "constant"
    value: float = 0.0
    min: float | None = None
    max: float | None = None
    amplitude: float = 0.0
    period_s: float = Field(60.0, gt=0)
    step: float = 0.0
    source: str | None = Field(None, description="point followed or integrated")
    rate_per_s: float = Field(0.0, description="follow: slew rate (>= 0); integrate: gain per second, signed")
    position: float | None = Field(None, description="hotspot: this point's place along the path min..max")
    width: float = Field(1.0, gt=0, description="hotspot: how far the rise reaches (Gaussian width)")
    idle: float = Field(0.0, description="session: the value between sessions")
    duty: float = Field(0.5, ge=0, le=1, description="session: the part of each period_s that is a session")
    taper: float = Field(0.0, ge=0, le=1, description="session: part of value lost over a session's last quarter")
    gate: str | None = Field(None, description="session: no session while this point is 0 (a remote stop)")
    gain: float = Field(1.0, gt=0, description="session: source x gain caps the value (a power limit as current)")
    reset_on_start: bool = Field(False, description="integrate: back to value when the source starts from 0")
    text: str | None = Field(None, description="constant: the text a string point serves (nameplate strings)")

    @model_validator(mode="after")
    def _source_needed(self) -> "SimBehaviour":
        if self.kind in ("follow", "integrate") and not self.source:
            raise ValueError(f"sim kind {self.kind!r} needs 'source': the point it tracks")
        if self.kind == "follow" and self.rate_per_s < 0:
            raise ValueError("a follow rate is a speed: rate_per_s >= 0")
        if self.kind == "hotspot" and (self.position is None or self.min is None or self.max is None):
            raise ValueError("sim kind 'hotspot' needs position, min and max (the path it travels)")
        return self


class ArrayDimension(Strict):
    """One dimension of a point array (``array:`` on a profile point; ``gateway.config.arrays``)."""

    name: str = Field(pattern=DIMENSION, description="the index's name in the entry's templates: {name}")
    count: int = Field(ge=1, le=MAX_ARRAY_COUNT)
    start: int = Field(0, description="the first index value")
    stride: int | None = Field(None, ge=0, description="how far the point's address advances per index (0: not "
                                                        "at all, e.g. one message per channel); default contiguous: "
                                                        "the point's size for the innermost dimension, the span of "
                                                        "the inner ones for an outer one")


def _array_schema(schema: dict[str, Any], model: type) -> None:
    """Editors see what the loader accepts: ``array:`` and an ``id`` template, where the protocol
    lets points be arrays (``array_field``). The pydantic model never sees either: the loader
    expands arrays into plain points first."""
    properties = schema.get("properties", {})
    if getattr(model, "array_field", None) is None or "id" not in properties:
        return
    pattern = properties["id"].pop("pattern", POINT_ID)
    properties["id"]["anyOf"] = [{"pattern": pattern}, {"pattern": r"\{", "description": "a template of an array entry"}]
    properties["array"] = {"type": "array", "minItems": 1, "items": ArrayDimension.model_json_schema(),
                           "description": "expand this entry into one point per index combination"}


class PointSpec(Strict):
    """One measured or commanded quantity of a device model.

    ``array_field`` names the integer field (a register address, an offset) that an ``array:``
    entry advances per element; None means this protocol's points cannot be arrays.
    """

    model_config = ConfigDict(json_schema_extra=_array_schema)
    array_field: ClassVar[str | None] = None

    id: str = Field(pattern=POINT_ID)
    name: str = ""
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    writable: Limits | None = None
    sim: SimBehaviour | None = None

    def value_kind(self) -> Literal["bool", "int", "float", "str"]:
        """What the point's values are; drivers that know their encoding narrow this."""
        return "float"

    def value_range(self) -> tuple[float, float] | None:
        """The smallest and largest value the point can take, where the encoding bounds it."""
        return None

    @classmethod
    def array_size(cls, raw: Mapping[str, Any]) -> int:
        """How far one element of an array of ``raw`` (the unvalidated entry) advances
        ``array_field`` by default; drivers whose points span several units say so."""
        return 1

    @field_validator("writable", mode="before")
    @classmethod
    def _limits_required(cls, value: object) -> object:
        if value is True or value == {}:
            raise ValueError("a writable point needs limits: writable: {min: ..., max: ...}")
        return value


class ProfileSpec(Strict):
    """A device model: identity plus its points. Drivers narrow ``points`` to their own type."""

    model: str
    vendor: str = ""
    kind: Literal["pcs", "bms", "ems", "meter", "pv", "charger", "sensor", "rtu", "other"]
    protocol: str
    description: str = ""
    points: list[PointSpec] = Field(min_length=1)

    @classmethod
    def point_model(cls) -> type[PointSpec]:
        """The point class of this profile format: the item type of ``points``."""
        return get_args(cls.model_fields["points"].annotation)[0]

    def point(self, point_id: str) -> PointSpec:
        """The point named ``point_id``; KeyError if the profile has none."""
        for spec in self.points:
            if spec.id == point_id:
                return spec
        raise KeyError(point_id)

    def reporting_deadband(self, point: PointSpec) -> float:
        """How far the device's value may move before the device reports it (engineering units):
        0 for a polled device, which is read whole every period; a subscribed one may keep its
        deadband's worth of change to itself. Commissioning checks widen their tolerance by it."""
        return 0.0
