"""A draft Modbus profile from what discovery found. Pure: no I/O.

Every point of every known model becomes a profile point at its absolute address (holding
registers, PDU addresses, ABCD as SunSpec mandates), with its SunSpec scale factor as
``scale_factor:`` (its sunssf point drafted too, as int16) or, for a fixed exponent, as
``scale``. Sentinels are left to the driver's defaults, which are SunSpec's. Nothing is guessed:
points SunSpec marks writable get no ``writable:`` (a command needs limits an engineer
chooses), and they, the unknown models, and points the driver cannot carry are listed in the
header comment for review.

Point ids are ``m<model>_<name>``, the SunSpec name lowercased (``m103_w``, ``m103_phvpha``,
``m160_module1_dcv``); a second instance of a model on the same device is ``m<model>_2_<name>``.
"""

import re
import struct
import textwrap
from typing import Any

import yaml

from drivers.modbus.sunspec.discovery import Discovery, FoundModel
from drivers.modbus.sunspec.models import ModelLayout, SunSpecPoint, layout, model_label

TYPES = {"int16": "int16", "sunssf": "int16",
         "uint16": "uint16", "enum16": "uint16", "bitfield16": "uint16", "acc16": "uint16", "count": "uint16",
         "int32": "int32",
         "uint32": "uint32", "acc32": "uint32", "enum32": "uint32", "bitfield32": "uint32", "ipaddr": "uint32",
         "int64": "int64", "uint64": "uint64", "acc64": "uint64",
         "float32": "float32", "float64": "float64", "string": "string"}
"""SunSpec type -> Modbus profile type; ``pad`` holds nothing, ``ipv6addr`` and ``eui48`` the
driver does not carry."""

UNITS = {"C": "degC", "Pct": "%"}
"""SunSpec unit spellings that gridgate's profiles write otherwise; the rest are copied."""

PV_MODELS = frozenset((101, 102, 103, 111, 112, 113, 701, 702, 703, 704, 705))
METER_MODELS = frozenset((201, 202, 203, 204, 211, 212, 213, 214))
MODBUS_OPTIONS = {"address_base": 0, "order": "ABCD", "max_read_registers": 125}
MAX_STRING = 125  # registers: a point is read in one request


def snake(name: str) -> str:
    """A SunSpec name as part of a point id: lowercased, other characters to ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def describe(point: SunSpecPoint) -> str:
    """A point's name for people: its label, or where the label only repeats the SunSpec name,
    the first sentence of its description; then its group instance and its enum values or bits,
    which the profile schema does not carry otherwise."""
    said = point.label if point.label and point.label != point.name else point.description.split(". ")[0].rstrip(".")
    said = said or point.name
    if point.group:
        said += f" ({point.group})"
    if point.symbols:
        kind = "bits" if point.type.startswith("bitfield") else "values"
        said += f"; {kind}: " + ", ".join(f"{value} {name}" for value, name in point.symbols)
    return said


def kind_of(model_ids: list[int]) -> str:
    """``pv`` for an inverter, ``meter`` for a meter, else ``other``."""
    if PV_MODELS.intersection(model_ids):
        return "pv"
    return "meter" if METER_MODELS.intersection(model_ids) else "other"


def text(registers: tuple[int, ...], offset: int, size: int) -> str:
    """A SunSpec string: two characters a register, high byte first, NUL padded."""
    raw = struct.pack(f">{size}H", *registers[offset:offset + size])
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()


def draft(found: Discovery) -> tuple[dict[str, Any], list[str]]:
    """The draft profile and the lines for its header comment."""
    header = [f"Drafted by gridgate discover from {found.host}:{found.port} unit {found.unit}.",
              f"SunSpec marker at {found.base}; models (id, label, address of its ID register, L):"]
    points: list[dict[str, Any]] = []
    review: list[str] = []
    writable: list[str] = []
    instances: dict[int, int] = {}
    identity: dict[str, str] = {}
    for model in found.models:
        label = model_label(model.id) or "unknown: not drafted"
        header.append(f"  {model.id:>5}  {label}  at {model.address}  L {model.length}")
        if not model.known:
            continue
        instances[model.id] = instances.get(model.id, 0) + 1
        prefix = f"m{model.id}_" + (f"{instances[model.id]}_" if instances[model.id] > 1 else "")
        shape = layout(model.id, model.length, model.registers)
        review += [f"model {model.id} at {model.address}: {note}" for note in shape.notes]
        points += _model_points(model, shape, prefix, review, writable)
        if model.id == 1 and not identity:
            identity = _identity(model, shape)
    if writable:
        review.append("writable in SunSpec; give writable: {min, max} to command: " + ", ".join(writable))
    ids = [m.id for m in found.models]
    profile = {"model": identity.get("Md") or "SUNSPEC-DRAFT", "vendor": identity.get("Mn", ""),
               "kind": kind_of(ids), "protocol": "modbus",
               "description": f"SunSpec models {', '.join(str(m.id) for m in found.models if m.known)}, "
                              f"drafted by gridgate discover",
               "modbus": dict(MODBUS_OPTIONS), "points": points}
    wrapped = [part for line in review for part in textwrap.wrap(line, 96, subsequent_indent="    ")]
    return profile, header + (["Review:"] + [f"  {line}" for line in wrapped] if review else [])


def draft_text(found: Discovery) -> str:
    """The draft as a YAML file, its header a comment."""
    profile, header = draft(found)
    comment = "".join(f"# {line}\n" for line in header)
    return comment + yaml.safe_dump(profile, sort_keys=False, allow_unicode=True, width=120)


def _identity(model: FoundModel, shape: ModelLayout) -> dict[str, str]:
    """Model 1's manufacturer (Mn) and model (Md) strings, where implemented."""
    assert model.registers is not None
    return {p.name: value for p in shape.points if p.qualified in ("Mn", "Md")
            if (value := text(model.registers, p.offset, p.size))}


def _model_points(model: FoundModel, shape: ModelLayout, prefix: str, review: list[str],
                  writable: list[str]) -> list[dict[str, Any]]:
    """The profile points of one model instance; what cannot be drafted goes to ``review``, the
    ids of points SunSpec marks writable to ``writable``."""
    factors = {p.qualified for p in shape.points if TYPES.get(p.type) == "int16"}
    points = []
    for point in shape.points:
        if point.type == "pad":
            continue
        if point.type not in TYPES:
            review.append(f"{prefix}{snake(point.qualified)}: SunSpec type {point.type} is not carried; left out")
            continue
        if point.type == "string" and point.size > MAX_STRING:
            review.append(f"{prefix}{snake(point.qualified)}: a string of {point.size} registers is longer than "
                          f"one read ({MAX_STRING}); left out")
            continue
        if isinstance(point.sf, str) and point.sf not in factors:
            review.append(f"{prefix}{snake(point.qualified)}: its scale factor {point.sf} is no int16 point "
                          "of the model; left out")
            continue
        points.append(_point(model, point, prefix))
        if point.writable:
            writable.append(points[-1]["id"])
    return points


def _point(model: FoundModel, point: SunSpecPoint, prefix: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": prefix + snake(point.qualified), "name": describe(point), "table": "holding",
                             "address": model.address + point.offset, "type": TYPES[point.type]}
    if point.type == "string":
        entry["length"] = point.size
    if point.units:
        entry["unit"] = UNITS.get(point.units, point.units)
    if isinstance(point.sf, str):
        entry["scale_factor"] = prefix + snake(point.sf)
    elif isinstance(point.sf, int) and point.sf:
        entry["scale"] = 10.0 ** point.sf
    return entry
