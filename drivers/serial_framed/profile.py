"""The framed-serial part of profiles and site files: the frame format, the messages a device
answers or streams, each point's field in a message's payload, and where the device is.

A profile says everything about the protocol, so a device nobody wrote a driver for is a YAML
file: ``framing`` (start octets, length field, checksum, encoding), ``messages`` (a request to
send, or none for a device that streams; the octets that tell its reply apart) and points with
``message``, ``at`` (octet offset in the payload), ``type`` and their meaning.
"""

import re
from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field, field_validator, model_validator

from drivers.serial_framed.checksums import ALGORITHMS
from drivers.serial_framed.fbg import Grating, PeakTable
from drivers.serial_framed.fields import FLOATS, INTEGERS, FieldMeaning, FieldSpec, MessageLayout
from drivers.serial_framed.framing import ChecksumField, FrameFormat, LengthField
from gateway.config.polling import PollingConnection
from gateway.config.profile import POINT_ID, PointSpec, ProfileSpec, Strict
from gateway.config.units import Duration

FieldType = Literal["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64", "bcd", "ascii", "decimal",
                    "fbg"]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Encoding = Literal["binary", "ascii_hex", "ascii_line", "length_prefixed"]
_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2}\s*)*$")


def octets(text: str) -> bytes:
    """Hex octets as written in a profile ("AA 55", "aa55"); ValueError otherwise."""
    if not _HEX.match(text.strip()):
        raise ValueError(f"{text!r} is not hex octets like 'AA 55'")
    return bytes.fromhex(text)


def text_octets(text: str) -> bytes:
    r"""ASCII text with the escapes a profile needs (\r, \n, \t, \xHH)."""
    return text.encode("ascii").decode("unicode_escape").encode("latin-1")


class LengthSpec(Strict):
    """The frame's length field: where, how wide, and what it counts (total = value + adjust)."""

    offset: int = Field(ge=0)
    size: int = Field(description="octets (binary) or ASCII digits (length_prefixed)")
    byteorder: Literal["big", "little"] = "big"
    adjust: int = 0


class ChecksumSpec(Strict):
    """The frame's checksum: algorithm, what it covers, octet order."""

    algorithm: str
    start: int = Field(0, ge=0, description="first octet covered")
    end: int = Field(0, ge=0, description="octets before the checksum left uncovered")
    byteorder: Literal["big", "little"] = "big"

    @field_validator("algorithm")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in ALGORITHMS:
            raise ValueError(f"unknown checksum {name!r}; one of {', '.join(sorted(ALGORITHMS))}")
        return name


class FramingSpec(Strict):
    """How frames look on the line."""

    encoding: Encoding = "binary"
    start: str = Field("", description="hex octets (binary), else text")
    end: str = Field("", description="hex octets (binary), else text with escapes")
    length: LengthSpec | None = None
    fixed_length: int | None = Field(None, ge=1)
    checksum: ChecksumSpec | None = None
    checksum_separator: str = ""
    max_length: int = Field(4096, ge=4, le=1 << 20)

    def frame_format(self) -> FrameFormat:
        """The scanner's and builder's description."""
        convert = octets if self.encoding == "binary" else text_octets
        return FrameFormat(
            encoding=self.encoding, start=convert(self.start), end=convert(self.end),
            length=LengthField(**self.length.model_dump()) if self.length else None,
            fixed_length=self.fixed_length,
            checksum=ChecksumField(**self.checksum.model_dump()) if self.checksum else None,
            max_length=self.max_length, checksum_separator=text_octets(self.checksum_separator))


class MatchSpec(Strict):
    """The octets at ``at`` in a payload that make it this message's (hex, may hold ``{address:02X}``),
    and, for replies that start alike (YD/T 1363.3: every reply is VER ADR CID1 RTN), the
    payload's exact ``length``."""

    at: int = Field(0, ge=0)
    value: str = ""
    length: int | None = Field(None, ge=1, description="octets of the payload")


class PeakTableSpec(Strict):
    """Where an FBG interrogator's reply holds its peaks (``fbg.PeakTable``)."""

    counts_at: int = Field(ge=0)
    channels: int = Field(ge=1, le=64)
    wavelengths_at: int = Field(ge=0)
    scale: float = Field(1.0, gt=0, description="nm per unit")
    count_type: Literal["u16", "u32"] = "u16"
    wavelength_type: Literal["u32", "i32", "f32", "f64"] = "i32"
    byteorder: Literal["big", "little"] = "little"


class MessageSpec(Strict):
    """One message of the device: a request it answers (``request``: a payload, hex for binary
    framing, text otherwise, may hold ``{address}``), or one it streams by itself (no request).
    ``peaks``: the message carries an FBG peak table, read by the ``fbg`` points."""

    name: str = Field(pattern=POINT_ID)
    request: str | None = None
    match: MatchSpec | None = None
    every: int = Field(1, ge=1, description="read every Nth poll")
    peaks: PeakTableSpec | None = None


class GratingSpec(Strict):
    """An FBG grating: its channel, the window its peak must fall in, its calibration."""

    channel: int = Field(ge=1, le=64)
    window: tuple[float, float]
    base_nm: float = Field(gt=0, description="wavelength at the calibration's zero shift")
    coefficients: tuple[float, ...] = Field(min_length=2, max_length=3, description="c0, c1[, c2]: T = c0 + c1·Δλ + c2·Δλ²")
    reference: str | None = Field(None, description="a grating whose shift is subtracted (strain, drift)")

    @model_validator(mode="after")
    def _window(self) -> "GratingSpec":
        if not self.window[0] < self.window[1]:
            raise ValueError(f"window {list(self.window)} is not [low, high]")
        return self


class FramedPoint(PointSpec):
    """A point: a field of one message's payload."""

    array_field: ClassVar[str | None] = "at"

    message: str
    at: int | None = Field(None, ge=0, description="octet offset in the message's payload (not for fbg)")
    type: FieldType = "u16"
    order: Order | None = None
    length: int | None = Field(None, ge=1, le=256, description="octets of a bcd or ascii field")
    bit: int | None = Field(None, ge=0, le=63)
    enum: dict[int, str] | None = None
    polynomial: tuple[float, ...] | None = Field(None, min_length=1, max_length=6)
    invalid: tuple[float, ...] = ()
    grating: GratingSpec | None = None

    @model_validator(mode="after")
    def _shape(self) -> "FramedPoint":
        if (self.type == "fbg") != (self.grating is not None):
            raise ValueError("type fbg needs 'grating', and only fbg points have it")
        if (self.type == "fbg") == (self.at is not None):
            raise ValueError("a field needs 'at' (its octet offset); an fbg point has none")
        if (self.type in ("bcd", "ascii", "decimal")) != (self.length is not None):
            raise ValueError("types bcd, ascii and decimal need 'length' (octets), and only they have it")
        if self.bit is not None and not self.type.startswith("u"):
            raise ValueError("'bit' picks a bit of an unsigned integer (u8..u64)")
        if self.bit is not None and self.bit >= 8 * INTEGERS[self.type][0]:
            raise ValueError(f"bit {self.bit} is beyond a {self.type}")
        if self.polynomial is not None and (self.scale != 1 or self.offset != 0):
            raise ValueError("give either polynomial or scale/offset")
        if self.writable is not None:
            raise ValueError("framed-serial points are read-only")
        return self

    @classmethod
    def array_size(cls, raw: Mapping[str, Any]) -> int:
        """Octets one element of an array of ``raw`` takes (1 where ``raw`` is malformed, which
        validating the elements reports)."""
        kind, length = raw.get("type", "u16"), raw.get("length")
        if kind in ("bcd", "ascii", "decimal"):
            return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else 1
        return (FLOATS.get(kind) or INTEGERS.get(kind, (1, False))[0]) if isinstance(kind, str) else 1

    def value_kind(self) -> Literal["bool", "int", "float", "str"]:
        """bool for a bit, str for ASCII and enums, int for unscaled integers, else float."""
        if self.bit is not None:
            return "bool"
        if self.type == "ascii" or self.enum is not None:
            return "str"
        if self.type in FLOATS or self.type in ("fbg", "decimal") or self.polynomial is not None \
                or self.scale != 1 or self.offset != 0:
            return "float"
        return "int"

    def field(self, default_order: str) -> FieldSpec:
        """Where and how the fields module reads it."""
        meaning = FieldMeaning(point=self.id, type=self.type, bit=self.bit, enum=self.enum, scale=self.scale,
                               offset=self.offset, polynomial=self.polynomial, invalid=self.invalid,
                               length=self.length)
        assert self.at is not None
        return FieldSpec(meaning, self.at, self.order or default_order)

    def as_grating(self) -> Grating:
        """The fbg module's grating of an fbg point."""
        assert self.grating is not None
        g = self.grating
        return Grating(self.id, g.channel, g.window, g.base_nm, g.coefficients, g.reference)


class FramedProfile(ProfileSpec):
    """A framed-serial device model."""

    framing: FramingSpec
    order: Order = Field("ABCD", description="octet order of multi-octet fields unless a point says")
    messages: list[MessageSpec] = Field(min_length=1)
    points: list[FramedPoint] = Field(min_length=1)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _consistent(self) -> "FramedProfile":
        names = [m.name for m in self.messages]
        if len(set(names)) != len(names):
            raise ValueError("two messages have the same name")
        unknown = sorted({p.message for p in self.points} - set(names))
        if unknown:
            raise ValueError(f"points name unknown messages {unknown}; messages are {names}")
        self.framing.frame_format()  # raises for octets that are not hex
        self._check_gratings()
        self._check_lengths()
        return self

    def _check_lengths(self) -> None:
        """A message whose replies have an exact length holds its fields inside it."""
        for message in self.messages:
            length = message.match.length if message.match is not None else None
            if length is None:
                continue
            for point in self.points:
                if point.message == message.name and point.at is not None \
                        and point.at + point.field(self.order).size > length:
                    raise ValueError(f"{point.id}: its field ends beyond the {length} octets of message "
                                     f"{message.name}'s reply (match.length)")

    def _check_gratings(self) -> None:
        with_peaks = {m.name for m in self.messages if m.peaks is not None}
        fbg = {p.id: p for p in self.points if p.grating is not None}
        for point in fbg.values():
            assert point.grating is not None
            if point.message not in with_peaks:
                raise ValueError(f"{point.id}: fbg points read a message with 'peaks'; {point.message} has none")
            reference = point.grating.reference
            if reference is not None and (reference not in fbg or fbg[reference].message != point.message):
                raise ValueError(f"{point.id}: reference {reference!r} is no fbg point of message {point.message}")

    def layout(self, message: str) -> MessageLayout:
        """The compiled field layout of one message (its fbg points aside)."""
        return MessageLayout([p.field(self.order) for p in self.points if p.message == message and p.type != "fbg"])

    def gratings(self, message: str) -> tuple[PeakTable, list[Grating]] | None:
        """The peak table of a message and the gratings read from it; None for a message without peaks."""
        spec = next(m for m in self.messages if m.name == message)
        if spec.peaks is None:
            return None
        return PeakTable(**spec.peaks.model_dump()), [p.as_grating() for p in self.points
                                                      if p.message == message and p.type == "fbg"]


class FramedConnection(PollingConnection):
    """Where the device is (a serial port, or a TCP serial server) and its address on a shared bus."""

    serial: str | None = None
    baudrate: int = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    host: str | None = None
    port: int = Field(4001, ge=0, le=65535)
    address: int = Field(1, ge=0, le=255, description="substituted for {address} in requests and matches")
    inter_byte_timeout_s: Duration = Field(0.1, gt=0, description="silence inside a frame that ends it as truncated")

    @model_validator(mode="after")
    def _one_link(self) -> "FramedConnection":
        if (self.host is None) == (self.serial is None):
            raise ValueError("give either serial (a serial port) or host (a TCP serial server)")
        return self

    @property
    def bus(self) -> tuple:
        """Devices on one bus share one connection and one transaction in flight."""
        return ("serial", self.serial) if self.serial is not None else ("tcp", self.host, self.port)
