"""The Modbus part of profiles and site files: register addressing, types, orders, connections."""

from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field, model_validator

from gateway.config.polling import PollingConnection
from gateway.config.profile import POINT_ID, PointSpec, ProfileSpec, Strict

Table = Literal["coil", "discrete", "input", "holding"]
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                   "float32", "float64", "string"]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]

REGISTERS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
             "int64": 4, "uint64": 4, "float64": 4}
BIT_TABLES = ("coil", "discrete")


class ModbusPoint(PointSpec):
    """A point at a register (or coil) address.

    ``address`` is as written in the device's documentation; the profile's ``address_base``
    says whether that documentation counts from 0 or 1. ``bit`` picks one bit of a register as a
    bool. ``invalid`` lists raw values meaning "not implemented" (default: the SunSpec sentinels
    of the type; ``[]`` for none); they give quality IV, never a number. An ``array:`` entry
    advances ``address`` per element, by default by the registers one element takes.

    ``scale_factor`` names an int16 point of the same profile whose raw value is a power-of-ten
    exponent (SunSpec's ``sunssf``): engineering = raw x 10^exponent x ``scale`` + ``offset``.
    SunSpec devices state their resolution in such registers instead of in the manual, so a
    profile can only say where the exponent is, never what it is.
    """

    array_field: ClassVar[str | None] = "address"

    table: Table = "holding"
    address: int = Field(ge=0, le=65536)
    type: DataType = "uint16"
    order: Order | None = None
    bit: int | None = Field(None, ge=0, le=15)
    length: int | None = Field(None, ge=1, le=125, description="registers of a string")
    invalid: tuple[int | float, ...] | None = None
    scale_factor: str | None = Field(None, pattern=POINT_ID,
                                     description="id of the int16 point holding this point's power-of-ten "
                                                 "exponent (SunSpec sunssf)")

    @model_validator(mode="after")
    def _shape(self) -> "ModbusPoint":
        if self.table in BIT_TABLES and (self.type != "bool" or self.bit is not None):
            raise ValueError(f"a {self.table} point is type bool without 'bit'")
        if self.table not in BIT_TABLES and self.type == "bool" and self.bit is None:
            raise ValueError("a bool in a register table needs 'bit' (0-15)")
        if self.bit is not None and self.type != "bool":
            raise ValueError("'bit' is only for type bool")
        if (self.type == "string") != (self.length is not None):
            raise ValueError("type string needs 'length' (registers), and only strings have it")
        if self.writable is not None and self.table in ("input", "discrete"):
            raise ValueError(f"{self.table} points are read-only; writable needs table holding or coil")
        if self.scale_factor is not None and self.type in ("bool", "string"):
            raise ValueError("'scale_factor' is for numbers, not type " + self.type)
        if self.sim is not None and self.sim.text is not None and self.type != "string":
            raise ValueError("sim 'text' is what a string point serves; this point is " + self.type)
        return self

    def value_kind(self) -> Literal["bool", "int", "float", "str"]:
        """bool, str, int (unscaled integer types) or float."""
        if self.type in ("bool", "string"):
            return "bool" if self.type == "bool" else "str"
        if self.type.startswith("float") or self.scale != 1 or self.offset != 0 or self.scale_factor:
            return "float"
        return "int"

    def value_range(self) -> tuple[float, float] | None:
        """The engineering range the register type can carry (None for floats and strings, and
        for a point whose resolution a scale-factor register sets at run time)."""
        bits = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}.get(self.type)
        if self.type == "bool":
            return (0.0, 1.0)
        if bits is None or self.scale_factor is not None:
            return None
        low, high = (0, 2**bits - 1) if self.type.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        ends = sorted((low * self.scale + self.offset, high * self.scale + self.offset))
        return (ends[0], ends[1])

    @classmethod
    def array_size(cls, raw: Mapping[str, Any]) -> int:
        """Registers (or bits) one element of an array of ``raw`` takes; 1 where ``raw`` is
        malformed, which validating the elements reports."""
        kind, length = raw.get("type", "uint16"), raw.get("length")
        if kind == "string":
            return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else 1
        return REGISTERS.get(kind, 1) if isinstance(kind, str) else 1

    @property
    def count(self) -> int:
        """Registers (or bits) the point occupies."""
        if self.type == "string":
            return self.length or 0
        return REGISTERS.get(self.type, 1)


class ModbusOptions(Strict):
    """Per-model request shaping."""

    address_base: Literal[0, 1] = 0
    order: Order = "ABCD"
    max_read_registers: int = Field(125, ge=1, le=125)
    max_read_bits: int = Field(2000, ge=1, le=2000)
    max_gap: int = Field(16, ge=0, le=124, description="unused registers a merged read may span")
    single_register_write: Literal[6, 16] = Field(6, description="function for one-register writes")


class ModbusProfile(ProfileSpec):
    """A Modbus device model."""

    protocol: Literal["modbus"]
    modbus: ModbusOptions = ModbusOptions()
    points: list[ModbusPoint] = Field(min_length=1)

    def pdu_address(self, point: ModbusPoint) -> int:
        """The 0-based protocol address of ``point``."""
        return point.address - self.modbus.address_base

    def order_of(self, point: ModbusPoint) -> Order:
        """The word/byte order the point uses."""
        return point.order or self.modbus.order


class ModbusConnection(PollingConnection):
    """Where a Modbus device is: TCP (``host``), RTU on a serial port (``serial``) or RTU over TCP;
    and how it is polled (``PollingConnection``)."""

    host: str | None = None
    port: int = Field(502, ge=0, le=65535, description="0: a simulator binds any free port")
    serial: str | None = None
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    framer: Literal["socket", "rtu"] | None = None
    unit: int = Field(1, ge=0, le=255)

    @model_validator(mode="after")
    def _one_link(self) -> "ModbusConnection":
        if (self.host is None) == (self.serial is None):
            raise ValueError("give either host (Modbus TCP, or RTU over TCP with framer: rtu) or serial")
        if self.serial is not None and self.framer == "socket":
            raise ValueError("a serial line carries framer rtu")
        return self

    @property
    def framing(self) -> str:
        """``socket`` (MBAP) or ``rtu``."""
        return self.framer or ("socket" if self.host else "rtu")

    @property
    def bus(self) -> tuple:
        """Devices with the same bus share one connection and one request in flight."""
        if self.serial is not None:
            return ("serial", self.serial)
        return ("tcp", self.host, self.port, self.framing)
