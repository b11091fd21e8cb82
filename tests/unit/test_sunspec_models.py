"""SunSpec model layouts (offsets, repeating groups, scale factors) against pysunspec2's JSON
definitions, the draft's type mapping and point ids, and the discovery walk's guards."""

import json
import struct
from importlib import resources
from typing import Any

import pytest
import pytest_twisted
import yaml

from drivers.modbus import DRIVER
from drivers.modbus.profile import ModbusProfile
from drivers.modbus.sunspec import discovery
from drivers.modbus.sunspec.discovery import Discovery, FoundModel
from drivers.modbus.sunspec.draft import TYPES, draft, draft_text, kind_of, snake
from drivers.modbus.sunspec.models import definition, layout
from gateway.errors import DeviceException, DeviceGarbage

JSON = resources.files("sunspec2") / "models" / "json"
NOT_CARRIED = {"pad", "ipv6addr", "eui48"}


def _json_offsets(model_id: int) -> dict[str, int]:
    """Offsets by a running sum over the JSON's top-level points, written apart from models.py."""
    tree = json.loads((JSON / f"model_{model_id}.json").read_text())
    offsets, at = {}, 0
    for point in tree["group"]["points"]:
        offsets[point["name"]] = at
        at += point["size"]
    return offsets


@pytest.mark.parametrize("model_id", [1, 101, 103, 120, 121, 122, 123, 201, 203, 701])
def test_fixed_models_lay_out_as_their_json(model_id: int) -> None:
    """Every point of a model without repeating groups sits where the JSON's sizes put it."""
    expected = _json_offsets(model_id)
    tree = json.loads((JSON / f"model_{model_id}.json").read_text())
    length = sum(p["size"] for p in tree["group"]["points"]) - 2
    shape = layout(model_id, length)
    assert {p.qualified: p.offset for p in shape.points} == expected
    assert shape.notes == ()


def test_inverter_power_is_where_the_vendors_document_it() -> None:
    """After the older model 1 without its pad (L 65, as SolarEdge ships it) at 40002, model 103's W
    and W_SF are 40083/40084, as SolarEdge's SunSpec note lists them; WH is an acc32 at offset 24."""
    assert [p.name for p in layout(1, 65).points][-1] == "DA" and layout(1, 65).notes == ()
    points = {p.name: p for p in layout(103, 50).points}
    start = 40002 + 2 + 65
    assert (start + points["W"].offset, start + points["W_SF"].offset) == (40083, 40084)
    assert (points["W"].type, points["W"].sf, points["WH"].type, points["WH"].size) == ("int16", "W_SF", "acc32", 2)


def test_mppt_modules_repeat_to_fill_the_model_length() -> None:
    """Model 160's module group (legacy count 0) repeats L's worth: 2 modules at L 48, their scale
    factors the model's own (found in the enclosing scope)."""
    shape = layout(160, 48)
    points = {p.qualified: p for p in shape.points}
    assert points["module1_ID"].offset == 10 and points["module2_ID"].offset == 30
    assert points["module2_DCV"].offset == 40 and points["module2_DCV"].sf == "DCV_SF"
    assert points["module2_DCV"].group == "module2" and "module3_ID" not in points
    assert shape.notes == ()


def test_a_length_that_is_no_whole_number_of_modules_is_noted() -> None:
    """L 47 holds one module and 19 registers: one module, the rest said in the notes."""
    shape = layout(160, 47)
    assert {p.group for p in shape.points} == {"", "module1"}
    assert any("the last 19 left out" in note for note in shape.notes)


def _registers(length: int, values: dict[int, int]) -> list[int]:
    words = [0] * (2 + length)
    for offset, value in values.items():
        words[offset] = value
    return words


def test_counted_groups_use_the_counts_read_from_the_device() -> None:
    """Model 705: NCrv curves of NPt points each, both counts read from the model's registers."""
    top = _json_offsets(705)
    shape = layout(705, 200, _registers(200, {top["NCrv"]: 2, top["NPt"]: 3}))
    groups = {p.group for p in shape.points}
    assert {"Crv1", "Crv2", "Crv1_Pt1", "Crv1_Pt3", "Crv2_Pt3"} <= groups and "Crv3" not in groups
    assert "Crv1_Pt4" not in groups
    curve1 = [p for p in shape.points if p.group.startswith("Crv1")]
    curve2 = [p for p in shape.points if p.group.startswith("Crv2")]
    assert curve2[0].offset == curve1[0].offset + sum(p.size for p in curve1) and len(curve1) == len(curve2)


def test_a_count_larger_than_the_model_is_cut_at_its_length() -> None:
    """A device stating 60,000 curves in a 100-register model: the layout ends at L, said once."""
    top = _json_offsets(705)
    shape = layout(705, 100, _registers(100, {top["NCrv"]: 60000, top["NPt"]: 1}))
    assert max(p.offset + p.size for p in shape.points) <= 102
    assert any("instance(s) lie past L; left out" in note for note in shape.notes)


def test_a_count_not_read_stops_the_layout_with_a_note() -> None:
    """Without the model's registers a counted group cannot be placed: it and what follows are left out."""
    shape = layout(705, 200)
    assert not any(p.group for p in shape.points)
    assert shape.notes == ("group Crv: its count NCrv was not read; the group and anything after it left out",)


def test_a_short_length_cuts_the_points_past_it() -> None:
    """L shorter than the definition: the points past it are left out and said so."""
    shape = layout(103, 40)
    assert max(p.offset + p.size for p in shape.points) <= 42
    assert shape.notes == ("L 40 ends before the definition does: 5 point(s) from Evt2 on left out",)


def test_every_sunspec_type_is_mapped_or_named_as_not_carried() -> None:
    """Each type any shipped definition uses maps to a profile type, or is one the draft leaves out."""
    used = set()
    for path in JSON.iterdir():
        if path.name.startswith("model_") and path.name.endswith(".json"):
            _collect_types(json.loads(path.read_text())["group"], used)
    assert used - set(TYPES) == NOT_CARRIED
    assert (TYPES["acc32"], TYPES["uint32"], TYPES["enum16"], TYPES["bitfield16"], TYPES["acc16"],
            TYPES["sunssf"], TYPES["int16"], TYPES["float32"], TYPES["string"]) == \
        ("uint32", "uint32", "uint16", "uint16", "uint16", "int16", "int16", "float32", "string")


def _collect_types(group: dict[str, Any], into: set[str]) -> None:
    into.update(p["type"] for p in group.get("points", []))
    for sub in group.get("groups", []):
        _collect_types(sub, into)


def test_ids_are_the_model_and_the_sunspec_name_lowercased() -> None:
    """PhVphA of model 103 is m103_phvpha; group instances keep their index; kinds from the model ids."""
    assert [snake(n) for n in ("PhVphA", "W_SF", "module2_DCV", "Crv1_Pt3_V")] == \
        ["phvpha", "w_sf", "module2_dcv", "crv1_pt3_v"]
    assert (kind_of([1, 103, 160]), kind_of([1, 203]), kind_of([1, 802]), kind_of([1, 705])) == \
        ("pv", "meter", "other", "pv")


def _text(value: str, size: int) -> list[int]:
    return list(struct.unpack(f">{size}H", value.encode().ljust(2 * size, b"\0")))


def _found() -> Discovery:
    common = [1, 66] + _text("gridgate example", 16) + _text("GG-PV-100K", 16) + [0] * 34
    inverter = [103, 50] + [0] * 50
    mppt = [160, 48] + [0] * 48
    return Discovery("127.0.0.1", 1502, 1, 40000, (
        FoundModel(1, 40002, 66, tuple(common)), FoundModel(103, 40070, 50, tuple(inverter)),
        FoundModel(64999, 40122, 10, None), FoundModel(103, 40134, 50, tuple(inverter)),
        FoundModel(160, 40186, 48, tuple(mppt))))


def test_draft_names_points_and_scale_factors_and_passes_the_profile_checks() -> None:
    """The draft: model and vendor from model 1, int16 scale factors named by scale_factor, a second
    103 as m103_2_*, no pads, every point a holding register, and a valid Modbus profile."""
    profile, header = draft(_found())
    points = {p["id"]: p for p in profile["points"]}
    assert (profile["model"], profile["vendor"], profile["kind"]) == ("GG-PV-100K", "gridgate example", "pv")
    assert profile["modbus"] == {"address_base": 0, "order": "ABCD", "max_read_registers": 125}
    assert points["m103_w"] == {"id": "m103_w", "name": "Watts", "table": "holding", "address": 40084,
                                "type": "int16", "unit": "W", "scale_factor": "m103_w_sf"}
    assert points["m103_w_sf"]["type"] == "int16" and points["m103_2_w"]["address"] == 40134 + 14
    assert points["m1_md"]["type"] == "string" and points["m1_md"]["length"] == 16
    assert points["m103_wh"]["type"] == "uint32" and points["m160_module2_dcv"]["scale_factor"] == "m160_dcv_sf"
    assert points["m160_module2_dcv"]["name"] == "DC Voltage (module2)"
    assert not any(key.endswith("_pad") for key in points)
    assert {p["table"] for p in profile["points"]} == {"holding"}
    assert any("64999  unknown: not drafted  at 40122  L 10" in line for line in header)
    validated = ModbusProfile.model_validate(profile)
    assert DRIVER.profile_problems(validated) == []


def test_draft_text_is_a_commented_yaml_profile() -> None:
    """The header is a comment: the YAML still loads as the same profile."""
    text = draft_text(_found())
    assert text.startswith("# Drafted by gridgate discover from 127.0.0.1:1502 unit 1.\n")
    assert yaml.safe_load(text) == draft(_found())[0]


def _model_ids() -> list[int]:
    return sorted(int(p.name[6:-5]) for p in JSON.iterdir() if p.name.startswith("model_") and p.name.endswith(".json"))


def test_every_shipped_definition_drafts_a_valid_profile() -> None:
    """Each of pysunspec2's models, alone on a device (counts read as 1), drafts a profile that
    validates and passes the Modbus profile checks: ids unique, scale factors plain int16."""
    failed = {}
    for model_id in _model_ids():
        fixed = sum(p["size"] for p in definition(model_id)["group"]["points"]) - 2  # type: ignore[index]
        length = fixed + (0 if not definition(model_id)["group"].get("groups") else 200)  # type: ignore[index]
        registers = tuple([model_id, length] + [1] * length)
        profile, _ = draft(Discovery("h", 502, 1, 0, (FoundModel(model_id, 2, length, registers),)))
        problems = DRIVER.profile_problems(ModbusProfile.model_validate(profile))
        if problems:
            failed[model_id] = problems
    assert failed == {} and len(_model_ids()) > 100


class ScriptedReader:
    """Serves a register map (address -> word); an address it lacks answers exception 02."""

    who = "127.0.0.1:1502 unit 1"

    def __init__(self, words: dict[int, int]) -> None:
        self.words = words

    async def read(self, address: int, count: int) -> list[int]:
        if any(a not in self.words for a in range(address, address + count)):
            raise DeviceException(self.who, 2, f"exception 2 reading {count} register(s) at {address}")
        return [self.words[a] for a in range(address, address + count)]


def _map(base: int, *models: tuple[int, int]) -> dict[int, int]:
    words = {base: 0x5375, base + 1: 0x6E53}
    at = base + 2
    for model_id, length in models:
        words.update({at: model_id, at + 1: length, **{a: 0 for a in range(at + 2, at + 2 + length)}})
        at += 2 + length
    return words


@pytest_twisted.ensureDeferred
async def test_walk_finds_the_marker_at_the_first_base_that_has_it() -> None:
    """40000 first, then 50000, then 0; exception replies there mean 'not here'."""
    reader = ScriptedReader({**_map(0, (1, 66), (0xFFFF, 0)), 40000: 1, 40001: 2})
    assert await discovery._find_marker(reader) == 0  # type: ignore[arg-type]
    models = await discovery._walk(reader, 0)  # type: ignore[arg-type]
    assert [(m.id, m.address, m.length, m.known) for m in models] == [(1, 2, 66, True)]


@pytest_twisted.ensureDeferred
async def test_walk_refuses_a_chain_running_past_the_address_space() -> None:
    """A model whose L reaches past 65535 ends the walk with an error naming it and its address."""
    reader = ScriptedReader({**_map(50000, (64100, 20000))})
    with pytest.raises(DeviceGarbage, match="model 64100 at 50002 with L 20000 runs past register 65535"):
        await discovery._walk(reader, 50000)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_walk_refuses_more_than_the_model_limit() -> None:
    """201 empty models (a device repeating a header forever looks like this) end the walk."""
    reader = ScriptedReader(_map(0, *[(64200, 0)] * 201, (0xFFFF, 0)))
    with pytest.raises(DeviceGarbage, match="more than 200 models"):
        await discovery._walk(reader, 0)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_walk_names_the_address_of_an_exception_inside_the_chain() -> None:
    """A chain that stops without the end model fails on the address it could not read."""
    reader = ScriptedReader(_map(40000, (1, 66)))
    with pytest.raises(DeviceException, match="at 40070"):
        await discovery._walk(reader, 40000)  # type: ignore[arg-type]


def test_definitions_are_found_by_model_id() -> None:
    """Known ids load (vendor models too), unknown ones are None (listed as unknown, never guessed)."""
    assert definition(103)["group"]["name"] == "inverter_three_phase"
    assert definition(64001)["group"]["label"] == "Veris Status and Configuration"
    assert definition(64999) is None
